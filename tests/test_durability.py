"""What survives: durability modes, flush, exit without close, SIGKILL, threads, processes, fork.

Child processes run the same interpreter; they print the trace ids they were acknowledged, and
the parent checks every one of them is in the store afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import flightlog
import pytest
from conftest import count_records
from flightlog import Span, Trace
from flightlog.store import Durability

CHILD_TIMEOUT = 120  # seconds; only a safety net against a hung child, never a measurement


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


def assert_all_present(path: Path, ids: list[str], agent_name: str | None = None) -> None:
    with flightlog.open(path, readonly=True) as reader:
        for trace_id in ids:
            trace = reader.get(trace_id)
            if agent_name is not None:
                assert trace.agent_name == agent_name


def sample(i: int) -> Trace:
    """A trace of a few hundred bytes, so that records are compressed on disk."""
    return Trace(
        agent_name="bench",
        input=f"question {i} " * 20,
        output=f"answer {i} " * 40,
        spans=[Span(name="llm", kind="LLM"), Span(name="tool", kind="TOOL")],
        metadata={"i": i},
    )


# --- modes and flush -----------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["group", "sync", "none"])
def test_every_durability_mode_reads_back_after_reopen(
    store_path: Path, durability: Durability
) -> None:
    with flightlog.open(store_path, durability=durability) as store:
        assert store.durability == durability
        ids = [store.log(sample(i)) for i in range(50)]
        ids += store.log_many(sample(i) for i in range(50, 100))
        store.flush()
        assert [store.get(t).metadata["i"] for t in ids] == list(range(100))
    assert count_records(store_path) == 100
    with flightlog.open(store_path) as reopened:
        assert [reopened.get(t).metadata["i"] for t in ids] == list(range(100))


def test_sync_log_is_readable_without_flush(tmp_path: Path) -> None:
    with flightlog.open(tmp_path / "sync", durability="sync") as store:
        for i in range(20):
            trace_id = store.log(agent_name="sync", input=str(i))
            assert store.get(trace_id).input == str(i)


def test_flush_with_zero_timeout_never_loses_the_backlog(store: flightlog.Store) -> None:
    ids = store.log_many(sample(i) for i in range(3000))
    ids += [store.log(sample(i)) for i in range(3000, 3500)]
    try:
        store.flush(timeout=0)
    except TimeoutError as err:
        assert "flush" in str(err)
    store.flush()
    assert all(store.get(t).agent_name == "bench" for t in ids)


@pytest.mark.parametrize("timeout", [-1, -0.001, float("nan")])
def test_flush_with_an_invalid_timeout_raises_value_error(
    store: flightlog.Store, timeout: float
) -> None:
    with pytest.raises(ValueError, match="timeout"):
        store.flush(timeout=timeout)
    store.flush(timeout=5)  # a valid timeout still works afterwards


def test_close_flushes_everything_logged(store_path: Path) -> None:
    store = flightlog.open(store_path)
    ids = [store.log(sample(i)) for i in range(2000)]
    store.close()
    assert count_records(store_path) == 2000
    assert_all_present(store_path, ids, "bench")


# --- process exit and crash ----------------------------------------------------------------------

EXIT_WITHOUT_CLOSE = """
import sys
import flightlog

store = flightlog.open(sys.argv[1])
for i in range(1000):
    print(store.log(agent_name="child", input=str(i)))
sys.stdout.flush()
how = sys.argv[2]
if how == "exception":
    raise RuntimeError("the agent crashed")
if how == "sys.exit":
    sys.exit(3)
# "return": fall off the end of the script, without close() or flush()
"""


@pytest.mark.parametrize(("how", "exit_code"), [("return", 0), ("exception", 1), ("sys.exit", 3)])
def test_traces_logged_before_exit_without_close_are_kept(
    store_path: Path, how: str, exit_code: int
) -> None:
    child = run_child(EXIT_WITHOUT_CLOSE, str(store_path), how)
    assert child.returncode == exit_code, child.stderr
    ids = child.stdout.split()
    assert len(ids) == 1000
    assert_all_present(store_path, ids, "child")
    assert count_records(store_path) == 1000


KILLED_AFTER_FLUSH = """
import sys
import flightlog

store = flightlog.open(sys.argv[1], durability=sys.argv[2])
ids = [store.log(agent_name="acked", input=str(i)) for i in range(500)]
store.flush()
sys.stdout.write("\\n".join(ids) + "\\nacked\\n")
sys.stdout.flush()
i = 0
while True:  # keep logging, never acknowledged, until the parent kills us
    store.log(agent_name="unacked", input=str(i) * 50)
    i += 1
"""


@pytest.mark.parametrize("durability", ["group", "none"])
def test_everything_acknowledged_by_flush_survives_sigkill(
    store_path: Path, durability: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_AFTER_FLUSH, str(store_path), durability],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "acked":
                break
            acked.append(line.strip())
        else:
            child.wait(timeout=CHILD_TIMEOUT)
            assert child.stderr is not None
            pytest.fail(f"child exited before flushing: {child.stderr.read()}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CHILD_TIMEOUT)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acked) == 500
    assert_all_present(store_path, acked, "acked")
    assert count_records(store_path) >= 500
    # The store stays writable after a writer died mid-transaction.
    with flightlog.open(store_path) as store:
        after = store.log(agent_name="after the crash")
        store.flush()
        assert store.get(after).agent_name == "after the crash"


# --- threads -------------------------------------------------------------------------------------


def test_eight_threads_logging_at_once_all_land(store: flightlog.Store, store_path: Path) -> None:
    def worker(n: int) -> list[str]:
        return [store.log(agent_name=f"thread-{n}", input=str(i)) for i in range(300)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        per_thread = list(pool.map(worker, range(8)))
    store.flush()
    for n, ids in enumerate(per_thread):
        assert [store.get(t).input for t in ids] == [str(i) for i in range(300)]
        assert {store.get(t).agent_name for t in ids} == {f"thread-{n}"}
    all_ids = [t for ids in per_thread for t in ids]
    assert len(set(all_ids)) == 2400
    store.close()
    assert count_records(store_path) == 2400


def test_sync_logging_from_four_threads_is_readable_on_return(tmp_path: Path) -> None:
    path = tmp_path / "sync"
    store = flightlog.open(path, durability="sync")
    missing: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> list[str]:
        ids = []
        for i in range(100):
            trace_id = store.log(agent_name=f"sync-{n}", input=str(i))
            try:
                store.get(trace_id)
            except flightlog.TraceNotFound:
                with lock:
                    missing.append(trace_id)
            ids.append(trace_id)
        return ids

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = [t for chunk in pool.map(worker, range(4)) for t in chunk]
    assert missing == []
    assert len(set(ids)) == 400
    store.close()
    assert count_records(path) == 400


# --- several processes ---------------------------------------------------------------------------

CONCURRENT_WRITER = """
import sys
import flightlog

store = flightlog.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
ids = []
for i in range(300):
    ids.append(store.log(agent_name="other process", input=str(i)))
    if i % 25 == 0:
        store.flush()
store.close()
print("\\n".join(ids), flush=True)
"""


def test_two_processes_log_into_one_store_at_once(store: flightlog.Store, store_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CONCURRENT_WRITER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    mine = []
    for i in range(300):
        mine.append(store.log(agent_name="this process", input=str(i)))
        if i % 25 == 0:
            store.flush()
    out, err = child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == 0, err
    theirs = out.split()
    assert len(theirs) == 300
    store.flush()
    assert [store.get(t).input for t in mine] == [str(i) for i in range(300)]
    assert [store.get(t).input for t in theirs] == [str(i) for i in range(300)]
    assert {store.get(t).agent_name for t in theirs} == {"other process"}
    store.close()
    assert count_records(store_path) == 600


def test_forked_children_log_into_the_parents_store(
    store: flightlog.Store, store_path: Path
) -> None:
    parent_ids = [store.log(agent_name="parent", input="before any fork")]
    children: list[tuple[int, int]] = []
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with threads (the writer thread).
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        for round_ in range(10):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: never return into pytest
                code = 1
                try:
                    os.close(read_end)
                    ids = [store.log(agent_name="child", input=f"{round_}-{i}") for i in range(50)]
                    store.flush()
                    os.write(write_end, "\n".join(ids).encode())
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.close(write_end)
            children.append((pid, read_end))
            parent_ids += [store.log(agent_name="parent", input=f"{round_}-{i}") for i in range(20)]

    child_ids: list[str] = []
    for pid, read_end in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with os.fdopen(read_end, "rb") as pipe:
            child_ids += pipe.read().decode().split()
    assert len(child_ids) == 500
    assert len(set(child_ids) | set(parent_ids)) == 500 + 201

    parent_ids.append(store.log(agent_name="parent", input="after all forks"))
    store.flush()
    assert {store.get(t).agent_name for t in child_ids} == {"child"}
    assert {store.get(t).agent_name for t in parent_ids} == {"parent"}
    store.close()
    assert count_records(store_path) == 500 + 202

"""One store, many openers (RELIABILITY.md tests 3 to 5): several writer processes at once,
forked children of a process whose writer is busy, and one path opened under many names.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import flightlog
import lmdb
import pytest
from faults import assert_check_clean, run_child, scale, start_child

# --- several writer processes ---------------------------------------------------------------------

WRITER = """
import time
import flightlog

path, me, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# A small map: the four processes grow it under each other (MDB_MAP_RESIZED is adopted).
store = flightlog.open(path, map_size=256 << 10)
report("ready")
while not os.path.exists(go):
    time.sleep(0.001)
ids = []
for i in range(count):
    trace = {"agent_name": f"proc-{me}", "input": f"{me}/{i} " * 30, "run_id": f"run-{i % 10}"}
    if i % 3:
        ids.append(store.log(trace))
    else:
        ids += store.log_many([trace])
    if i % 10 == 0:  # every process adds its span and tool call to the same ten traces
        store.log(
            trace_id=flightlog.trace_id_for(f"shared-{i // 10 % 10}"),
            agent_name="shared",
            spans=[{"span_id": f"{me + 1:016x}", "name": f"from {me} at {i}"}],
            tool_calls=[{"tool_name": f"tool-{me}"}],
        )
store.flush()
for trace_id in ids:
    report("id " + trace_id)
store.close()
"""


def test_four_processes_log_into_one_store_and_its_indexes_agree(tmp_path: Path) -> None:
    """RELIABILITY.md test 3: 4 processes x N traces at once, every one stored and indexed,
    and updates of the same traces from all four merged."""
    path = tmp_path / "store"
    count = scale(200, 3000)
    go = tmp_path / "go"
    children = [start_child(WRITER, str(path), str(me), str(count), str(go)) for me in range(4)]
    for child in children:
        assert child.wait_for("ready"), child.stderr()
    go.touch()
    ids: list[list[str]] = []
    for child in children:
        assert child.finish() == 0, child.stderr()
        ids.append([line[3:] for line in child.lines if line.startswith("id ")])
    assert [len(i) for i in ids] == [count] * 4
    with flightlog.open(path, readonly=True) as store:
        for me, mine in enumerate(ids):
            assert store.count(agent_name=f"proc-{me}") == count
            assert {store.get(t).agent_name for t in mine} == {f"proc-{me}"}
        assert store.count() == 4 * count + 10
        assert store.count(run_id="run-3") == 4 * (count // 10)
        for k in range(10):
            shared = store.get(flightlog.trace_id_for(f"shared-{k}"))
            assert sorted(str(s.span_id) for s in shared.spans) == [
                f"{me + 1:016x}" for me in range(4)
            ]
            per_tool = sorted(c.tool_name for c in shared.tool_calls)
            assert per_tool == sorted(f"tool-{me}" for me in range(4) for _ in range(count // 100))
        stats = store.stats(group_by="agent_name")
        assert {a: s.count for a, s in stats.groups.items()} == {
            **{f"proc-{me}": count for me in range(4)},
            "shared": 10,
        }
    assert_check_clean(path)


# --- fork ----------------------------------------------------------------------------------------

FORKING = """
import threading, time, traceback, warnings
import flightlog

# Python >= 3.12 warns about fork() in a process with threads: that is the point here.
warnings.filterwarnings("ignore", category=DeprecationWarning)
path, forks = sys.argv[1], int(sys.argv[2])
store = flightlog.open(path)
stop = threading.Event()
parent_ids, parent_errors = [], []

def keep_logging():  # the parent's writer is busy at every fork
    try:
        for i in range(100_000):  # bounded, whatever happens to the children
            if stop.is_set():
                break
            parent_ids.append(store.log(agent_name="parent", input=str(i)))
            if i % 100 == 99:
                time.sleep(0.001)
    except BaseException as err:
        parent_errors.append(repr(err))

logger = threading.Thread(target=keep_logging)
logger.start()
for wave in range(0, forks, 10):
    pids = []
    for k in range(wave, min(wave + 10, forks)):
        pid = os.fork()
        if pid == 0:
            # The child uses the inherited handle; flightlog reopens the store under it.
            try:
                ids = [store.log(agent_name="child", input=f"{k}-{i}") for i in range(5)]
                for trace_id in ids:
                    report("child " + trace_id)
                if k % 2:
                    sys.exit(0)  # no flush: the at-exit flush must write them
                store.flush()
                os._exit(0)
            except SystemExit:
                raise
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        pids.append(pid)
    for pid in pids:
        report(f"exit {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}")
stop.set()
logger.join()
store.flush()
for trace_id in parent_ids:
    report("parent " + trace_id)
for error in parent_errors:
    report("error " + error)
store.close()
"""


def test_forked_children_reopen_on_their_own_while_the_parent_keeps_logging(
    tmp_path: Path,
) -> None:
    """RELIABILITY.md test 4: fork while the writer runs; each child logs through the
    inherited handle (half flush, half rely on the at-exit flush); the parent never
    notices."""
    path = tmp_path / "store"
    forks = scale(100, 200)
    child = run_child(FORKING, str(path), str(forks))
    assert child.process.returncode == 0, child.stderr()
    lines = child.lines
    assert [line for line in lines if line.startswith("exit ")] == ["exit 0"] * forks
    assert [line for line in lines if line.startswith("error ")] == []
    child_ids = [line.split()[1] for line in lines if line.startswith("child ")]
    parent_ids = [line.split()[1] for line in lines if line.startswith("parent ")]
    assert len(child_ids) == 5 * forks and parent_ids
    assert len(set(child_ids) | set(parent_ids)) == len(child_ids) + len(parent_ids)
    with flightlog.open(path, readonly=True) as store:
        assert store.count(agent_name="child") == len(child_ids)
        assert store.count(agent_name="parent") == len(parent_ids)
        assert {store.get(t).agent_name for t in child_ids} == {"child"}
    assert_check_clean(path)


# --- one path, many names ------------------------------------------------------------------------


def mappings_of(data_file: Path) -> int:
    """How many times this process has ``data_file`` mapped: once per LMDB environment."""
    target = str(data_file.resolve())
    with open("/proc/self/maps") as maps:
        return sum(line.rstrip("\n").endswith(" " + target) for line in maps)


def spellings(tmp_path: Path, store: Path) -> list[Path]:
    (tmp_path / "link").symlink_to(store)
    (tmp_path / "link-to-link").symlink_to(tmp_path / "link")
    return [
        store,
        Path(os.path.relpath(store)),
        tmp_path / "link",
        tmp_path / "link-to-link",
        store / ".." / store.name,
        Path(str(store) + "/"),
    ]


def test_one_store_is_one_environment_under_every_spelling_of_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELIABILITY.md test 5: LMDB must never open one file twice in a process (closing
    either would drop the other's locks); every name of a store shares one environment."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "store"
    data = path / "data.mdb"
    handles = []
    for name in spellings(tmp_path, path):
        handles.append(flightlog.open(name))
        assert mappings_of(data) == 1, name
    ids = [h.log(agent_name="spelling", input=str(h.path)) for h in handles]
    handles[-1].flush()
    for handle in handles:
        assert [handle.get(t).agent_name for t in ids] == ["spelling"] * len(ids)
    for handle in handles[:-1]:
        handle.close()
    assert mappings_of(data) == 1
    last = handles[-1].log(agent_name="spelling")
    handles[-1].close()
    assert mappings_of(data) == 0, "the last close closes the environment"
    with flightlog.open(tmp_path / "link", readonly=True) as reader:
        assert reader.count(agent_name="spelling") == len(ids) + 1
        assert reader.get(last).agent_name == "spelling"
        with pytest.raises(flightlog.StorageError, match="already open read-only"):
            flightlog.open(path)


def test_the_mapping_count_sees_a_second_environment(tmp_path: Path) -> None:
    """The measure above can fail: a second environment on the file is a second mapping."""
    path = tmp_path / "store"
    with flightlog.open(path) as store:
        store.log(agent_name="a")
        store.flush()
        other = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
        try:
            assert mappings_of(path / "data.mdb") == 2
        finally:
            other.close()


def test_a_bind_mount_of_a_store_is_the_same_environment(tmp_path: Path) -> None:
    """A bind mount is another path to the same directory: still one environment."""
    path = tmp_path / "store"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with flightlog.open(path) as store:
        store.log(agent_name="a")
        store.flush()
        bound = subprocess.run(
            ["mount", "--bind", str(path), str(mirror)], capture_output=True, check=False
        )
        if bound.returncode != 0:
            pytest.skip(f"cannot bind-mount here (needs root): {bound.stderr!r}")
        try:
            with flightlog.open(mirror) as twin:
                assert mappings_of(path / "data.mdb") + mappings_of(mirror / "data.mdb") == 1
                assert twin.count(agent_name="a") == 1
        finally:
            subprocess.run(["umount", "-l", str(mirror)], check=True)

"""Threads and asyncio (RELIABILITY.md test 16): many threads and tasks log, trace, decide,
read and flush at once in one process; nothing hangs, everything arrives, and every write to
``data.mdb`` comes from the store's writer thread.

The workload runs in a child process with a watchdog, so a deadlock fails the test with every
thread's stack instead of hanging the suite. Under ``strace`` (when it is installed) the
child's writes and syncs to ``data.mdb`` are attributed to threads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import flightlog
import pytest
from faults import assert_check_clean, run_child, scale

WORKLOAD = r"""
import asyncio, faulthandler, json, threading
import flightlog

path, threads, rounds, tasks = sys.argv[1], *map(int, sys.argv[2:5])
faulthandler.dump_traceback_later(240, exit=True)  # a hang prints every stack, then fails
store = flightlog.open(path, durability="group")
flightlog.set_default_store(store)
done = threading.Event()
errors = []

def logger(n):
    mine = {"n": n, "traces": [], "decisions": []}
    try:
        for r in range(rounds):
            run = f"thread-{n}-{r}"
            if r % 5 == 1:
                mine["traces"] += store.log_many(
                    [{"agent_name": f"thread-{n}", "run_id": run, "input": str(i)}
                     for i in range(3)])
            elif r % 7 == 2:
                with store.trace(f"thread-{n}", run_id=run) as t:
                    with t.span("outer"):
                        with t.span("inner"):
                            pass
                mine["traces"].append(t.trace_id)
            else:
                mine["traces"].append(store.log(agent_name=f"thread-{n}", run_id=run))
            if r % 11 == 3:
                store.flush()
            if r % 13 == 4:
                with store.open_decision(f"thread-{n}", "stress", "autonomous") as d:
                    d.read(product="p", purpose=run)
                mine["decisions"].append(d.decision_id)
    except Exception as e:
        errors.append(repr(e))
    report("thread " + json.dumps(mine))

def reader():
    try:
        while not done.is_set():
            store.count()
            store.query(limit=20)
            store.stats(group_by="agent_name")
    except Exception as e:
        errors.append(repr(e))

@flightlog.traced(agent_name="async-traced", store=store)
async def answer(n):
    await asyncio.sleep(0)
    return n

async def task(n):
    ids = []
    for r in range(max(1, rounds // 4)):
        with store.trace("async", run_id=f"task-{n}-{r}") as t:
            with t.span("first"):
                await asyncio.sleep(0)  # other tasks' spans interleave here
            with t.span("second"):
                await asyncio.sleep(0)
        ids.append(t.trace_id)
        ids.append(await asyncio.to_thread(store.log, agent_name="async", run_id=f"task-{n}-{r}"))
        await answer(n)
        if r % 3 == 0:
            await asyncio.to_thread(store.flush)
    return ids

async def main():
    return await asyncio.gather(*(task(n) for n in range(tasks)))

workers = [threading.Thread(target=logger, args=(n,)) for n in range(threads)]
readers = [threading.Thread(target=reader) for _ in range(2)]
for t in workers + readers:
    t.start()
async_ids = [i for ids in asyncio.run(main()) for i in ids]
for t in workers:
    t.join()
done.set()
for t in readers:
    t.join()
report("async " + json.dumps(async_ids))
store.flush()
tasks_now = {}
for tid in os.listdir("/proc/self/task"):
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            tasks_now[tid] = f.read().strip()
    except FileNotFoundError:
        pass  # a thread that ended meanwhile
report("tasks " + json.dumps(tasks_now))
store.close()
report("errors " + json.dumps(errors))
report("done")
"""


def run_workload(path: Path, threads: int, rounds: int, tasks: int, wrapper: list[str]) -> Any:
    """Runs the workload in a child; what it reported, by kind."""
    with flightlog.open(path):
        pass  # created here, so that the child writes only through its writer thread
    child = run_child(WORKLOAD, str(path), str(threads), str(rounds), str(tasks), wrapper=wrapper)
    assert child.process.returncode == 0, child.stderr()
    assert "done" in child.lines, child.stderr()
    reports: dict[str, Any] = {"thread": []}
    for line in child.lines[:-1]:
        kind, _, body = line.partition(" ")
        if kind == "thread":
            reports["thread"].append(json.loads(body))
        else:
            reports[kind] = json.loads(body)
    return reports


def assert_everything_arrived(path: Path, reports: Any, threads: int, tasks: int) -> None:
    assert reports["errors"] == []
    assert len(reports["thread"]) == threads
    thread_ids = [i for r in reports["thread"] for i in r["traces"]]
    decision_ids = [(r["n"], d) for r in reports["thread"] for d in r["decisions"]]
    with flightlog.open(path, readonly=True) as store:
        for trace_id in thread_ids + reports["async"]:
            store.get(trace_id)
        async_traced = store.count(agent_name="async-traced")
        assert async_traced == len(reports["async"]) // 2
        assert store.count() == len(set(thread_ids)) + len(reports["async"]) + async_traced
        # Each task's trace holds its own two spans, under its root, whatever interleaved.
        for trace_id in reports["async"][::2]:
            spans = store.get(trace_id).spans
            assert sorted(s.name for s in spans) == ["first", "second"]
            assert len({s.parent_span_id for s in spans}) == 1
        for n, decision_id in decision_ids:
            assert store.verify_decision(decision_id, agent=f"thread-{n}")
            assert store.decision_trace(decision_id, agent=f"thread-{n}").status == "committed"
    assert_check_clean(path)


def test_threads_and_tasks_logging_at_once_all_arrive_without_a_hang(tmp_path: Path) -> None:
    threads, rounds, tasks = 8, scale(120, 2_000), scale(32, 200)
    reports = run_workload(tmp_path / "store", threads, rounds, tasks, wrapper=[])
    assert_everything_arrived(tmp_path / "store", reports, threads, tasks)


WRITE_CALLS = "pwrite64,pwritev,pwritev2,write,writev,fsync,fdatasync,msync,sync_file_range"
TRACED_CALL = re.compile(r"^(\d+) +(\w+)\((\d+)<([^>]*)>")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")
def test_every_write_to_the_data_file_comes_from_the_writer_thread(tmp_path: Path) -> None:
    threads, rounds, tasks = 4, scale(40, 400), scale(8, 50)
    log = tmp_path / "strace.log"
    wrapper = ["strace", "-f", "-qq", "-y", "-e", f"trace={WRITE_CALLS}", "-o", str(log)]
    reports = run_workload(tmp_path / "store", threads, rounds, tasks, wrapper)
    assert_everything_arrived(tmp_path / "store", reports, threads, tasks)
    writers = {int(tid) for tid, name in reports["tasks"].items() if name == "flightlog-write"}
    assert len(writers) == 1, reports["tasks"]
    data_file = str((tmp_path / "store" / "data.mdb").resolve())
    by_thread: dict[int, list[str]] = {}
    for line in log.read_text().splitlines():
        match = TRACED_CALL.match(line)
        if match and match[4] == data_file:
            by_thread.setdefault(int(match[1]), []).append(match[2])
    assert writers & by_thread.keys(), "the writer thread wrote nothing: is strace tracing?"
    assert "fdatasync" in by_thread[next(iter(writers))]
    strays = {tid: calls[:5] for tid, calls in by_thread.items() if tid not in writers}
    assert strays == {}, f"threads other than the writer wrote to data.mdb: {strays}"

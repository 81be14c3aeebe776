"""Durable ingest from several threads: every call returns once its trace is on disk.

    python benches/bench_threads.py [--threads 1,4,16] [--seconds S] [--repeat R]
                                    [--quick] [--dir DIR] [--json PATH]

1, 4 and 16 Python threads each log standard traces (from a pre-generated pool, cycled) into
one store for ``--seconds``, each call waiting for durability:

* flightlog ``durability="sync"``: ``log()`` returns once its batch is committed and
  fsynced; the writer commits the traces of every waiting thread together.
* Iris-style SQLite, WAL, ``synchronous=FULL`` (an fsync per commit), one connection per
  thread, a transaction per trace: SQLite has one writer at a time.
* py-lmdb + msgspec, a write transaction per trace (fsynced at commit): LMDB has one writer.
* flightlog ``durability="group"`` for reference: calls return before the data is durable;
  the final ``flush()`` is timed.

The disk's fsync latency (4 KiB written, then ``fdatasync``) bounds any store whose callers
wait for their own commit: ``threads / latency`` traces/s at best with one commit per wait.
Contenders run round-robin, ``--repeat`` times; figures are medians.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flightlog
from baselines import PyLmdb, random_trace_id, sqlite_connect, sqlite_insert
from common import (
    Goal,
    Report,
    duration,
    goals_table,
    load,
    machine,
    median,
    note,
    percentile,
    table,
    workdir,
)
from flightlog.records import Trace
from flightlog.sample import standard_trace

POOL = 20_000
QUICK_POOL = 400
GOAL_THREADS = 16
GOAL_RATE = 20_000

Log = Callable[[Trace], object]


@dataclass(frozen=True)
class Contender:
    """A store written from several threads.

    ``open(path)`` makes the shared store; ``writer(store, thread)`` runs in each thread and
    returns the function that durably writes one trace; ``close(store)`` ends the run (timed).
    """

    name: str
    open: Callable[[Path], Any]
    writer: Callable[[Any, int], Log]
    close: Callable[[Any], None]


def _flightlog(durability: flightlog.store.Durability) -> Contender:
    def close(store: flightlog.Store) -> None:
        store.flush()
        store.close()

    return Contender(
        f"flightlog log(), {durability}",
        lambda path: flightlog.open(path, durability=durability),
        lambda store, _thread: store.log,
        close,
    )


class _Sqlite:
    """The SQLite file and every thread's connection, closed at the end of the run (SQLite
    must not see its file deleted while a connection is open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = [sqlite_connect(path, "FULL")]  # the schema, before the threads

    def writer(self, thread: int) -> Log:
        db = sqlite_connect(self.path, "FULL")  # one connection per thread
        self.connections.append(db)
        rng = random.Random(thread)
        written: dict[int, int] = {}

        def write(trace: Trace) -> None:
            # A trace of the pool written again needs new span ids (a primary key): SQLite's
            # busy handler is not fair, so one thread may write many while others wait.
            again = written[id(trace)] = written.get(id(trace), -1) + 1
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock on upgrade
            try:
                sqlite_insert(db, random_trace_id(rng), trace, f"-{again}" if again else "")
            except BaseException:
                db.execute("ROLLBACK")  # or the other threads wait for the lock forever
                raise
            db.execute("COMMIT")

        return write

    def close(self) -> None:
        for db in self.connections:
            db.close()


def _pylmdb_writer(store: PyLmdb, thread: int) -> Log:
    rng = random.Random(thread)
    return lambda trace: store.write([trace], rng)


CONTENDERS = [
    _flightlog("sync"),
    Contender("Iris-style SQLite, txn per trace, FULL", _Sqlite, _Sqlite.writer, _Sqlite.close),
    Contender("py-lmdb + msgspec, txn per trace", PyLmdb, _pylmdb_writer, PyLmdb.close),
    _flightlog("group"),
]


@dataclass
class Run:
    traces: int
    seconds: float
    call_ns: list[int]


def _run(contender: Contender, path: Path, threads: int, pool: list[Trace], seconds: float) -> Run:
    """``threads`` threads write traces for ``seconds``; then the contender's close."""
    store = contender.open(path)
    latencies: list[list[int]] = [[] for _ in range(threads)]
    ready = threading.Barrier(threads + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            write = contender.writer(store, thread)
            mine = latencies[thread]
            clock = time.perf_counter_ns
            # Each thread cycles through its own share of the pool.
            share = pool[thread::threads]
            i = 0
            ready.wait()
            while not stop.is_set():
                t0 = clock()
                write(share[i % len(share)])
                mine.append(clock() - t0)
                i += 1
        except BaseException as error:  # reported after the run
            errors.append(error)
            ready.abort()

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    contender.close(store)
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    calls = [ns for mine in latencies for ns in mine]
    return Run(len(calls), elapsed, calls)


def _fsync_latency(directory: Path, times: int) -> float:
    """Median seconds to write 4 KiB at the end of a file and ``fdatasync`` it."""
    path = directory / "fsync.bin"
    block = os.urandom(4096)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(times):
            started = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return median(samples)


@dataclass
class Figures:
    name: str
    threads: int
    traces: int
    traces_per_s: float
    p50_s: float
    p99_s: float


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its table.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    seconds = args.seconds or (0.3 if args.quick else 10.0)
    repeat = args.repeat or (1 if args.quick else 3)
    thread_counts = [int(t) for t in args.threads.split(",")]
    started = time.perf_counter()
    rng = random.Random(42)
    pool = [standard_trace(rng) for _ in range(QUICK_POOL if args.quick else POOL)]
    report = Report("threads")
    with workdir(args.dir, "flightlog-bench-threads-") as base:
        print(machine(base) + "\n", flush=True)
        print(
            f"{len(pool):,} standard traces in the pool; {seconds:g} s per run, "
            f"{repeat} run(s) each, round-robin; load average {load()} before timing\n",
            flush=True,
        )
        runs: dict[tuple[str, int], list[Run]] = {}
        fsyncs = []
        for round_ in range(repeat):
            fsyncs.append(_fsync_latency(base, 20 if args.quick else 100))
            for contender in CONTENDERS:
                for threads in thread_counts:
                    path = base / f"store-{len(runs)}-{round_}"
                    run = _run(contender, path, threads, pool, seconds)
                    shutil.rmtree(path, ignore_errors=True)
                    runs.setdefault((contender.name, threads), []).append(run)
                    note(
                        f"  [{round_ + 1}/{repeat}] {contender.name}, {threads} threads: "
                        f"{run.traces / run.seconds:,.0f} traces/s"
                    )
        figures = [
            Figures(
                name,
                threads,
                sum(r.traces for r in rs),
                median([r.traces / r.seconds for r in rs]),
                median([percentile(r.call_ns, 0.5) / 1e9 for r in rs]),
                median([percentile(r.call_ns, 0.99) / 1e9 for r in rs]),
            )
            for (name, threads), rs in runs.items()
        ]
        fsync_s = median(fsyncs)
        print(_table(figures))
        print(
            f"\ndisk fsync latency (4 KiB written + fdatasync, median of {len(fsyncs)} rounds of "
            f"{20 if args.quick else 100}): {duration(fsync_s)} (rounds: "
            f"{', '.join(duration(f) for f in fsyncs)}): a caller waiting for its own commit "
            f"gets at most {1 / fsync_s:,.0f} commits/s\nload average after timing: {load()}\n"
        )
    ours = next((f for f in figures if f.name.endswith("sync") and f.threads == GOAL_THREADS), None)
    if ours:
        report.goals.append(
            Goal(
                f"sync durability, {GOAL_THREADS} threads",
                ours.traces_per_s,
                GOAL_RATE,
                "/s",
                "higher",
                f"disk fsync {duration(fsync_s)}: {GOAL_THREADS / fsync_s:,.0f}/s if one "
                "commit per fsync carried every thread",
            )
        )
        print("## Goals\n\n" + goals_table(report.goals) + "\n")
    report.figures = {
        "fsync_s": fsync_s,
        "rows": [vars(f) for f in figures],
    }
    print(f"whole run: {duration(time.perf_counter() - started)}, load average {load()}")
    report.write(args.json)
    return 0


def _table(figures: list[Figures]) -> str:
    sync = {f.threads: f for f in figures if f.name == "flightlog log(), sync"}
    rows = []
    for f in sorted(figures, key=lambda f: (f.threads, CONTENDERS_ORDER[f.name])):
        ours = sync.get(f.threads)
        rows.append(
            [
                f.name,
                str(f.threads),
                f"{f.traces:,}",
                f"{f.traces_per_s:,.0f}",
                duration(f.p50_s),
                duration(f.p99_s),
                f"{ours.traces_per_s / f.traces_per_s:,.2f}x" if ours else "",
            ]
        )
    header = [
        "contender",
        "threads",
        "traces (all runs)",
        "traces/s",
        "call p50",
        "call p99",
        "sync log() / this",
    ]
    return table(header, rows, "lrrrrrr")


CONTENDERS_ORDER = {c.name: i for i, c in enumerate(CONTENDERS)}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", default="1,4,16", help="comma-separated thread counts (1,4,16)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of each run (10; 0.3 with --quick)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs of every configuration (3; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test for CI")
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: the temp directory)"
    )
    parser.add_argument("--json", default=None, help="also write the goals and figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

"""Sustained ingest: does ``log()`` keep its rate, and the process its memory, as the store
grows to millions of traces?

    python benches/bench_sustained.py [--traces N] [--slice S] [--timestamps now|spread]
                                      [--quick] [--dir DIR] [--margin GIB] [--json PATH]

One Python thread logs ``N`` standard traces (default 10,000,000) into one store with
``durability="group"``, cycling through a pool of 20,000 pre-generated traces (the store
mints a new id for each ``log()``, so every record is a new trace). With ``--timestamps now``
(the default) the pool's traces carry no ``timestamp``, so the store stamps each with the
time it is logged, as in production, where traces arrive roughly in time order; with
``--timestamps spread`` they keep the standard traces' own, spread over 6 hours and repeating
every 20,000 traces: every time-ordered index then takes random inserts, a worst case
(run and request ids are random in both). At the end of every
slice (default 1,000,000 traces) the store is flushed and the slice's rate, its ``log()``
latencies, the process's memory (``/proc/self/status``) and the store's size are printed;
memory is also read every 100,000 traces.

The store must fit on the disk: after the first 100,000 traces the run measures the bytes
each trace takes and, if ``N`` of them would not leave ``--margin`` GiB free (default 10),
it logs as many as fit, in whole slices, and says so. The store is deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from array import array
from dataclasses import dataclass

import flightlog
import msgspec
from common import (
    Goal,
    Report,
    du,
    duration,
    free_bytes,
    goals_table,
    load,
    machine,
    memory,
    mib,
    note,
    percentile,
    table,
    workdir,
)
from flightlog.sample import standard_trace

POOL = 20_000
SAMPLE = 100_000  # read the memory every this many traces
RATE_GOAL = 0.8  # the last slice's rate at least this share of the first's
RSS_GOAL = 0.10  # anonymous memory grows at most this much after the first slice


@dataclass
class Slice:
    """One slice of the run: traces ``start`` to ``end``."""

    start: int
    end: int
    seconds: float  # including the flush at its end
    p50_s: float
    p99_s: float
    p999_s: float
    rss: int
    anon: int
    file: int
    store_bytes: int
    load: str

    @property
    def rate(self) -> float:
        return (self.end - self.start) / self.seconds


def _count(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1e3:g}k"
    return f"{n:,}"


def _fit(wanted: int, done: int, store_bytes: int, free: int, margin: int, step: int) -> int:
    """How many traces fit: ``wanted``, or fewer, in whole ``step``s, so that ``margin``
    bytes stay free at the rate of ``store_bytes / done`` per trace."""
    per_trace = store_bytes / done
    room = free - margin  # free space now, after `done` traces
    fits = done + int(room / per_trace)
    if fits >= wanted:
        return wanted
    return max(step, fits // step * step)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its table.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    wanted = 3000 if args.quick else args.traces
    step = 1000 if args.quick else args.slice
    sample = 500 if args.quick else SAMPLE
    margin = int(args.margin * 2**30)
    started = time.perf_counter()
    report = Report("sustained")
    with workdir(args.dir, "flightlog-bench-sustained-") as base:
        print(machine(base) + "\n", flush=True)
        rng = random.Random(42)
        gc.disable()
        pool = [standard_trace(rng) for _ in range(500 if args.quick else POOL)]
        if args.timestamps == "now":
            for trace in pool:
                trace.timestamp = msgspec.UNSET  # the store stamps it when it is logged
        gc.enable()
        gc.collect()
        gc.freeze()  # the pool lives all run: keep full collections from walking it
        latencies = array("q", bytes(8 * step))  # allocated before the first memory reading
        path = base / "store"
        store = flightlog.open(path, durability="group")
        before = memory()
        print(
            f"{wanted:,} standard traces wanted, from a pool of {len(pool):,} "
            f"(timestamps: {args.timestamps}); slices of "
            f"{step:,}; memory before logging: RSS {mib(before['rss'])} "
            f"(anonymous {mib(before['anon'])}, files {mib(before['file'])}); "
            f"{free_bytes(base) / 2**30:,.0f} GiB free; load average {load()}\n",
            flush=True,
        )
        log = store.log
        clock = time.perf_counter_ns
        slices: list[Slice] = []
        samples: list[tuple[int, dict[str, int]]] = [(0, before)]
        total = wanted
        remark = ""
        i = 0
        slice_start, slice_t0 = 0, clock()
        while i < total:
            trace = pool[i % len(pool)]
            t0 = clock()
            log(trace)
            latencies[i - slice_start] = clock() - t0
            i += 1
            if i % sample == 0 or i == total:
                samples.append((i, memory()))
                if i == sample and not args.quick:  # how big a trace is, now that we know
                    store.flush()
                    total = _fit(wanted, i, du(path), free_bytes(base), margin, step)
                    if total < wanted:
                        remark = (
                            f"only {total:,} of the {wanted:,} traces fit on the disk with "
                            f"{args.margin:g} GiB to spare ({du(path) / i:,.0f} B/trace)"
                        )
                        print(f"note: {remark}\n", flush=True)
            if i - slice_start == step or i == total:
                store.flush()
                seconds = (clock() - slice_t0) / 1e9
                ns = latencies[: i - slice_start].tolist()
                mem = memory()
                done = Slice(
                    slice_start,
                    i,
                    seconds,
                    percentile(ns, 0.5) / 1e9,
                    percentile(ns, 0.99) / 1e9,
                    percentile(ns, 0.999) / 1e9,
                    mem["rss"],
                    mem["anon"],
                    mem["file"],
                    du(path),
                    load(),
                )
                slices.append(done)
                note(
                    f"  {_count(done.start)}-{_count(done.end)}: {done.rate:,.0f} traces/s, "
                    f"RSS {mib(done.rss)} (anon {mib(done.anon)}), store "
                    f"{mib(done.store_bytes)}, load {done.load}"
                )
                if free_bytes(base) < margin and i < total:
                    remark = f"stopped at {i:,} traces: less than {args.margin:g} GiB free"
                    print(f"note: {remark}\n", flush=True)
                    total = i
                slice_start, slice_t0 = i, clock()
        store.close()
        after = memory()
    print(_table(slices))
    print(
        f"\nmemory after close: RSS {mib(after['rss'])} (anonymous {mib(after['anon'])}); "
        f"every {_count(sample)} traces, anonymous MiB: "
        + " ".join(f"{m['anon'] / 2**20:.0f}" for _, m in samples)
        + "\n"
    )
    report.goals = _goals(slices)
    report.figures = {
        "traces": total,
        "wanted": wanted,
        "timestamps": args.timestamps,
        "remark": remark,
        "before": before,
        "slices": [vars(s) | {"rate": s.rate} for s in slices],
        "samples": [(n, m) for n, m in samples],
    }
    if report.goals:
        print("## Goals\n\n" + goals_table(report.goals) + "\n")
    print(f"whole run: {duration(time.perf_counter() - started)}, load average {load()}")
    report.write(args.json)
    return 0


def _table(slices: list[Slice]) -> str:
    first = slices[0].rate
    rows = [
        [
            f"{_count(s.start)}-{_count(s.end)}",
            f"{s.rate:,.0f}",
            f"{s.rate / first:.2f}",
            duration(s.p50_s),
            duration(s.p99_s),
            duration(s.p999_s),
            mib(s.rss),
            mib(s.anon),
            mib(s.file),
            mib(s.store_bytes),
            f"{s.store_bytes / s.end:,.0f}",
            s.load,
        ]
        for s in slices
    ]
    header = [
        "traces",
        "traces/s",
        "vs first",
        "log() p50",
        "log() p99",
        "log() p99.9",
        "RSS",
        "anonymous",
        "files",
        "store",
        "B/trace",
        "load average",
    ]
    return table(header, rows, "lrrrrrrrrrrl")


def _goals(slices: list[Slice]) -> list[Goal]:
    if len(slices) < 2:
        return []
    first, last = slices[0], slices[-1]
    growth = (last.anon - first.anon) / first.anon
    return [
        Goal(
            f"rate at {_count(last.start)}-{_count(last.end)} vs {_count(first.end)} first",
            last.rate / first.rate,
            RATE_GOAL,
            "x",
            "higher",
            f"{last.rate:,.0f} / {first.rate:,.0f} traces/s",
        ),
        Goal(
            f"anonymous memory growth after the first {_count(first.end)}",
            growth * 100,
            RSS_GOAL * 100,
            "%",
            "lower",
            f"{mib(first.anon)} -> {mib(last.anon)} at {_count(last.end)} "
            f"(RSS with mapped files {mib(first.rss)} -> {mib(last.rss)})",
        ),
    ]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=10_000_000, help="traces to log (10000000)")
    parser.add_argument(
        "--slice", type=int, default=1_000_000, help="traces per reported slice (1000000)"
    )
    parser.add_argument(
        "--timestamps",
        choices=("now", "spread"),
        default="now",
        help="stamped when logged (now, the default) or the pool's own, spread over 6 hours",
    )
    parser.add_argument("--quick", action="store_true", help="3000 traces: a smoke test for CI")
    parser.add_argument(
        "--dir", default=None, help="where to create the store (default: the temp directory)"
    )
    parser.add_argument("--margin", type=float, default=10.0, help="GiB of disk to leave free (10)")
    parser.add_argument("--json", default=None, help="also write the goals and figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

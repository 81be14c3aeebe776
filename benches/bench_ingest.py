"""Ingest benchmark: flightlog ``log()`` and ``log_many()`` against baselines, in one run.

    python benches/bench_ingest.py [--traces N] [--quick] [--repeat R] [--dir DIR]

Every contender writes the same pre-generated standard traces (about 5 KB as JSON, 6 spans,
3 tool calls; see ``flightlog.sample``):

* flightlog ``log()``, one Python thread, group durability; the final ``flush()`` is timed.
* the same with ``redaction="off"``: what scanning for secrets costs (the default redacts).
* flightlog ``log_many()`` in chunks of 1000, then ``flush()``.
* msgspec msgpack encoding only: the Python floor, what any store must pay at least.
* SQLite the way Python tracing tools commonly store traces: WAL, ``synchronous=NORMAL``, one
  row per trace with JSON columns, a spans table, indexes on agent and timestamp, one
  transaction per trace. Capped at 5000 traces because it is slow.
* py-lmdb + msgspec, 1000 traces per transaction, each under a sequence key plus one
  index entry: roughly what flightlog's writer does, minus validation, from Python.

See ``benches/README.md`` for what the figures mean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import flightlog
import lmdb
import msgspec
from flightlog.records import Trace, encoder
from flightlog.sample import standard_trace

CHUNK = 1000
SQLITE_CAP = 5000
LMDB_MAP_SIZE = 1 << 36  # address space only; the file grows as written


@dataclass
class Run:
    """One timed pass of one contender over its traces."""

    traces: int
    spans: int
    seconds: float
    call_ns: list[int]  # the latency of every timed call (one trace or one chunk)
    disk_bytes: int | None = None


@dataclass
class Figures:
    """A contender's figures: medians over its repeated runs."""

    name: str
    per_call: str  # what one timed call covers: "1 trace" or "1000 traces"
    traces: int
    traces_per_s: float
    spans_per_s: float
    p50_us: float
    p99_us: float
    p999_us: float
    bytes_per_trace: float | None


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its tables.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    count = 500 if args.quick else args.traces
    print(_machine(args.dir))
    traces, gen_s = _generate(count)
    print(
        f"generated {count:,} standard traces in {gen_s:.1f} s "
        f"({gen_s / count * 1e6:.1f} us each), "
        f"{len(msgspec.json.encode(traces[0])):,} bytes as JSON (first)\n"
    )
    # Full garbage collections walking the million objects of the pre-generated traces would
    # land in whichever timed call triggers them: an artefact of holding every trace in
    # memory at once, not of any store.
    gc.collect()
    gc.freeze()

    workdir = Path(tempfile.mkdtemp(prefix="flightlog-bench-", dir=args.dir))
    try:
        results = [
            _measure(
                "flightlog log()", "1 trace", args.repeat, lambda: _flightlog_log(traces, workdir)
            ),
            _measure(
                'flightlog log(), redaction="off"',
                "1 trace",
                args.repeat,
                lambda: _flightlog_log(traces, workdir, redaction="off"),
            ),
            _measure(
                f"flightlog log_many({CHUNK})",
                f"{CHUNK} traces",
                args.repeat,
                lambda: _flightlog_log_many(traces, workdir),
            ),
            _measure(
                "msgspec encode only (floor)", "1 trace", args.repeat, lambda: _encode_only(traces)
            ),
            _measure(
                "SQLite WAL, txn per trace",
                "1 trace",
                1,
                lambda: _sqlite(traces[:SQLITE_CAP], workdir),
            ),
            _measure(
                f"py-lmdb + msgspec, {CHUNK}/txn",
                f"{CHUNK} traces",
                1,
                lambda: _pylmdb(traces, workdir),
            ),
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(_table(results))
    print()
    print(_ratios(results))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000, help="traces to write (100000)")
    parser.add_argument("--quick", action="store_true", help="500 traces: a smoke test for CI")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the flightlog and floor measurements (3)"
    )
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: the temp directory)"
    )
    return parser.parse_args(argv)


def _generate(count: int) -> tuple[list[Trace], float]:
    rng = random.Random(42)
    # Collections triggered by the growing list would re-walk every trace made so far.
    gc.disable()
    started = time.perf_counter()
    traces = [standard_trace(rng) for _ in range(count)]
    elapsed = time.perf_counter() - started
    gc.enable()
    return traces, elapsed


def _measure(name: str, per_call: str, repeat: int, run: Callable[[], Run]) -> Figures:
    """Runs a contender ``repeat`` times and keeps the median of each figure."""
    print(f"  {name} ...", file=sys.stderr, flush=True)
    runs = [run() for _ in range(repeat)]
    median = statistics.median

    def percentile_us(q: float) -> float:
        return median([_percentile_ns(r.call_ns, q) / 1000 for r in runs])

    disk = [r.disk_bytes / r.traces for r in runs if r.disk_bytes is not None]
    return Figures(
        name=name,
        per_call=per_call,
        traces=runs[0].traces,
        traces_per_s=median([r.traces / r.seconds for r in runs]),
        spans_per_s=median([r.spans / r.seconds for r in runs]),
        p50_us=percentile_us(0.50),
        p99_us=percentile_us(0.99),
        p999_us=percentile_us(0.999),
        bytes_per_trace=median(disk) if disk else None,
    )


def _percentile_ns(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _spans(traces: list[Trace]) -> int:
    return sum(len(t.spans) for t in traces)


def _fresh(workdir: Path, name: str) -> Path:
    path = workdir / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def _du(path: Path) -> int:
    """Bytes allocated on disk, like ``du``: LMDB files can be sparse."""
    return path.stat().st_blocks * 512


# --- contenders ------------------------------------------------------------------------------


def _flightlog_log(
    traces: list[Trace], workdir: Path, redaction: flightlog.store.Redaction = "redact"
) -> Run:
    path = _fresh(workdir, "flightlog-log")
    store = flightlog.open(path, durability="group", redaction=redaction)
    log = store.log
    clock = time.perf_counter_ns
    call_ns = [0] * len(traces)
    started = clock()
    for i, trace in enumerate(traces):
        t0 = clock()
        log(trace)
        call_ns[i] = clock() - t0
    store.flush()
    seconds = (clock() - started) / 1e9
    disk = _du(path / "data.mdb")
    store.close()
    return Run(len(traces), _spans(traces), seconds, call_ns, disk)


def _flightlog_log_many(traces: list[Trace], workdir: Path) -> Run:
    path = _fresh(workdir, "flightlog-log-many")
    store = flightlog.open(path, durability="group")
    clock = time.perf_counter_ns
    call_ns = []
    started = clock()
    for first in range(0, len(traces), CHUNK):
        t0 = clock()
        store.log_many(traces[first : first + CHUNK])
        call_ns.append(clock() - t0)
    store.flush()
    seconds = (clock() - started) / 1e9
    disk = _du(path / "data.mdb")
    store.close()
    return Run(len(traces), _spans(traces), seconds, call_ns, disk)


def _encode_only(traces: list[Trace]) -> Run:
    encode = encoder.encode
    clock = time.perf_counter_ns
    call_ns = [0] * len(traces)
    started = clock()
    for i, trace in enumerate(traces):
        t0 = clock()
        encode(trace)
        call_ns[i] = clock() - t0
    return Run(len(traces), _spans(traces), (clock() - started) / 1e9, call_ns)


_SQLITE_SCHEMA = """
CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY, agent_name TEXT NOT NULL, framework TEXT, timestamp TEXT,
    ended_at TEXT, status TEXT, input TEXT, output TEXT, tool_calls TEXT, token_usage TEXT,
    cost_usd REAL, latency_ms REAL, metadata TEXT, events TEXT, tags TEXT, session_id TEXT,
    run_id TEXT, request_id TEXT
);
CREATE TABLE spans (
    span_id TEXT NOT NULL, trace_id TEXT NOT NULL, parent_span_id TEXT, name TEXT,
    kind TEXT, status_code TEXT, start_time TEXT, end_time TEXT, attributes TEXT,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX traces_agent ON traces (agent_name);
CREATE INDEX traces_timestamp ON traces (timestamp);
"""


def _sqlite(traces: list[Trace], workdir: Path) -> Run:
    path = _fresh(workdir, "sqlite")
    path.mkdir()
    db = sqlite3.connect(path / "traces.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SQLITE_SCHEMA)
    rng = random.Random(7)
    clock = time.perf_counter_ns
    call_ns = [0] * len(traces)
    started = clock()
    for i, trace in enumerate(traces):
        t0 = clock()
        _sqlite_insert(db, f"{rng.getrandbits(128):032x}", trace)
        call_ns[i] = clock() - t0
    seconds = (clock() - started) / 1e9
    db.close()  # checkpoints the WAL into the database file
    return Run(len(traces), _spans(traces), seconds, call_ns, _du(path / "traces.db"))


def _sqlite_insert(db: sqlite3.Connection, trace_id: str, t: Trace) -> None:
    """One trace in one transaction: what a tracing SDK does per finished run."""
    json = msgspec.json.encode
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO traces VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            trace_id,
            t.agent_name,
            _opt(t.framework),
            _time(t.timestamp),
            _time(t.ended_at),
            _opt(t.status),
            _opt(t.input),
            _opt(t.output),
            json(t.tool_calls),
            json(t.token_usage),
            _opt(t.cost_usd),
            _opt(t.latency_ms),
            json(t.metadata),
            json(t.events),
            json(t.tags),
            _opt(t.session_id),
            _opt(t.run_id),
            _opt(t.request_id),
        ),
    )
    db.executemany(
        "INSERT INTO spans VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                s.span_id,
                trace_id,
                _opt(s.parent_span_id),
                s.name,
                _opt(s.kind),
                _opt(s.status_code),
                _time(s.start_time),
                _time(s.end_time),
                json(s.attributes),
            )
            for s in t.spans
        ],
    )
    db.execute("COMMIT")


def _opt(value: object) -> object:
    return None if value is msgspec.UNSET else value


def _time(value: object) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None


def _pylmdb(traces: list[Trace], workdir: Path) -> Run:
    path = _fresh(workdir, "pylmdb")
    env = lmdb.open(str(path), map_size=LMDB_MAP_SIZE, max_dbs=2)
    records = env.open_db(b"records")
    index = env.open_db(b"index")
    encode = encoder.encode
    rng = random.Random(7)
    clock = time.perf_counter_ns
    call_ns = []
    seq = 0
    started = clock()
    for first in range(0, len(traces), CHUNK):
        t0 = clock()
        with env.begin(write=True) as txn:  # commits with an fsync, like a group commit
            for trace in traces[first : first + CHUNK]:
                seq += 1
                key = seq.to_bytes(8, "big")
                # A time-ordered 16-byte id, like flightlog's (UUIDv7 layout).
                trace_id = (time.time_ns() // 1_000_000).to_bytes(6, "big") + rng.randbytes(10)
                txn.put(key, encode(trace), db=records, append=True)
                txn.put(trace_id, key, db=index)
        call_ns.append(clock() - t0)
    seconds = (clock() - started) / 1e9
    env.close()
    return Run(len(traces), _spans(traces), seconds, call_ns, _du(path / "data.mdb"))


# --- report ----------------------------------------------------------------------------------


def _machine(workdir: str | None) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("flightlog", "msgspec", "lmdb")
    )
    # Other processes skew every figure; the load average tells a reader whether they ran.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"load average {load}\n"
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{versions}, sqlite {sqlite3.sqlite_version}\n"
        f"stores under {workdir or tempfile.gettempdir()}\n"
    )


def _table(results: list[Figures]) -> str:
    header = (
        f"{'contender':<32} {'traces':>7} {'traces/s':>10} {'spans/s':>10} "
        f"{'call':>12} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'B/trace':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        disk = f"{r.bytes_per_trace:,.0f}" if r.bytes_per_trace is not None else "-"
        lines.append(
            f"{r.name:<32} {r.traces:>7,} {r.traces_per_s:>10,.0f} {r.spans_per_s:>10,.0f} "
            f"{r.per_call:>12} {r.p50_us:>9,.1f} {r.p99_us:>9,.1f} {r.p999_us:>9,.1f} {disk:>8}"
        )
    return "\n".join(lines)


def _ratios(results: list[Figures]) -> str:
    """flightlog's throughput as a multiple of each baseline's (>1: flightlog is faster),
    and the cost of redaction."""
    log, unredacted, log_many, *baselines = results
    lines = ["throughput ratios (flightlog / baseline):"]
    for mine in (log, log_many):
        for base in baselines:
            ratio = mine.traces_per_s / base.traces_per_s
            lines.append(f"  {mine.name:<24} vs {base.name:<32} {ratio:6.2f}x")
    lines.append(
        f'redaction: log() with redaction="redact" / "off": '
        f"{log.traces_per_s / unredacted.traces_per_s:.3f}x the throughput; "
        f"p50 {log.p50_us:.1f} vs {unredacted.p50_us:.1f} us per call"
    )
    sqlite = next(base for base in baselines if base.name.startswith("SQLite"))
    if log.bytes_per_trace and sqlite.bytes_per_trace:
        lines.append(
            f"bytes on disk per trace: flightlog {log.bytes_per_trace:,.0f}, "
            f"SQLite {sqlite.bytes_per_trace:,.0f} "
            f"({log.bytes_per_trace / sqlite.bytes_per_trace:.2f}x)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Ingest benchmark: flightlog ``log()`` and ``log_many()`` beside what users would otherwise
pick, on the same traces, in one run.

    python benches/bench_ingest.py [--traces N] [--quick] [--repeat R] [--dir DIR]
                                   [--workload NAME ...] [--only TEXT ...] [--json PATH]

Workloads (pre-generated, deterministic from a seed; see ``flightlog.sample``): the standard
trace (~5.6 KB as JSON, 6 spans, 3 tool calls), traces of 1 KB, 100 KB and 1 MB, and traces
of 100 small spans. Every contender in ``CONTENDERS`` writes the same traces of a workload;
the contenders run round-robin ``--repeat`` times and each figure is the median of its runs,
so that a load change on the machine hits every contender alike.

* flightlog ``log()`` and ``log_many()``, one Python thread, ``group`` durability; the final
  ``flush()`` is timed. ``log()`` again with ``redaction="off"``: what scanning for secrets
  costs (the default redacts).
* msgspec encoding only: the Python floor, what any store fed Structs pays at least.
* The OpenTelemetry SDK: the same spans through a ``BatchSpanProcessor`` into an in-memory
  exporter, no storage at all (the cost of instrumenting alone).
* SQLite laid out like Iris (one row per trace with JSON columns, a spans table, Iris's
  indexes, WAL): a transaction per trace with ``synchronous=NORMAL`` and ``FULL``, and 1000
  traces per transaction. The per-trace ones are capped (they are slow).
* py-lmdb + msgspec: records appended under sequence keys with two index entries each, a
  transaction per trace and 1000 per transaction.
* The ceiling: py-lmdb appending pre-encoded records in large transactions (no validation,
  no index), and the disk's sequential write bandwidth.

See ``benches/README.md`` for what each row does and what the figures mean. To add a row,
append a ``Contender`` to ``CONTENDERS``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import flightlog
import lmdb
import msgspec
from baselines import LMDB_MAP_SIZE, PyLmdb, random_trace_id, sqlite_connect, sqlite_insert
from common import (
    MISSING,
    Goal,
    Report,
    du,
    duration,
    fresh,
    goals_table,
    load,
    machine,
    median,
    note,
    percentile,
    table,
    workdir,
)
from flightlog.records import Trace, encoder
from flightlog.sample import many_spans_trace, sized_trace, standard_trace

QUICK_TRACES = 300
CEILING_TXN_BYTES = 256 << 20  # the ceiling's transactions: up to 10,000 records or this
DISK_BYTES = 256 << 20  # the sequential write test: this much in 1 MiB blocks, one fsync
QUICK_DISK_BYTES = 16 << 20


# --- workloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Traces of one shape, and how many of them a run writes."""

    name: str
    about: str
    make: Callable[[random.Random], Trace]
    share: float  # traces relative to --traces (which counts standard traces)
    minimum: int  # at least this many, even with --quick
    batch: int  # traces per batched call or transaction


WORKLOADS = (
    Workload("standard", "standard traces (~5.6 KB JSON, 6 spans)", standard_trace, 1, 100, 1000),
    Workload("1kb", "1 KB traces (1 LLM span)", lambda r: sized_trace(r, 1000), 1, 100, 1000),
    Workload("100kb", "100 KB traces (6 spans)", lambda r: sized_trace(r, 100_000), 0.03, 10, 1000),
    Workload("1mb", "1 MB traces (6 spans)", lambda r: sized_trace(r, 1_000_000), 0.003, 3, 100),
    Workload("100spans", "100 spans of ~120 B (~17 KB JSON)", many_spans_trace, 0.2, 50, 1000),
)


@dataclass
class Data:
    """One workload's pre-generated traces and where the contenders write them."""

    workload: Workload
    traces: list[Trace]
    spans: int
    json_bytes: int
    workdir: Path
    quick: bool
    encoded: list[bytes] = field(default_factory=list)  # msgpack, for the ceiling

    @property
    def batch(self) -> int:
        return self.workload.batch


def _generate(workload: Workload, count: int) -> tuple[list[Trace], float]:
    rng = random.Random(42)
    # Collections triggered by the growing list would re-walk every trace made so far.
    gc.disable()
    started = time.perf_counter()
    traces = [workload.make(rng) for _ in range(count)]
    elapsed = time.perf_counter() - started
    gc.enable()
    return traces, elapsed


# --- contenders ------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed pass of one contender over its traces."""

    traces: int
    spans: int
    json_bytes: int
    seconds: float
    call_ns: list[int]  # the latency of every timed call (one trace or one batch)
    disk_bytes: int | None = None
    remark: str = ""


Kind = Literal["flightlog", "floor", "baseline", "ceiling"]


@dataclass(frozen=True)
class Contender:
    """A row of the table: a function writing a workload's traces, timed by itself.

    ``cap`` (and ``quick_cap`` under ``--quick``) limits how many traces it gets, for the
    slow ones; ``per_call`` says what one timed call covers (``"batch"``: the workload's
    batch size).
    """

    name: str
    kind: Kind
    per_call: Literal["trace", "batch", "all"]
    run: Callable[[Data], Run]
    cap: int | None = None
    quick_cap: int | None = None


def _flightlog_log(data: Data, *, name: str = "flightlog-log", **options: Any) -> Run:
    """``store.log(trace)`` per trace, then ``flush()``; ``options`` go to ``flightlog.open``."""
    path = fresh(data.workdir, name)
    store = flightlog.open(path, **options)
    log = store.log
    clock = time.perf_counter_ns
    call_ns = [0] * len(data.traces)
    started = clock()
    for i, trace in enumerate(data.traces):
        t0 = clock()
        log(trace)
        call_ns[i] = clock() - t0
    store.flush()
    seconds = (clock() - started) / 1e9
    disk = du(path / "data.mdb")
    store.close()
    return Run(len(data.traces), data.spans, data.json_bytes, seconds, call_ns, disk)


def _flightlog_log_many(data: Data) -> Run:
    path = fresh(data.workdir, "flightlog-log-many")
    store = flightlog.open(path, durability="group")
    traces = data.traces
    clock = time.perf_counter_ns
    call_ns = []
    started = clock()
    for first in range(0, len(traces), data.batch):
        t0 = clock()
        store.log_many(traces[first : first + data.batch])
        call_ns.append(clock() - t0)
    store.flush()
    seconds = (clock() - started) / 1e9
    disk = du(path / "data.mdb")
    store.close()
    return Run(len(traces), data.spans, data.json_bytes, seconds, call_ns, disk)


def _encode_only(data: Data) -> Run:
    encode = encoder.encode
    clock = time.perf_counter_ns
    call_ns = [0] * len(data.traces)
    started = clock()
    for i, trace in enumerate(data.traces):
        t0 = clock()
        encode(trace)
        call_ns[i] = clock() - t0
    seconds = (clock() - started) / 1e9
    return Run(len(data.traces), data.spans, data.json_bytes, seconds, call_ns)


def _otel(data: Data) -> Run:
    """The trace's spans made with the OpenTelemetry SDK, as an instrumented agent would.

    Same tree, names, kinds and attributes; the root also carries the input, output,
    metadata and token usage, each TOOL span its tool call's input and output as JSON.
    Spans are timed by the SDK's own clock. The final ``force_flush`` is timed.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("flightlog-bench")
    clock = time.perf_counter_ns
    call_ns = [0] * len(data.traces)
    started = clock()
    for i, trace in enumerate(data.traces):
        t0 = clock()
        _instrument(tracer, trace)
        call_ns[i] = clock() - t0
    provider.force_flush()
    seconds = (clock() - started) / 1e9
    exported = len(exporter.get_finished_spans())
    provider.shutdown()
    exporter.clear()
    remark = "" if exported == data.spans else f"{data.spans - exported:,} spans dropped"
    return Run(len(data.traces), data.spans, data.json_bytes, seconds, call_ns, remark=remark)


_OTEL_KINDS: dict[str, Any] = {}


def _instrument(tracer: Any, trace: Trace) -> None:
    from opentelemetry.trace import SpanKind, set_span_in_context

    if not _OTEL_KINDS:
        _OTEL_KINDS.update({"LLM": SpanKind.CLIENT, "TOOL": SpanKind.INTERNAL})
    json = msgspec.json.encode
    opened: dict[Any, Any] = {}
    order = []
    tool_calls = iter(trace.tool_calls)
    for i, span in enumerate(trace.spans):
        attributes: dict[str, Any] = dict(span.attributes)
        if i == 0:
            attributes["input.value"] = trace.input
            attributes["output.value"] = trace.output
            for key, value in trace.metadata.items():
                attributes[f"metadata.{key}"] = value
            if isinstance(trace.token_usage, flightlog.TokenUsage):
                attributes["gen_ai.usage.input_tokens"] = trace.token_usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = trace.token_usage.completion_tokens
        elif span.kind == "TOOL":
            call = next(tool_calls, None)
            if call is not None:
                attributes["input.value"] = json(call.input).decode()
                attributes["output.value"] = json(call.output).decode()
        parent = opened.get(span.parent_span_id)
        otel_span = tracer.start_span(
            span.name,
            context=set_span_in_context(parent) if parent is not None else None,
            kind=_OTEL_KINDS.get(str(span.kind), SpanKind.INTERNAL),
            attributes=attributes,
        )
        opened[span.span_id] = otel_span
        order.append(otel_span)
    for otel_span in reversed(order):
        otel_span.end()


def _sqlite(data: Data, *, synchronous: str, batch: bool) -> Run:
    """Iris-style SQLite: a transaction per trace, or per ``data.batch`` traces."""
    traces = data.traces
    path = fresh(data.workdir, f"sqlite-{synchronous}-{'batch' if batch else 'call'}")
    db = sqlite_connect(path, synchronous)
    step = data.batch if batch else 1
    rng = random.Random(7)
    clock = time.perf_counter_ns
    call_ns = []
    started = clock()
    for first in range(0, len(traces), step):
        t0 = clock()
        db.execute("BEGIN")
        for trace in traces[first : first + step]:
            sqlite_insert(db, random_trace_id(rng), trace)
        db.execute("COMMIT")
        call_ns.append(clock() - t0)
    seconds = (clock() - started) / 1e9
    db.close()  # checkpoints the WAL into the database file
    return Run(len(traces), data.spans, data.json_bytes, seconds, call_ns, du(path))


def _pylmdb(data: Data, *, batch: bool) -> Run:
    """py-lmdb + msgspec (``baselines.PyLmdb``): a write transaction, fsynced, per trace or
    per ``data.batch`` traces."""
    traces = data.traces
    path = fresh(data.workdir, f"pylmdb-{'batch' if batch else 'call'}")
    store = PyLmdb(path)
    rng = random.Random(7)
    step = data.batch if batch else 1
    clock = time.perf_counter_ns
    call_ns = []
    started = clock()
    for first in range(0, len(traces), step):
        t0 = clock()
        store.write(traces[first : first + step], rng)
        call_ns.append(clock() - t0)
    seconds = (clock() - started) / 1e9
    store.close()
    return Run(len(traces), data.spans, data.json_bytes, seconds, call_ns, du(path / "data.mdb"))


def _ceiling(data: Data) -> Run:
    """py-lmdb appending records already encoded (outside the timing): no validation, no
    index, no ids, large transactions. What LMDB from Python can take at best."""
    if not data.encoded:
        data.encoded = [encoder.encode(t) for t in data.traces]
    records = data.encoded
    size = sum(len(r) for r in records) // len(records)
    step = max(1, min(10_000, CEILING_TXN_BYTES // size))
    path = fresh(data.workdir, "pylmdb-ceiling")
    env = lmdb.open(str(path), map_size=LMDB_MAP_SIZE, max_dbs=1)
    db = env.open_db(b"records")
    clock = time.perf_counter_ns
    call_ns = []
    started = clock()
    for first in range(0, len(records), step):
        t0 = clock()
        chunk = records[first : first + step]
        items = [((first + i).to_bytes(8, "big"), r) for i, r in enumerate(chunk)]
        with env.begin(write=True) as txn:
            txn.cursor(db).putmulti(items, append=True)
        call_ns.append(clock() - t0)
    seconds = (clock() - started) / 1e9
    env.close()
    run = Run(len(records), data.spans, data.json_bytes, seconds, call_ns, du(path / "data.mdb"))
    run.remark = f"{step:,} records per transaction"
    return run


def _disk_bandwidth(directory: Path, total: int) -> float:
    """Bytes per second writing ``total`` bytes sequentially in 1 MiB blocks, then one fsync:
    the disk's own limit for any store."""
    block = os.urandom(1 << 20)  # incompressible, should the disk compress
    path = directory / "sequential.bin"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(total // len(block)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    path.unlink()
    return total / seconds


LOG = "flightlog log()"
LOG_UNREDACTED = 'flightlog log(), redaction="off"'
LOG_MANY = "flightlog log_many(batch)"
SQLITE_CALL = "Iris-style SQLite, txn per trace, NORMAL"
SQLITE_FULL = "Iris-style SQLite, txn per trace, FULL"
SQLITE_BATCH = "Iris-style SQLite, batch per txn, NORMAL"
LMDB_CALL = "py-lmdb + msgspec, txn per trace"
LMDB_BATCH = "py-lmdb + msgspec, batch per txn"
CEILING = "py-lmdb append pre-encoded (ceiling)"

CONTENDERS: list[Contender] = [
    Contender(LOG, "flightlog", "trace", functools.partial(_flightlog_log, durability="group")),
    Contender(
        LOG_UNREDACTED,
        "flightlog",
        "trace",
        functools.partial(
            _flightlog_log, name="flightlog-log-noredact", durability="group", redaction="off"
        ),
    ),
    Contender(LOG_MANY, "flightlog", "batch", _flightlog_log_many),
    Contender("msgspec encode only (floor)", "floor", "trace", _encode_only),
    Contender("OpenTelemetry SDK, batch span processor", "floor", "trace", _otel),
    Contender(
        SQLITE_CALL,
        "baseline",
        "trace",
        functools.partial(_sqlite, synchronous="NORMAL", batch=False),
        cap=5000,
        quick_cap=100,
    ),
    Contender(
        SQLITE_FULL,
        "baseline",
        "trace",
        functools.partial(_sqlite, synchronous="FULL", batch=False),
        cap=2000,
        quick_cap=50,
    ),
    Contender(
        SQLITE_BATCH,
        "baseline",
        "batch",
        functools.partial(_sqlite, synchronous="NORMAL", batch=True),
    ),
    Contender(
        LMDB_CALL,
        "baseline",
        "trace",
        functools.partial(_pylmdb, batch=False),
        cap=2000,
        quick_cap=50,
    ),
    Contender(LMDB_BATCH, "baseline", "batch", functools.partial(_pylmdb, batch=True)),
    Contender(CEILING, "ceiling", "batch", _ceiling),
]


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Figures:
    """A contender's figures on one workload: medians over its runs."""

    name: str
    kind: Kind
    per_call: str
    traces: int
    traces_per_s: float
    spans_per_s: float
    json_mb_per_s: float
    p50_s: float
    p99_s: float
    p999_s: float
    bytes_per_trace: float | None
    remark: str


def _figures(contender: Contender, runs: list[Run], batch: int) -> Figures:
    def quantile(q: float) -> float:
        return median([percentile(r.call_ns, q) / 1e9 for r in runs])

    disk = [r.disk_bytes / r.traces for r in runs if r.disk_bytes is not None]
    per_call = {"trace": "1 trace", "batch": f"{batch:,} traces", "all": "all"}[contender.per_call]
    if contender.per_call == "batch" and runs[0].remark.endswith("per transaction"):
        per_call = runs[0].remark.split(" records")[0] + " traces"
    return Figures(
        name=contender.name,
        kind=contender.kind,
        per_call=per_call,
        traces=runs[0].traces,
        traces_per_s=median([r.traces / r.seconds for r in runs]),
        spans_per_s=median([r.spans / r.seconds for r in runs]),
        json_mb_per_s=median([r.json_bytes / r.seconds / 1e6 for r in runs]),
        p50_s=quantile(0.50),
        p99_s=quantile(0.99),
        p999_s=quantile(0.999),
        bytes_per_trace=median(disk) if disk else None,
        remark="; ".join(
            sorted({r.remark for r in runs if r.remark and contender.kind != "ceiling"})
        ),
    )


def _measure(
    data: Data, contenders: Sequence[Contender], repeat: int, disk_bytes: int
) -> tuple[list[Figures], float]:
    """Runs every contender ``repeat`` times, round-robin, and the disk test once per round.

    Returns the figures and the disk's sequential write bandwidth (bytes/s, median).
    """
    runs: dict[str, list[Run]] = {c.name: [] for c in contenders}
    bandwidth = []
    for round_ in range(repeat):
        for contender in contenders:
            run = contender.run(_capped(data, contender.quick_cap if data.quick else contender.cap))
            runs[contender.name].append(run)
            for leftover in data.workdir.iterdir():  # measured; free the disk for the next
                shutil.rmtree(leftover, ignore_errors=True)
            note(
                f"  [{data.workload.name} {round_ + 1}/{repeat}] {contender.name}: "
                f"{run.traces / run.seconds:,.0f} traces/s"
            )
        bandwidth.append(_disk_bandwidth(data.workdir, disk_bytes))
    figures = [_figures(c, runs[c.name], data.batch) for c in contenders]
    return figures, median(bandwidth)


def _capped(data: Data, cap: int | None) -> Data:
    """The first ``cap`` traces of a workload, for the slow contenders."""
    if cap is None or cap >= len(data.traces):
        return data
    traces = data.traces[:cap]
    json_bytes = round(data.json_bytes * cap / len(data.traces))
    return replace(
        data,
        traces=traces,
        spans=sum(len(t.spans) for t in traces),
        json_bytes=json_bytes,
        encoded=[],
    )


# --- report ----------------------------------------------------------------------------------


def _find(results: Sequence[Figures], name: str) -> Figures | None:
    return next((f for f in results if f.name == name), None)


def _workload_table(results: Sequence[Figures]) -> str:
    ours = _find(results, LOG)
    rows = []
    for f in results:
        disk = f"{f.bytes_per_trace:,.0f}" if f.bytes_per_trace is not None else MISSING
        ratio = f"{ours.traces_per_s / f.traces_per_s:,.2f}x" if ours else MISSING
        rows.append(
            [
                f.name,
                f"{f.traces:,}",
                f"{f.traces_per_s:,.0f}",
                f"{f.spans_per_s:,.0f}",
                f"{f.json_mb_per_s:,.1f}",
                f.per_call,
                duration(f.p50_s),
                duration(f.p99_s),
                duration(f.p999_s),
                disk,
                ratio,
                f.remark,
            ]
        )
    header = [
        "contender",
        "traces",
        "traces/s",
        "spans/s",
        "JSON MB/s",
        "call",
        "p50",
        "p99",
        "p99.9",
        "B/trace",
        "log() / this",
        "notes",
    ]
    return table(header, rows, "lrrrrlrrrrrl")


def _size_table(by_workload: dict[str, tuple[list[Figures], float]]) -> str:
    """flightlog log() against the main baselines on every workload: the size table."""
    rows = []
    for name, (results, _) in by_workload.items():
        ours = _find(results, LOG)
        if ours is None:
            continue
        row = [
            name,
            f"{ours.traces_per_s:,.0f}",
            f"{ours.json_mb_per_s:,.1f}",
            duration(ours.p99_s),
            f"{ours.bytes_per_trace:,.0f}" if ours.bytes_per_trace else MISSING,
        ]
        for other in (SQLITE_CALL, SQLITE_BATCH, LMDB_BATCH, CEILING):
            theirs = _find(results, other)
            row.append(f"{ours.traces_per_s / theirs.traces_per_s:,.2f}x" if theirs else MISSING)
        sqlite = _find(results, SQLITE_BATCH)
        row.append(
            f"{ours.bytes_per_trace / sqlite.bytes_per_trace:,.2f}x"
            if sqlite and ours.bytes_per_trace and sqlite.bytes_per_trace
            else MISSING
        )
        rows.append(row)
    header = [
        "workload",
        "log() traces/s",
        "JSON MB/s",
        "log() p99",
        "B/trace",
        "vs SQLite per trace",
        "vs SQLite batched",
        "vs py-lmdb batched",
        "vs ceiling",
        "bytes vs SQLite",
    ]
    return table(header, rows)


def _goals(results: Sequence[Figures]) -> list[Goal]:
    ours = _find(results, LOG)
    if ours is None:
        return []
    goals = [
        Goal(
            "log() standard traces/s, 1 thread, group", ours.traces_per_s, 100_000, "/s", "higher"
        ),
        Goal("log() p99", ours.p99_s, 50e-6, "s", "lower", "per call, writer committing"),
        Goal("log() p99.9", ours.p999_s, 1e-3, "s", "lower", "per call, writer committing"),
    ]
    for name, target, what in (
        (SQLITE_CALL, 25, "Iris-style SQLite per trace, NORMAL"),
        (LMDB_BATCH, 2, "py-lmdb batched"),
    ):
        theirs = _find(results, name)
        if theirs:
            goals.append(
                Goal(
                    f"log() vs {what}",
                    ours.traces_per_s / theirs.traces_per_s,
                    target,
                    "x",
                    "higher",
                    f"{ours.traces_per_s:,.0f} / {theirs.traces_per_s:,.0f} traces/s",
                )
            )
    unredacted = _find(results, LOG_UNREDACTED)
    if unredacted:
        # Secret scanning's share of log()'s time per trace (RELIABILITY.md test 13).
        goals.append(
            Goal(
                "secret scanning, share of log() time",
                max(0.0, 100 * (1 - ours.traces_per_s / unredacted.traces_per_s)),
                10,
                "%",
                "lower",
                f"{ours.traces_per_s:,.0f} vs {unredacted.traces_per_s:,.0f} traces/s off",
            )
        )
    sqlite = _find(results, SQLITE_BATCH)
    if sqlite and ours.bytes_per_trace and sqlite.bytes_per_trace:
        goals.append(
            Goal(
                "bytes on disk per trace vs SQLite",
                ours.bytes_per_trace / sqlite.bytes_per_trace,
                0.5,
                "x",
                "lower",
                f"{ours.bytes_per_trace:,.0f} / {sqlite.bytes_per_trace:,.0f} B",
            )
        )
    return goals


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its tables.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    count = QUICK_TRACES if args.quick else args.traces
    repeat = args.repeat or (1 if args.quick else 3)
    chosen = [w for w in WORKLOADS if w.name in (args.workload or [w.name for w in WORKLOADS])]
    contenders = [
        c
        for c in CONTENDERS
        if not args.only or any(o.lower() in c.name.lower() for o in args.only)
    ]
    disk_bytes = QUICK_DISK_BYTES if args.quick else DISK_BYTES
    started = time.perf_counter()
    report = Report("ingest")
    by_workload: dict[str, tuple[list[Figures], float]] = {}
    with workdir(args.dir, "flightlog-bench-ingest-") as base:
        print(machine(base, ("msgspec", "lmdb", "opentelemetry-sdk")) + "\n", flush=True)
        for workload in chosen:
            n = max(workload.minimum, round(count * workload.share))
            traces, gen_s = _generate(workload, n)
            json_sizes = [len(msgspec.json.encode(t)) for t in traces]
            data = Data(
                workload,
                traces,
                sum(len(t.spans) for t in traces),
                sum(json_sizes),
                base,
                args.quick,
            )
            # Full collections walking the objects of the pre-generated traces would land in
            # whichever timed call triggers them: an artefact of holding every trace in memory
            # at once, not of any store.
            gc.collect()
            gc.freeze()
            print(
                f"## {workload.name}: {n:,} {workload.about}\n\n"
                f"{sum(json_sizes) / n:,.0f} bytes as JSON on average, "
                f"{data.spans / n:,.0f} spans per trace; generated in {gen_s:,.1f} s; "
                f"batches of {workload.batch:,}; load average {load()} before timing\n",
                flush=True,
            )
            results, bandwidth = _measure(data, contenders, repeat, disk_bytes)
            by_workload[workload.name] = (results, bandwidth)
            print(_workload_table(results))
            ours = _find(results, LOG)
            implied = ""
            if ours and ours.bytes_per_trace:
                implied = (
                    f" = {bandwidth / ours.bytes_per_trace:,.0f} traces/s at flightlog's "
                    f"{ours.bytes_per_trace:,.0f} B/trace"
                )
            print(
                f"\ndisk sequential write ({disk_bytes >> 20} MiB in 1 MiB blocks, one fsync): "
                f"{bandwidth / 1e6:,.0f} MB/s{implied}; load average {load()} after timing\n",
                flush=True,
            )
            report.figures[workload.name] = {
                "traces": n,
                "json_bytes_per_trace": sum(json_sizes) / n,
                "disk_mb_per_s": bandwidth / 1e6,
                "contenders": {f.name: _as_dict(f) for f in results},
            }
            if workload.name == "standard":
                report.goals = _goals(results)
            del traces, data
            gc.unfreeze()
            gc.collect()
    if len(by_workload) > 1:
        print("## Sizes: flightlog log() on every workload (ratios: log() traces/s / theirs)\n")
        print(_size_table(by_workload) + "\n")
    if report.goals:
        print("## Goals (standard traces)\n")
        print(goals_table(report.goals) + "\n")
    print(f"whole run: {duration(time.perf_counter() - started)}, load average {load()}")
    report.write(args.json)
    return 0


def _as_dict(f: Figures) -> dict[str, Any]:
    return {k: v for k, v in vars(f).items() if k not in ("name", "kind")}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traces",
        type=int,
        default=100_000,
        help="standard traces to write (100000); the other workloads scale from it",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_TRACES} traces: a smoke test for CI"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs of every contender (3; 1 with --quick)"
    )
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: the temp directory)"
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=[w.name for w in WORKLOADS],
        help="run only this workload (repeatable; default: all)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the contenders whose name contains TEXT (repeatable)",
    )
    parser.add_argument("--json", default=None, help="also write the goals and figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

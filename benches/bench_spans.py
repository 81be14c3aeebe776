"""Span overhead: what instrumenting code with ``store.trace()`` / ``t.span()`` costs per
span, beside the OpenTelemetry SDK and the Python floor, in one run.

    python benches/bench_spans.py [--traces N] [--quick] [--repeat R] [--dir DIR]
                                  [--only TEXT ...] [--json PATH]

Workloads: traces of 1, 10 and 100 spans, the shape of an agent run: an ``AGENT`` span over
children that alternate ``LLM`` (``s.set()`` of two ``gen_ai.usage.*`` counts) and ``TOOL``
spans; every span is opened with a name, a kind and two attributes. ``--traces`` counts the
10-span traces; the 1-span workload runs as many, the 100-span one a tenth.

* flightlog: ``with store.trace(agent_name, input=...)`` (the ``running`` fragment), the
  spans, ``t.output = ...`` and the final fragment carrying every span; ``group``
  durability, the final ``flush()`` timed.
* flightlog ``@traced``: the same tree made of decorated functions (the AGENT span is the
  decorated call that starts the trace; each child a decorated call inside it), arguments
  and results captured.
* OpenTelemetry SDK: the trace as a root span (input and output as attributes) and
  ``start_as_current_span`` for every span, ``BatchSpanProcessor`` into an
  ``InMemorySpanExporter``: no storage at all. The final ``force_flush`` is timed.
* Python floor: a context manager that only sets and resets a ``ContextVar``, reads the
  clock twice and keeps a tuple per span: what any contextvar-based tracer pays at least.

The figure is wall time per span with each trace's own cost (its fragments, the OTel root
span) spread over its spans, so the 1-span workload shows the per-trace cost. Contenders
run round-robin ``--repeat`` times; each figure is the median of its runs. See
``benches/README.md``.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import flightlog
from common import (
    Goal,
    Report,
    duration,
    fresh,
    goals_table,
    load,
    machine,
    median,
    note,
    table,
    workdir,
)

SPAN_GOAL_S = 10e-6  # the issue: at most 10 µs per span from Python
QUICK_TRACES = 300
SHAPES = {"1 span": (1, 1.0), "10 spans": (10, 1.0), "100 spans": (100, 0.1)}
QUESTION = "Where is my order #4417? It was due on Tuesday and the tracking page is empty."
ANSWER = "Your order shipped on Wednesday; the carrier's tracking number is 1Z999AA10123456784."
MODEL = "gpt-4o-mini"
USAGE = {"gen_ai.usage.input_tokens": 412, "gen_ai.usage.output_tokens": 57}


@dataclass
class Run:
    """One contender's run: how long, and what it did (checked after timing)."""

    seconds: float
    spans: int
    remark: str = ""


Contender = Callable[[Path, int, int], Run]


# --- flightlog ---------------------------------------------------------------------------------


def _flightlog(workdir: Path, traces: int, spans: int) -> Run:
    store = flightlog.open(fresh(workdir, "flightlog"))
    try:
        started = time.perf_counter()
        for _ in range(traces):
            with store.trace("bench-agent", input=QUESTION) as t:
                with t.span("agent", kind="AGENT", model=MODEL, step=0):
                    for step in range(1, spans):
                        if step % 2:
                            with t.span("chat", kind="LLM", model=MODEL, step=step) as s:
                                s.set(USAGE)
                        else:
                            with t.span("search", kind="TOOL", model=MODEL, step=step):
                                pass
                t.output = ANSWER
        store.flush()
        seconds = time.perf_counter() - started
        return Run(seconds, traces * spans, _check_store(store, traces, spans))
    finally:
        store.close()


def _flightlog_traced(workdir: Path, traces: int, spans: int) -> Run:
    store = flightlog.open(fresh(workdir, "flightlog-traced"))

    @flightlog.traced(name="chat", kind="LLM")
    def chat(step: int) -> str:
        span = flightlog.current_span()
        assert span is not None
        span.set(USAGE)
        return ANSWER

    @flightlog.traced(name="search", kind="TOOL")
    def search(step: int) -> int:
        return step

    @flightlog.traced(agent_name="bench-agent", store=store)
    def agent(question: str) -> str:
        for step in range(1, spans):
            chat(step) if step % 2 else search(step)
        return ANSWER

    try:
        started = time.perf_counter()
        for _ in range(traces):
            agent(QUESTION)
        store.flush()
        seconds = time.perf_counter() - started
        # The decorated call that starts a trace is the trace, not a span of it.
        return Run(seconds, traces * spans, _check_store(store, traces, spans - 1))
    finally:
        store.close()


def _check_store(store: flightlog.Store, traces: int, spans: int) -> str:
    """What went missing, in words; empty when every trace and span is stored."""
    count = store.count(status="succeeded")
    last = store.query(limit=1).items
    got = last[0].span_count if last else 0
    problems = []
    if count != traces:
        problems.append(f"{traces - count:,} traces missing")
    if got != spans:
        problems.append(f"last trace has {got} of {spans} spans")
    return "; ".join(problems)


# --- OpenTelemetry -----------------------------------------------------------------------------


def _otel(workdir: Path, traces: int, spans: int) -> Run:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("flightlog-bench")
    internal, client = SpanKind.INTERNAL, SpanKind.CLIENT
    try:
        started = time.perf_counter()
        for _ in range(traces):
            with tracer.start_as_current_span(
                "bench-agent", attributes={"input.value": QUESTION}
            ) as root:
                with tracer.start_as_current_span(
                    "agent", kind=internal, attributes={"model": MODEL, "step": 0}
                ):
                    for step in range(1, spans):
                        attributes: dict[str, Any] = {"model": MODEL, "step": step}
                        if step % 2:
                            with tracer.start_as_current_span(
                                "chat", kind=client, attributes=attributes
                            ) as s:
                                s.set_attributes(USAGE)
                        else:
                            with tracer.start_as_current_span(
                                "search", kind=internal, attributes=attributes
                            ):
                                pass
                root.set_attribute("output.value", ANSWER)
        provider.force_flush()
        seconds = time.perf_counter() - started
        exported = len(exporter.get_finished_spans())
    finally:
        provider.shutdown()
        exporter.clear()
    expected = traces * (spans + 1)
    remark = "" if exported == expected else f"{expected - exported:,} spans dropped"
    return Run(seconds, traces * spans, remark)


# --- the floor ---------------------------------------------------------------------------------

_floor_current: contextvars.ContextVar[Any] = contextvars.ContextVar("floor", default=None)


class _FloorSpan:
    """The least a contextvar-based span can do: remember its parent, time itself."""

    __slots__ = ("attributes", "finished", "name", "parent", "start", "token")

    def __init__(self, finished: list[tuple[Any, ...]], name: str, **attributes: Any) -> None:
        self.finished = finished
        self.name = name
        self.attributes = attributes

    def set(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def __enter__(self) -> _FloorSpan:
        self.parent = _floor_current.get()
        self.token = _floor_current.set(self)
        self.start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time.perf_counter()
        _floor_current.reset(self.token)
        self.finished.append((self.name, self.parent, self.start, end, self.attributes))


def _floor(workdir: Path, traces: int, spans: int) -> Run:
    finished: list[tuple[Any, ...]] = []
    started = time.perf_counter()
    for _ in range(traces):
        with _FloorSpan(finished, "agent", model=MODEL, step=0):
            for step in range(1, spans):
                if step % 2:
                    with _FloorSpan(finished, "chat", model=MODEL, step=step) as s:
                        s.set(USAGE)
                else:
                    with _FloorSpan(finished, "search", model=MODEL, step=step):
                        pass
    seconds = time.perf_counter() - started
    remark = "" if len(finished) == traces * spans else "spans missing"
    return Run(seconds, traces * spans, remark)


FLIGHTLOG = "flightlog trace() + span()"
OTEL = "OpenTelemetry SDK, batch + in-memory"
CONTENDERS: dict[str, Contender] = {
    FLIGHTLOG: _flightlog,
    "flightlog @traced": _flightlog_traced,
    OTEL: _otel,
    "Python floor (ContextVar + clock)": _floor,
}


# --- measuring and reporting -------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    per_span_s: float
    spans_per_s: float
    remark: str


def _measure(
    workdir: Path, names: list[str], traces: int, spans: int, repeat: int
) -> list[Figures]:
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names:
            note(f"  {name}: run {round_ + 1} of {repeat}")
            gc.collect()
            runs[name].append(CONTENDERS[name](workdir, traces, spans))
    figures = []
    for name, done in runs.items():
        seconds = median([r.seconds for r in done])
        count = done[0].spans
        remarks = sorted({r.remark for r in done if r.remark})
        figures.append(Figures(name, seconds / count, count / seconds, "; ".join(remarks)))
    return figures


def _table(figures: list[Figures]) -> str:
    otel = next((f for f in figures if f.name == OTEL), None)
    rows = []
    for f in figures:
        ratio = f"{otel.per_span_s / f.per_span_s:,.2f}x" if otel else "\u2013"
        rows.append([f.name, duration(f.per_span_s), f"{f.spans_per_s:,.0f}", ratio, f.remark])
    return table(
        ["contender", "per span", "spans/s", "vs OTel SDK (its time / this)", "remark"],
        rows,
        "lrrrl",
    )


def _goals(figures: list[Figures]) -> list[Goal]:
    ours = next((f for f in figures if f.name == FLIGHTLOG), None)
    if ours is None:
        return []
    otel = next((f for f in figures if f.name == OTEL), None)
    how = "10-span traces, fragments and flush included"
    if otel:
        how += f"; OTel SDK {duration(otel.per_span_s)} ({otel.per_span_s / ours.per_span_s:.2f}x)"
    return [
        Goal("per-span overhead, trace() + span()", ours.per_span_s, SPAN_GOAL_S, "s", "lower", how)
    ]


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its tables.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    count = QUICK_TRACES if args.quick else args.traces
    repeat = args.repeat or (1 if args.quick else 5)
    names = [
        name
        for name in CONTENDERS
        if not args.only or any(o.lower() in name.lower() for o in args.only)
    ]
    started = time.perf_counter()
    report = Report("spans")
    with workdir(args.dir, "flightlog-bench-spans-") as base:
        print(machine(base, ("msgspec", "opentelemetry-sdk")) + "\n", flush=True)
        for shape, (spans, share) in SHAPES.items():
            traces = max(10, round(count * share))
            print(
                f"## {shape} per trace: {traces:,} traces, {traces * spans:,} spans; "
                f"load average {load()} before timing\n",
                flush=True,
            )
            figures = _measure(base, names, traces, spans, repeat)
            print(_table(figures) + "\n")
            print(f"load average {load()} after timing\n", flush=True)
            report.figures[shape] = {
                f.name: {"per_span_s": f.per_span_s, "spans_per_s": f.spans_per_s} for f in figures
            }
            if spans == 10:
                report.goals = _goals(figures)
    if report.goals:
        print("## Goals\n")
        print(goals_table(report.goals) + "\n")
    print(f"whole run: {duration(time.perf_counter() - started)}, load average {load()}")
    report.write(args.json)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traces",
        type=int,
        default=20_000,
        help="10-span traces per run (20000); the other shapes scale from it",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_TRACES} traces, one run: a smoke test"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs of every contender (5; 1 with --quick)"
    )
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: the temp directory)"
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

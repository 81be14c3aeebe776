"""The ``flightlog`` command line.

Each command is one ``_add_<command>`` function that registers its subparser and sets
``run`` to the function carrying it out; :func:`main` only parses and dispatches. Heavy or
optional imports (the sample generator, ``rich``) happen inside the command that needs them,
so ``flightlog --help`` stays fast and works without the ``cli`` extra.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import flightlog
from flightlog.records import UNSET, Span, Trace

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

__all__ = ["main"]

_RICH_MISSING = "flightlog: this command needs rich; install it with: pip install 'flightlog[cli]'"


def main(argv: list[str] | None = None) -> int:
    """Runs the ``flightlog`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit status: 0 on success, 2 on a usage error or a missing optional dependency.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flightlog", description="The flight recorder for AI agents."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    return parser


# --- demo -----------------------------------------------------------------------------------

_DEMO_TRACES = 300
_DEMO_CHUNK = 100


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="log sample agent traces, read them back and show what was stored",
        description=(
            f"Logs {_DEMO_TRACES} realistic sample agent traces into a store, reads every one "
            "back and summarizes them, then shows one failed trace as a span tree."
        ),
    )
    demo.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="the store directory (default: a new temporary directory, kept afterwards)",
    )
    demo.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of tables"
    )
    demo.set_defaults(run=_run_demo)


@dataclass
class _Summary:
    """What ``flightlog demo`` stored, computed from the traces read back."""

    path: str
    traces: int
    agents: int
    spans: int
    tool_calls: int
    failed: int
    error_rate: float
    total_tokens: int
    cost_usd: float
    latency_p50_ms: float
    latency_p95_ms: float
    ingest_traces_per_s: float
    read_traces_per_s: float
    store_bytes: int
    shown_trace_id: str
    trace_ids: list[str]


def _run_demo(args: argparse.Namespace) -> int:
    if not args.json:
        try:
            import rich  # noqa: F401 - checked before anything is written
        except ImportError:
            print(_RICH_MISSING, file=sys.stderr)
            return 2
    from flightlog.sample import sample_traces

    path: Path = args.path or Path(tempfile.mkdtemp(prefix="flightlog-demo-"))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    stored, ingest_s, read_s = _log_and_read_back(path, sample_traces(_DEMO_TRACES, base=now))
    shown = _interesting(stored)
    summary = _summarize(stored, path, ingest_s, read_s, shown)
    if args.json:
        print(json.dumps(asdict(summary), indent=2))
    else:
        _print_demo(summary, stored, shown, temporary=args.path is None)
    return 0


def _log_and_read_back(path: Path, traces: list[Trace]) -> tuple[list[Trace], float, float]:
    """Logs the traces in chunks, flushes, and gets each back by id.

    Returns:
        The traces as stored, the seconds spent logging and flushing, and reading.
    """
    with flightlog.open(path) as store:
        started = time.perf_counter()
        ids: list[str] = []
        for first in range(0, len(traces), _DEMO_CHUNK):
            ids += store.log_many(traces[first : first + _DEMO_CHUNK])
        store.flush()
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        stored = [store.get(trace_id) for trace_id in ids]
        return stored, ingest_s, time.perf_counter() - started


def _summarize(
    traces: list[Trace], path: Path, ingest_s: float, read_s: float, shown: Trace
) -> _Summary:
    """Aggregates the traces as read back from the store."""
    latencies = sorted(t.latency_ms for t in traces if t.latency_ms is not UNSET)
    failed = sum(t.status == "failed" for t in traces)
    return _Summary(
        path=str(path),
        traces=len(traces),
        agents=len({t.agent_name for t in traces}),
        spans=sum(len(t.spans) for t in traces),
        tool_calls=sum(len(t.tool_calls) for t in traces),
        failed=failed,
        error_rate=failed / len(traces) if traces else 0.0,
        total_tokens=sum(_total_tokens(t) for t in traces),
        cost_usd=round(sum(t.cost_usd for t in traces if t.cost_usd is not UNSET), 6),
        latency_p50_ms=_percentile(latencies, 0.50),
        latency_p95_ms=_percentile(latencies, 0.95),
        ingest_traces_per_s=len(traces) / ingest_s if ingest_s else 0.0,
        read_traces_per_s=len(traces) / read_s if read_s else 0.0,
        store_bytes=_disk_bytes(path),
        shown_trace_id=_trace_id(shown),
        trace_ids=[_trace_id(t) for t in traces],
    )


def _total_tokens(trace: Trace) -> int:
    usage = trace.token_usage
    if usage is UNSET or usage.total_tokens is UNSET:
        return 0
    return usage.total_tokens


def _trace_id(trace: Trace) -> str:
    # Traces read back from the store always carry their id.
    return trace.trace_id if trace.trace_id is not UNSET else ""


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _disk_bytes(path: Path) -> int:
    """Bytes allocated on disk (like ``du``): LMDB's data file may be sparse."""
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


def _interesting(traces: list[Trace]) -> Trace:
    """A failed trace small enough to draw, preferring one with agent events."""
    failed = [t for t in traces if t.status == "failed" and len(t.spans) <= 12]
    return max(failed, key=lambda t: (len(t.spans), len(t.events)), default=traces[0])


def _print_demo(summary: _Summary, traces: list[Trace], shown: Trace, *, temporary: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = Console()
    note = " (a new temporary directory, kept: delete it when done)" if temporary else ""
    console.print(f"[bold]flightlog demo[/] - store at [cyan]{escape(summary.path)}[/]{note}")
    table = Table(title="Stored and read back", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in _summary_rows(summary):
        table.add_row(label, value)
    console.print(table)
    console.print(_agents_table(traces))
    console.print(_span_tree(shown))
    for call in shown.tool_calls:
        if call.error is not UNSET:
            console.print(Text.assemble((f"tool {call.tool_name} failed: ", "red"), call.error))


def _summary_rows(s: _Summary) -> list[tuple[str, str]]:
    return [
        ("traces", f"{s.traces:,}"),
        ("agents", f"{s.agents}"),
        ("spans", f"{s.spans:,}"),
        ("tool calls", f"{s.tool_calls:,}"),
        ("failed", f"{s.failed} ({s.error_rate:.1%})"),
        ("tokens", f"{s.total_tokens:,}"),
        ("cost", f"${s.cost_usd:,.2f}"),
        ("latency p50 / p95", f"{s.latency_p50_ms:,.0f} / {s.latency_p95_ms:,.0f} ms"),
        ("ingest (log_many + flush)", f"{s.ingest_traces_per_s:,.0f} traces/s"),
        ("read back (get)", f"{s.read_traces_per_s:,.0f} traces/s"),
        ("on disk", f"{s.store_bytes / 1e6:,.1f} MB"),
    ]


def _agents_table(traces: list[Trace]) -> Table:
    from rich.table import Table

    counts = Counter(t.agent_name for t in traces)
    failures = Counter(t.agent_name for t in traces if t.status == "failed")
    table = Table(title="Busiest agents", title_justify="left")
    table.add_column("agent")
    table.add_column("traces", justify="right")
    table.add_column("failed", justify="right")
    for agent, count in counts.most_common(5):
        failed = failures[agent]
        table.add_row(agent, str(count), f"[red]{failed}[/]" if failed else "0")
    return table


def _span_tree(trace: Trace) -> Tree:
    """The trace's spans nested by ``parent_span_id``, in the order they were logged."""
    from rich.tree import Tree

    colour = "red" if trace.status == "failed" else "green"
    tree = Tree(f"[bold]trace {_trace_id(trace)}[/] {trace.agent_name} [{colour}]{trace.status}[/]")
    known = {s.span_id for s in trace.spans}
    children: dict[str | None, list[Span]] = {}
    for span in trace.spans:
        parent = span.parent_span_id
        key = parent if isinstance(parent, str) and parent in known else None
        children.setdefault(key, []).append(span)
    _grow(tree, None, children)
    return tree


def _grow(node: Tree, parent: str | None, children: dict[str | None, list[Span]]) -> None:
    for span in children.get(parent, []):
        branch = node.add(_span_label(span))
        if isinstance(span.span_id, str):
            _grow(branch, span.span_id, children)


def _span_label(span: Span) -> Text:
    """One line: kind, name, duration, tokens and cost for LLM spans, the error in red."""
    from rich.text import Text

    label = Text()
    label.append(f"{span.kind if span.kind is not UNSET else 'SPAN':<8}", style="dim")
    label.append(span.name, style="bold")
    if span.duration_ms is not UNSET:
        label.append(f"  {span.duration_ms:,.0f} ms")
    attrs = span.attributes
    if "gen_ai.usage.input_tokens" in attrs:
        label.append(
            f"  {attrs['gen_ai.usage.input_tokens']:,} -> "
            f"{attrs.get('gen_ai.usage.output_tokens', 0):,} tokens",
            style="cyan",
        )
    if "gen_ai.usage.cost" in attrs:
        label.append(f"  ${attrs['gen_ai.usage.cost']:.4f}", style="cyan")
    if span.status_code == "ERROR":
        message = span.status_message if span.status_message is not UNSET else ""
        label.append(f"  ERROR {message}", style="bold red")
    return label

"""The ``flightlog`` command line.

Each command is one ``_add_<command>`` function that registers its subparser and sets
``run`` to the function carrying it out; :func:`main` only parses and dispatches. Heavy or
optional imports (the sample generator, ``rich``) happen inside the command that needs them,
so ``flightlog --help`` stays fast and works without the ``cli`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

import flightlog
from flightlog import testruns
from flightlog.records import (
    UNSET,
    DecisionEvent,
    DecisionTrace,
    Span,
    Stats,
    Trace,
    TraceSummary,
    UnsetType,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

__all__ = ["main"]

_RICH_MISSING = "flightlog: this command needs rich; install it with: pip install 'flightlog[cli]'"
_STATUS_STYLES = {"running": "yellow", "succeeded": "green", "failed": "bold red"}


def main(argv: list[str] | None = None) -> int:
    """Runs the ``flightlog`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit status: 0 on success; 1 when the command failed (no such trace, a store
        that cannot be opened, ``check`` found problems); 2 on a usage error (including a
        bad filter value) or a missing optional dependency.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.run(args)
    except BrokenPipeError:  # the reader went away (`flightlog ls --json | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flightlog", description="The flight recorder for AI agents."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    _add_ls(commands)
    _add_show(commands)
    _add_stats(commands)
    _add_rm(commands)
    _add_check(commands)
    _add_compact(commands)
    _add_export(commands)
    _add_import(commands)
    _add_tail(commands)
    _add_decision(commands)
    _add_decisions(commands)
    _add_tests(commands)
    return parser


Run = Callable[[argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _command(run: Run, *, needs_rich: bool = True) -> Run:
    """Wraps a command: checks for ``rich`` unless ``--json`` asks for no tables, and turns
    flightlog's errors into a message on stderr and an exit status (see :func:`main`)."""

    def guarded(args: argparse.Namespace) -> int:
        if needs_rich and not args.json and not _has_rich():
            print(_RICH_MISSING, file=sys.stderr)
            return 2
        try:
            return run(args)
        except flightlog.ValidationError as exc:
            return _usage_error(str(exc))
        except flightlog.FlightlogError as exc:
            print(f"flightlog: {exc}", file=sys.stderr)
            return 1

    return guarded


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401 - only checks that the cli extra is installed
    except ImportError:
        return False
    return True


def _usage_error(message: str) -> int:
    print(f"flightlog: {message}", file=sys.stderr)
    return 2


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        type=Path,
        metavar="PATH",
        help="the store directory (default: $FLIGHTLOG_PATH, else ./.flightlog)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _open(args: argparse.Namespace, *, readonly: bool) -> flightlog.Store:
    return flightlog.open(args.path, readonly=readonly)


def _print_json(value: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _console() -> Console:
    from rich.console import Console

    return Console()


# --- demo -----------------------------------------------------------------------------------

_DEMO_TRACES = 300
_DEMO_CHUNK = 100


def _add_demo(commands: Commands) -> None:
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
    demo.set_defaults(run=_command(_run_demo))


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
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    note = " (a new temporary directory, kept: delete it when done)" if temporary else ""
    console.print(f"[bold]flightlog demo[/] - store at [cyan]{escape(summary.path)}[/]{note}")
    table = Table(title="Stored and read back", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in _summary_rows(summary):
        table.add_row(label, value)
    console.print(table)
    console.print(_agents_table(traces))
    _print_trace(console, shown)


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


def _print_trace(console: Console, trace: Trace) -> None:
    """The span tree, then each failed tool call in red."""
    from rich.text import Text

    console.print(_span_tree(trace))
    for call in trace.tool_calls:
        if call.error is not UNSET:
            console.print(Text.assemble((f"tool {call.tool_name} failed: ", "red"), call.error))


def _span_tree(trace: Trace) -> Tree:
    """The trace's spans nested by ``parent_span_id``, in the order they were logged."""
    from rich.text import Text
    from rich.tree import Tree

    root = Text.assemble((f"trace {_trace_id(trace)}", "bold"), " ", trace.agent_name)
    if trace.status is not UNSET:
        root.append(f" {trace.status}", style=_STATUS_STYLES[trace.status])
    tree = Tree(root)
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
    label.append(f"{span.kind if span.kind is not UNSET else 'SPAN':<7} ", style="dim")
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


# --- filters shared by ls, stats and rm -----------------------------------------------------

# option dest -> Store filter name
_FILTER_OPTIONS = {
    "agent": "agent_name",
    "framework": "framework",
    "status": "status",
    "run_id": "run_id",
    "session_id": "session_id",
    "tag": "tag",
    "since": "since",
    "until": "until",
    "errors": "has_errors",
}

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "filters", "All given filters must hold; a repeated option matches any of its values."
    )
    for flag, what in [
        ("--agent", "agent name"),
        ("--framework", "framework"),
        ("--run-id", "run id"),
        ("--session-id", "session id"),
        ("--tag", "tag"),
    ]:
        group.add_argument(flag, action="append", metavar="VALUE", help=f"traces with this {what}")
    group.add_argument(
        "--status",
        action="append",
        choices=["running", "succeeded", "failed"],
        help="traces with this status",
    )
    when = "an ISO-8601 time (UTC unless it says), epoch seconds, or an age like 90m, 2h, 7d"
    group.add_argument(
        "--since", type=_instant, metavar="WHEN", help=f"traces started at or after: {when}"
    )
    group.add_argument(
        "--until", type=_instant, metavar="WHEN", help=f"traces started before: {when}"
    )
    group.add_argument(
        "--errors",
        action=argparse.BooleanOptionalAction,
        help="only traces with errors (failed, an ERROR span or a tool error); --no-errors: "
        "only traces without",
    )


def _instant(text: str) -> dt.datetime | float | str:
    """An age (``2h``: that long ago) as a datetime, a number as epoch seconds, else the text
    itself for the store to parse as ISO-8601 (it refuses anything else)."""
    age = _AGE.fullmatch(text)
    if age:
        delta = dt.timedelta(**{_AGE_UNITS[age[2]]: float(age[1])})
        return dt.datetime.now(dt.timezone.utc) - delta
    try:
        return float(text)
    except ValueError:
        return text


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The store filters named by the filter options that were given."""
    given = {name: getattr(args, dest) for dest, name in _FILTER_OPTIONS.items()}
    return {name: value for name, value in given.items() if value is not None}


def _number(value: float | UnsetType | None, unit: str = "", *, money: bool = False) -> str:
    """A value for a table cell; ``-`` when it was not reported."""
    if value is None or value is UNSET:
        return "-"
    return f"${value:,.4f}" if money else f"{value:,.0f}{unit}"


# --- ls -------------------------------------------------------------------------------------


def _add_ls(commands: Commands) -> None:
    ls = commands.add_parser(
        "ls",
        help="list traces, newest first",
        description="Lists the traces matching the filters, newest first.",
    )
    _add_filter_options(ls)
    ls.add_argument(
        "--limit", type=int, default=20, metavar="N", help="list at most N traces (1-1000)"
    )
    _add_store_options(ls)
    ls.set_defaults(run=_command(_run_ls))


def _run_ls(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        page = store.query(**_filters(args), limit=args.limit)
    if args.json:
        _print_json(page.items)
        return 0
    console = _console()
    columns = _LS_COLUMNS if console.width >= _LS_WIDE else _LS_COLUMNS[:4]
    console.print(_summaries_table(page.items, columns, more=page.next_cursor is not None))
    return 0


_LS_COLUMNS = ("started (UTC)", "trace id", "agent", "status", "latency", "tokens", "cost", "spans")
_LS_WIDE = 116  # terminal columns that fit every column of ``ls``; else only the first four


def _summaries_table(items: Sequence[TraceSummary], columns: Sequence[str], *, more: bool) -> Table:
    from rich.table import Table

    title = f"{len(items)} traces, newest first" if items else "no traces match"
    if more:
        title += " (more with a larger --limit)"
    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for heading in columns:
        numeric = heading in ("latency", "tokens", "cost", "spans")
        table.add_column(
            heading, no_wrap=heading != "agent", justify="right" if numeric else "left"
        )
    for item in items:
        cells = _summary_cells(item)
        table.add_row(*(cells[heading] for heading in columns))
    return table


def _summary_cells(item: TraceSummary) -> dict[str, str | Text]:
    """One ``ls`` row by column heading; a status with errors is marked in red."""
    from rich.text import Text

    status = Text(item.status if item.status is not UNSET else "-")
    if item.status is not UNSET:
        status.stylize(_STATUS_STYLES[item.status])
    if item.has_errors and item.status != "failed":
        status.append(" errors", style="bold red")
    tokens = item.token_usage.total_tokens if item.token_usage is not UNSET else UNSET
    return {
        "started (UTC)": item.timestamp.strftime("%m-%d %H:%M:%S"),
        "trace id": item.trace_id,
        "agent": item.agent_name,
        "status": status,
        "latency": _number(item.latency_ms, " ms"),
        "tokens": _number(tokens),
        "cost": _number(item.cost_usd, money=True),
        "spans": str(item.span_count),
    }


# --- show -----------------------------------------------------------------------------------


def _add_show(commands: Commands) -> None:
    show = commands.add_parser(
        "show",
        help="show one trace as a span tree",
        description="Shows a trace: its totals, then its spans as a tree with durations, "
        "tokens and cost, errors in red.",
    )
    show.add_argument("trace_id", metavar="ID", help="the trace id (32 hex characters)")
    _add_store_options(show)
    show.set_defaults(run=_command(_run_show))


def _run_show(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        trace = store.get(args.trace_id)
    if args.json:
        _print_json(trace)
    else:
        console = _console()
        console.print(_trace_table(trace))
        _print_trace(console, trace)
    return 0


def _trace_table(trace: Trace) -> Table:
    """The trace's reported scalars, one per row."""
    from rich.table import Table

    usage = trace.token_usage
    rows = {
        "started": _when(trace.timestamp),
        "ended": _when(trace.ended_at),
        "framework": trace.framework,
        "run id": trace.run_id,
        "request id": trace.request_id,
        "session id": trace.session_id,
        "latency": _number(trace.latency_ms, " ms") if trace.latency_ms is not UNSET else UNSET,
        "tokens": (
            f"{_number(usage.prompt_tokens)} -> {_number(usage.completion_tokens)} "
            f"({_number(usage.total_tokens)} total)"
            if usage is not UNSET
            else UNSET
        ),
        "cost": _number(trace.cost_usd, money=True) if trace.cost_usd is not UNSET else UNSET,
        "tags": ", ".join(trace.tags) or UNSET,
    }
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows.items():
        if value is not UNSET:
            table.add_row(label, str(value))
    return table


def _when(value: dt.datetime | UnsetType) -> str | UnsetType:
    if isinstance(value, UnsetType):
        return value
    return value.isoformat(sep=" ", timespec="milliseconds")


# --- stats ----------------------------------------------------------------------------------

_GROUP_BY = ["agent_name", "framework", "status", "run_id", "request_id", "session_id"]


def _add_stats(commands: Commands) -> None:
    stats = commands.add_parser(
        "stats",
        help="count traces, errors, tokens, cost and latency percentiles",
        description="Aggregates the traces matching the filters, overall and optionally per "
        "value of one field.",
    )
    _add_filter_options(stats)
    stats.add_argument("--group-by", choices=_GROUP_BY, help="also aggregate per value of this")
    _add_store_options(stats)
    stats.set_defaults(run=_command(_run_stats))


def _run_stats(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        stats = store.stats(**_filters(args), group_by=args.group_by)
    if args.json:
        _print_json(stats)
        return 0
    console = _console()
    console.print(_stats_table(stats))
    if stats.top_agents:
        console.print(_top_agents_table(stats))
    if args.group_by:
        console.print(_groups_table(stats, args.group_by))
    return 0


def _stats_table(stats: Stats) -> Table:
    from rich.table import Table

    table = Table(title="Matching traces", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("traces", f"{stats.count:,}")
    table.add_row("with errors", f"{stats.error_count:,} ({stats.error_rate:.1%})")
    table.add_row(
        "tokens (prompt / completion / total)",
        f"{stats.prompt_tokens:,} / {stats.completion_tokens:,} / {stats.total_tokens:,}",
    )
    table.add_row(
        "cost (total / mean)",
        f"{_number(stats.cost_usd, money=True)} / {_number(stats.mean_cost_usd, money=True)}",
    )
    table.add_row("latency p50 / p95 / p99", _percentiles(stats))
    return table


def _percentiles(stats: Stats) -> str:
    values = (stats.latency_p50_ms, stats.latency_p95_ms, stats.latency_p99_ms)
    return " / ".join(_number(v) for v in values) + " ms"


def _top_agents_table(stats: Stats) -> Table:
    from rich.table import Table

    table = Table(title="Busiest agents", title_justify="left")
    table.add_column("agent")
    table.add_column("traces", justify="right")
    for agent, count in stats.top_agents:
        table.add_row(agent, f"{count:,}")
    return table


def _groups_table(stats: Stats, group_by: str) -> Table:
    from rich.table import Table

    table = Table(title=f"By {group_by}", title_justify="left")
    table.add_column(group_by)
    for heading in ("traces", "errors", "tokens", "cost", "latency p50 / p95 / p99"):
        table.add_column(heading, justify="right")
    for value, group in sorted(stats.groups.items(), key=lambda item: -item[1].count):
        errors = f"{group.error_count:,} ({group.error_rate:.1%})"
        table.add_row(
            value,
            f"{group.count:,}",
            f"[red]{errors}[/]" if group.error_count else errors,
            f"{group.total_tokens:,}",
            _number(group.cost_usd, money=True),
            _percentiles(group),
        )
    return table


# --- rm -------------------------------------------------------------------------------------


def _add_rm(commands: Commands) -> None:
    rm = commands.add_parser(
        "rm",
        help="delete traces by id, or every trace matching --where filters",
        description="Deletes the given traces, or with --where every trace matching the "
        "filter options (at least one is required). Deleted bytes stay in the file until "
        "`flightlog compact` writes a copy without them.",
    )
    rm.add_argument("trace_ids", nargs="*", metavar="ID", help="trace ids to delete")
    rm.add_argument(
        "--where", action="store_true", help="delete every trace matching the filter options"
    )
    _add_filter_options(rm)
    _add_store_options(rm)
    rm.set_defaults(run=_command(_run_rm, needs_rich=False))


def _run_rm(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if args.where and args.trace_ids:
        return _usage_error("rm: give trace ids or --where with filters, not both")
    if args.where and not filters:
        return _usage_error("rm --where needs at least one filter option")
    if not args.where and filters:
        return _usage_error("rm: filter options need --where")
    if not args.trace_ids and not args.where:
        return _usage_error("rm: give trace ids, or --where with filter options")
    with _open(args, readonly=False) as store:
        if args.where:
            deleted = store.delete_where(**filters)
            missing: list[str] = []
        else:
            missing = [tid for tid in args.trace_ids if not store.delete(tid)]
            deleted = len(args.trace_ids) - len(missing)
    if args.json:
        _print_json({"deleted": deleted, "missing": missing})
    else:
        print(f"deleted {deleted} trace{'' if deleted == 1 else 's'}")
    for trace_id in missing:
        print(f"flightlog: no trace {trace_id}", file=sys.stderr)
    return 1 if missing else 0


# --- check ----------------------------------------------------------------------------------


def _add_check(commands: Commands) -> None:
    check = commands.add_parser(
        "check",
        help="verify the store's records and indexes",
        description="Verifies that every record decodes, every trace is indexed and every "
        "index entry points at a live trace. Exits with 1 when it finds problems.",
    )
    _add_store_options(check)
    check.set_defaults(run=_command(_run_check, needs_rich=False))


def _run_check(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        report = store.check()
    if args.json:
        _print_json(report)
    else:
        print(
            f"checked {report.traces:,} traces, {report.records:,} records, "
            f"{report.index_entries:,} index entries, {report.decisions:,} decisions"
        )
        for problem in report.problems:
            print(f"problem: {problem}")
        print("ok" if report.ok else f"{len(report.problems)} problems")
    return 0 if report.ok else 1


# --- compact --------------------------------------------------------------------------------


def _add_compact(commands: Commands) -> None:
    compact = commands.add_parser(
        "compact",
        help="write a compacted copy of the store",
        description="Writes a copy of the store without free pages or deleted bytes into "
        "DEST; the store itself is left as it is.",
    )
    compact.add_argument("dest", type=Path, metavar="DEST", help="the directory to write into")
    _add_store_options(compact)
    compact.set_defaults(run=_command(_run_compact, needs_rich=False))


def _run_compact(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        dest = store.compact(args.dest)
        source = store.path
    before, after = _disk_bytes(source), _disk_bytes(dest)
    if args.json:
        _print_json({"path": str(source), "bytes": before, "dest": str(dest), "dest_bytes": after})
    else:
        print(f"compacted {source} ({before / 1e6:,.1f} MB) into {dest} ({after / 1e6:,.1f} MB)")
    return 0


# --- export / import -----------------------------------------------------------------------


def _add_export(commands: Commands) -> None:
    export = commands.add_parser(
        "export",
        help="write traces as JSON Lines",
        description="Writes every trace matching the filters as JSON Lines, oldest first: one "
        "merged trace per line, as `flightlog show --json` prints it. `flightlog import` reads "
        "it back.",
    )
    _add_filter_options(export)
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )
    _add_store_options(export)
    export.set_defaults(run=_command(_run_export, needs_rich=False))


def _run_export(args: argparse.Namespace) -> int:
    from flightlog.jsonl import export_traces

    with _open(args, readonly=True) as store:
        if args.output is None:
            written = export_traces(store, sys.stdout.buffer, **_filters(args))
        else:
            with open(args.output, "wb") as out:
                written = export_traces(store, out, _progress("exported"), **_filters(args))
    _done(f"exported {written:,} trace{'' if written == 1 else 's'}", args)
    return 0


def _add_import(commands: Commands) -> None:
    import_ = commands.add_parser(
        "import",
        help="log the traces of a JSON Lines export",
        description="Logs the traces of a `flightlog export` file into the store. Traces the "
        "store already has are skipped, so an interrupted import can be run again.",
    )
    import_.add_argument("file", metavar="FILE", help="the export to read; - for stdin")
    _add_store_options(import_)
    import_.set_defaults(run=_command(_run_import, needs_rich=False))


def _run_import(args: argparse.Namespace) -> int:
    from flightlog.jsonl import import_traces

    with contextlib.ExitStack() as stack:
        if args.file == "-":
            source, progress = sys.stdin.buffer, None
        else:
            try:
                source = stack.enter_context(open(args.file, "rb"))
            except OSError as exc:
                print(f"flightlog: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
                return 1
            progress = _progress("read", "lines")
        with _open(args, readonly=False) as store:
            counts = import_traces(store, source, progress)
    if args.json:
        _print_json(counts._asdict())
    else:
        _done(f"imported {counts.logged:,} traces ({counts.skipped:,} already present)", args)
    return 0


def _progress(verb: str, what: str = "traces") -> Callable[[int], None] | None:
    """A progress line on stderr when it is a terminal, else nothing."""
    if not sys.stderr.isatty():
        return None

    def show(count: int) -> None:
        print(f"\r{verb} {count:,} {what}", end="", file=sys.stderr, flush=True)

    return show


def _done(message: str, args: argparse.Namespace) -> None:
    """The closing line of a long command: on stderr (stdout may carry the data)."""
    if sys.stderr.isatty():
        print("\r", end="", file=sys.stderr)
    if not args.json:
        print(message, file=sys.stderr)


# --- tail -----------------------------------------------------------------------------------


def _add_tail(commands: Commands) -> None:
    tail = commands.add_parser(
        "tail",
        help="follow traces as they are logged",
        description="Prints the traces matching the filters as they reach the store, and "
        "again when their status changes (running -> succeeded), until interrupted. It "
        "follows traces by start time: one that reaches the store more than --lag after it "
        "started is not shown.",
    )
    _add_filter_options(tail)
    tail.add_argument(
        "--lag",
        type=_seconds,
        default=60.0,
        metavar="AGE",
        help="how long after its start a trace may arrive and still be shown (default 60s)",
    )
    tail.add_argument(
        "--interval",
        type=_seconds,
        default=0.5,
        metavar="AGE",
        help="how often to look for new traces (default 0.5s)",
    )
    tail.add_argument("-n", "--count", type=int, metavar="N", help="stop after printing N lines")
    _add_store_options(tail)
    tail.set_defaults(run=_command(_run_tail, needs_rich=False))


def _seconds(text: str) -> float:
    """An age like ``90s``, ``2m`` or a plain number of seconds, in seconds."""
    age = _AGE.fullmatch(text)
    seconds = dt.timedelta(**{_AGE_UNITS[age[2]]: float(age[1])}).total_seconds() if age else None
    if seconds is None:
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive age like 30s or 2m, got {text!r}")
    return seconds


def _run_tail(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if "since" in filters or "until" in filters:
        return _usage_error("tail follows new traces: --since and --until do not apply")
    printed = 0
    try:
        with _open(args, readonly=True) as store:
            for summary in _follow(store, filters, args.lag, args.interval):
                if args.json:
                    print(msgspec.json.encode(summary).decode(), flush=True)
                else:
                    print(_tail_line(summary), flush=True)
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    return 0


def _follow(
    store: flightlog.Store, filters: dict[str, Any], lag: float, interval: float
) -> Iterator[TraceSummary]:
    """New traces, and traces whose status changed, oldest first, forever.

    Each look reads the traces that started at most ``lag`` before the newest one seen, and
    remembers the status of those it printed for as long as they are in that window.
    """
    shown: dict[str, tuple[dt.datetime, object]] = {}
    newest = dt.datetime.now(dt.timezone.utc)
    while True:
        since = newest - dt.timedelta(seconds=lag)
        cursor = None
        while True:
            page = store.query(**filters, since=since, descending=False, limit=1000, cursor=cursor)
            for summary in page.items:
                if shown.get(summary.trace_id, (None, None))[1] != summary.status:
                    shown[summary.trace_id] = (summary.timestamp, summary.status)
                    yield summary
                newest = max(newest, summary.timestamp)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        shown = {tid: seen for tid, seen in shown.items() if seen[0] >= since}
        time.sleep(interval)


def _tail_line(summary: TraceSummary) -> str:
    status: str = summary.status if summary.status is not UNSET else "-"
    if summary.has_errors and status != "failed":
        status += " (errors)"
    return "  ".join(
        [
            summary.timestamp.strftime("%H:%M:%S"),
            summary.trace_id,
            f"{summary.agent_name:<20}",
            f"{status:<18}",
            f"{_number(summary.latency_ms, ' ms'):>10}",
            f"{_number(summary.cost_usd, money=True):>10}",
        ]
    )


# --- decision / decisions -------------------------------------------------------------------

_DECISION_STATUSES = ["open", "needs_approval", "approved", "rejected", "committed", "aborted"]
_DECISION_STYLES = {
    "open": "yellow",
    "needs_approval": "bold yellow",
    "approved": "cyan",
    "rejected": "bold red",
    "committed": "green",
    "aborted": "red",
}
# Event fields shown in the "details" column, in this order.
_EVENT_DETAILS = (
    "product",
    "purpose",
    "data_ref",
    "mutation_summary",
    "idempotency_key",
    "policy_id",
    "outcome",
    "rationale",
    "approved",
    "by",
    "context",
    "summary",
    "action",
    "reason",
    "intent",
    "automation_mode",
    "metadata",
)


def _add_agent_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent",
        required=True,
        metavar="NAME",
        help="the agent that opened the decisions (no agent sees another's)",
    )


def _add_decision(commands: Commands) -> None:
    decision = commands.add_parser(
        "decision",
        help="show one decision, its events and whether its hash chain is intact",
        description="Shows a decision's envelope, then its events in the order they were "
        "recorded, then whether the hash chain verifies. Exits with 1 when it does not.",
    )
    decision.add_argument("decision_id", metavar="ID", help="the decision id (dec_...)")
    _add_agent_option(decision)
    _add_store_options(decision)
    decision.set_defaults(run=_command(_run_decision))


def _run_decision(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        trace = store.decision_trace(args.decision_id, agent=args.agent)
        intact = store.verify_decision(args.decision_id, agent=args.agent)
    if args.json:
        _print_json({"decision": trace, "chain_intact": intact})
        return 0 if intact else 1
    console = _console()
    console.print(_envelope_table(trace))
    console.print(_events_table(trace.events))
    if intact:
        console.print(f"[green]hash chain intact[/] ({len(trace.events)} events)")
    else:
        console.print("[bold red]hash chain BROKEN[/]: the stored bytes were changed")
    return 0 if intact else 1


def _envelope_table(trace: DecisionTrace) -> Table:
    from rich.table import Table
    from rich.text import Text

    rows: dict[str, str | Text | None] = {
        "decision": trace.decision_id,
        "agent": trace.agent,
        "intent": trace.intent,
        "mode": trace.automation_mode,
        "status": Text(trace.status, style=_DECISION_STYLES[trace.status]),
        "opened": _moment(trace.created_at),
        "closed": _moment(trace.closed_at) if trace.closed_at else None,
        "trace id": trace.trace_id,
        "run id": trace.run_id,
        "metadata": json.dumps(trace.metadata) if trace.metadata else None,
    }
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows.items():
        if value is not None:
            table.add_row(label, value)
    return table


def _moment(value: dt.datetime) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds")


def _events_table(events: Sequence[DecisionEvent]) -> Table:
    from rich.table import Table

    table = Table(title="events", title_justify="left", box=None, header_style="bold")
    for heading in ("#", "time (UTC)", "type", "details", "hash"):
        table.add_column(heading, no_wrap=heading != "details")
    for seq, event in enumerate(events):
        table.add_row(
            str(seq),
            event.timestamp.strftime("%H:%M:%S.%f")[:-3],
            event.type,
            _event_details(event),
            event.hash[:12],
        )
    return table


def _event_details(event: DecisionEvent) -> str:
    """The fields an event has, as ``name=value`` pairs (JSON for structured values)."""
    parts = []
    for name in _EVENT_DETAILS:
        value = getattr(event, name)
        if value is UNSET:
            continue
        text = value if isinstance(value, str) else json.dumps(msgspec.to_builtins(value))
        parts.append(f"{name}={text}")
    return " ".join(parts)


def _add_decisions(commands: Commands) -> None:
    decisions = commands.add_parser(
        "decisions",
        help="list an agent's decisions, newest first",
        description="Lists the decisions an agent opened, newest first.",
    )
    _add_agent_option(decisions)
    decisions.add_argument("--status", choices=_DECISION_STATUSES, help="only this status")
    decisions.add_argument("--intent", metavar="INTENT", help="only this intent")
    when = "an ISO-8601 time (UTC unless it says), epoch seconds, or an age like 90m, 2h, 7d"
    decisions.add_argument(
        "--since", type=_instant, metavar="WHEN", help=f"opened at or after: {when}"
    )
    decisions.add_argument("--until", type=_instant, metavar="WHEN", help=f"opened before: {when}")
    decisions.add_argument(
        "--limit", type=int, default=20, metavar="N", help="list at most N decisions (1-1000)"
    )
    _add_store_options(decisions)
    decisions.set_defaults(run=_command(_run_decisions))


def _run_decisions(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        page = store.decisions(
            agent=args.agent,
            status=args.status,
            intent=args.intent,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
    if args.json:
        _print_json(page.items)
        return 0
    _console().print(_decisions_table(page.items, more=page.next_cursor is not None))
    return 0


def _decisions_table(items: Sequence[DecisionTrace], *, more: bool) -> Table:
    from rich.table import Table
    from rich.text import Text

    title = f"{len(items)} decisions, newest first" if items else "no decisions match"
    if more:
        title += " (more with a larger --limit)"
    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for heading in ("opened (UTC)", "decision id", "intent", "mode", "status"):
        table.add_column(heading, no_wrap=heading != "intent")
    for item in items:
        table.add_row(
            item.created_at.strftime("%m-%d %H:%M:%S"),
            item.decision_id,
            item.intent,
            item.automation_mode,
            Text(item.status, style=_DECISION_STYLES[item.status]),
        )
    return table


# --- tests ----------------------------------------------------------------------------------


def _add_tests(commands: Commands) -> None:
    tests = commands.add_parser(
        "tests",
        help="show pytest runs recorded by the flightlog plugin: failures, slowest, flaky",
        description="Lists the recent pytest runs recorded with `pytest --flightlog`, then for "
        "one run (the newest, or --run) its failures with their messages, tests whose process "
        "died during them, the slowest tests and the tests' tokens and cost; then the tests "
        "that both passed and failed across the recent runs (flaky).",
    )
    tests.add_argument(
        "--run", dest="run_id", metavar="ID", help="the run to detail (default: the newest)"
    )
    tests.add_argument(
        "--runs",
        type=int,
        default=10,
        metavar="N",
        help="how many recent runs to list and look for flaky tests in (1-1000)",
    )
    tests.add_argument(
        "--limit", type=int, default=10, metavar="N", help="rows per list of tests (1-1000)"
    )
    _add_store_options(tests)
    tests.set_defaults(run=_command(_run_tests))


@dataclass
class _TestsReport:
    """What ``flightlog tests`` shows, as its ``--json`` prints it."""

    runs: list[testruns.RunRecord]
    run: testruns.RunRecord | None
    failures: list[testruns.TestResult]
    unfinished: list[testruns.TestResult]
    slowest: list[testruns.TestResult]
    costliest: list[testruns.TestResult]
    flaky: list[testruns.FlakyTest]


def _run_tests(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        runs = testruns.recent_runs(store, limit=args.runs)
        run = testruns.find_run(store, args.run_id) if args.run_id else next(iter(runs), None)
        if args.run_id and run is None:
            print(f"flightlog: no pytest run {args.run_id}", file=sys.stderr)
            return 1
        report = _TestsReport(
            runs=runs, run=run, failures=[], unfinished=[], slowest=[], costliest=[], flaky=[]
        )
        if run is not None:
            report.failures = testruns.failed_tests(store, run.run_id, limit=args.limit)
            report.unfinished = testruns.unfinished_tests(store, run.run_id, limit=args.limit)
            report.slowest = testruns.slowest_tests(store, run.run_id, limit=args.limit)
            report.costliest = testruns.costliest_tests(store, run.run_id, limit=args.limit)
        report.flaky = testruns.flaky_tests(store, [r.run_id for r in runs])[: args.limit]
    if args.json:
        _print_json(report)
    else:
        _print_tests(report)
    return 0


def _print_tests(report: _TestsReport) -> None:
    console = _console()
    if not report.runs and report.run is None:
        console.print("no pytest runs recorded: run pytest with --flightlog")
        return
    console.print(_runs_table(report.runs, wide=console.width >= _RUNS_WIDE))
    if report.run is not None:
        run = report.run
        console.print(f"[bold]run {run.run_id}[/]: {run.summary or run.status}")
        if report.failures:
            console.print(_failures_table(report.failures))
        if report.unfinished:
            title = (
                "unfinished: still running, or their process died"
                if run.status == "running"
                else "unfinished: the process died during these"
            )
            console.print(_tests_table(title, report.unfinished))
        console.print(_tests_table("slowest tests", report.slowest, duration=True))
        if report.costliest:
            console.print(_tests_table("tokens and cost per test", report.costliest, cost=True))
    if report.flaky:
        console.print(_flaky_table(report.flaky, len(report.runs)))


_RUNS_WIDE = 110  # terminal columns that fit the commit, tokens and cost of ``tests``
_RUN_ID_SHOWN = 16  # a run id's time part and 16 random bits; --run takes such a prefix


def _runs_table(runs: Sequence[testruns.RunRecord], *, wide: bool) -> Table:
    from rich.table import Table

    table = Table(
        title="pytest runs, newest first", title_justify="left", box=None, header_style="bold"
    )
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("run id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tests", min_width=20)
    table.add_column("duration", justify="right", no_wrap=True)
    costs = wide and any(run.total_tokens or run.cost_usd for run in runs)
    if wide:
        table.add_column("commit", no_wrap=True)
    if costs:
        table.add_column("tokens", justify="right", no_wrap=True)
        table.add_column("cost", justify="right", no_wrap=True)
    for run in runs:
        row = [
            run.started.strftime("%m-%d %H:%M"),
            run.run_id[:_RUN_ID_SHOWN],
            f"[{_STATUS_STYLES.get(run.status, '')}]{run.status}[/]",
            _run_counts(run),
            "-" if run.duration_ms is None else f"{run.duration_ms / 1000:,.1f} s",
        ]
        if wide:
            row.append((run.git_commit or "-")[:10])
        if costs:
            row += [f"{run.total_tokens:,}", _number(run.cost_usd, money=True)]
        table.add_row(*row)
    return table


def _run_counts(run: testruns.RunRecord) -> str:
    """``6 passed, 2 failed`` with failures in red."""
    parts = []
    for name, count in run.counts.items():
        part = f"{count} {name}"
        parts.append(f"[red]{part}[/]" if name in testruns.FAILING else part)
    return ", ".join(parts) or "-"


def _red(count: int) -> str:
    return f"[red]{count}[/]" if count else "0"


def _failures_table(failures: Sequence[testruns.TestResult]) -> Table:
    from rich.table import Table

    table = Table(title="failures", title_justify="left", box=None, header_style="bold")
    table.add_column("test", overflow="fold")
    for heading in ("outcome", "phase"):
        table.add_column(heading, no_wrap=True)
    table.add_column("error")
    for test in failures:
        message = (test.error_message or "").strip().splitlines()
        error = f"{test.error_type or ''}: {message[0] if message else ''}".strip(": ")
        table.add_row(test.nodeid, f"[red]{test.outcome}[/]", test.error_phase or "-", error)
    return table


def _tests_table(
    title: str, tests: Sequence[testruns.TestResult], *, duration: bool = False, cost: bool = False
) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    table.add_column("test", overflow="fold")
    table.add_column("outcome", no_wrap=True)
    if duration:
        table.add_column("duration", justify="right", no_wrap=True)
    if cost:
        table.add_column("tokens", justify="right", no_wrap=True)
        table.add_column("cost", justify="right", no_wrap=True)
    for test in tests:
        row = [test.nodeid, test.outcome]
        if duration:
            row.append(
                _number(test.duration_ms, " ms")
                if (test.duration_ms or 0) >= 1
                else f"{test.duration_ms or 0:.2f} ms"
            )
        if cost:
            row += [_number(test.total_tokens), _number(test.cost_usd, money=True)]
        table.add_row(*row)
    return table


def _milliseconds(value: float | None) -> str:
    """Two decimals below 10 ms, where most unit tests are; whole milliseconds above."""
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"


def _flaky_table(flaky: Sequence[testruns.FlakyTest], runs: int) -> Table:
    from rich.table import Table

    table = Table(
        title=f"flaky tests: passed and failed across the last {runs} runs",
        title_justify="left",
        box=None,
        header_style="bold",
    )
    table.add_column("test", overflow="fold")
    for heading in ("runs", "passed", "failed", "last"):
        table.add_column(heading, justify="left" if heading == "last" else "right")
    for test in flaky:
        table.add_row(
            test.nodeid, str(test.runs), str(test.passed), _red(test.failed), test.last_outcome
        )
    return table

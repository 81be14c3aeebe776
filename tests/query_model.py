"""What query, count and stats must answer, computed the slow way, and the strategies that
draw traces and filters for it: shared by the query tests and the model test (test_model.py).

The model works on :class:`TraceSummary` values: ``matches`` says whether one passes a set of
filters (SPEC §2's semantics spelled out), ``model_stats`` aggregates a list of them, and
``walk`` reads every page of a query.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import flightlog
import pytest
from flightlog import UNSET, Stats, TokenUsage, Trace, TraceSummary
from flightlog.records import SpanStatusCode, UnsetType
from flightlog.store import GroupBy, OrderBy
from hypothesis import strategies as st

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 6, 2, tzinfo=UTC)
SPREAD_S = 3 * 24 * 3600  # traces start over three days

AGENTS = ["support-bot", "planner", "coder", "triage", "ops"]
FRAMEWORKS = ["langgraph", "crewai", "autogen"]
RUNS = ["run-1", "run-2", "run-3"]
REQUESTS = ["req-1", "req-2"]
SESSIONS = ["sess-1", "sess-2", "sess-3"]
STATUSES = ["running", "succeeded", "failed"]
TAGS = ["prod", "eu", "beta", "canary"]
LATENCIES = [0.0, 5.5, 120.0, 812.5, 3000.0]  # few values, so that sort keys tie
COSTS = [0.0, 0.001, 0.0031, 0.25]
SPAN_CODES: list[SpanStatusCode | UnsetType] = [UNSET, "OK", "ERROR"]
ORDERS: list[OrderBy] = ["timestamp", "latency_ms", "cost_usd"]
GROUP_BY: list[GroupBy] = [
    "agent_name",
    "framework",
    "status",
    "run_id",
    "request_id",
    "session_id",
]


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The strategy's values, or UNSET (not reported)."""
    return st.one_of(st.just(UNSET), strategy)


def one_or_many(pool: Sequence[str]) -> st.SearchStrategy[Any]:
    """A filter value: one item, or a list meaning any of them."""
    return st.one_of(st.sampled_from(pool), st.lists(st.sampled_from(pool), min_size=1, max_size=3))


# --- traces -----------------------------------------------------------------------------------

token_usages = st.builds(
    TokenUsage,
    prompt_tokens=st.integers(0, 5000),
    completion_tokens=st.integers(0, 2000),
)
timestamps = st.builds(
    lambda seconds, micros: T0 + dt.timedelta(seconds=seconds, microseconds=micros),
    st.integers(0, SPREAD_S),
    st.sampled_from([0, 1, 123_456, 999_999]),
)


# --- the model --------------------------------------------------------------------------------


def has_errors(trace: Trace) -> bool:
    """SPEC: failed, an ERROR span or a tool call with an error."""
    return (
        trace.status == "failed"
        or any(span.status_code == "ERROR" for span in trace.spans)
        or any(call.error is not UNSET for call in trace.tool_calls)
    )


def with_total(usage: TokenUsage | UnsetType) -> TokenUsage | UnsetType:
    """The token usage as stored: ``total_tokens`` derived as the sum when absent."""
    if isinstance(usage, UnsetType) or usage.total_tokens is not UNSET:
        return usage
    assert isinstance(usage.prompt_tokens, int) and isinstance(usage.completion_tokens, int)
    return TokenUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


def as_instant(value: dt.datetime | str | float) -> dt.datetime:
    """What a since/until value means: naive is UTC, numbers are epoch seconds."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return dt.datetime.fromtimestamp(value, UTC)


def within(low: float | None, high: float | None) -> Callable[[Any], bool]:
    """Inclusive bounds that an unreported value never satisfies."""
    return lambda value: (
        value is not UNSET and (low is None or value >= low) and (high is None or value <= high)
    )


def any_of(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def matches(summary: TraceSummary, filters: dict[str, Any]) -> bool:
    """Whether a trace passes every filter (the SPEC's semantics, spelled out)."""
    for name, value in filters.items():
        if name in ("agent_name", "framework", "run_id", "request_id", "session_id", "status"):
            ok = getattr(summary, name) in any_of(value)
        elif name == "tag":
            ok = any(tag in summary.tags for tag in any_of(value))
        elif name == "has_errors":
            ok = summary.has_errors == value
        elif name == "since":
            ok = summary.timestamp >= as_instant(value)
        elif name == "until":
            ok = summary.timestamp < as_instant(value)
        else:
            bound, field = name.split("_", 1)
            low, high = (value, None) if bound == "min" else (None, value)
            ok = within(low, high)(getattr(summary, field))
        if not ok:
            return False
    return True


def nearest_rank(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank percentile: the value at rank ceil(p/100 * n), in exact integers."""
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)
    return ordered[max(rank, 1) - 1]


def reported(summaries: list[TraceSummary], name: str) -> list[Any]:
    values = (getattr(s, name) for s in summaries)
    return [v for v in values if v is not UNSET]


def model_stats(summaries: list[TraceSummary], group_by: str | None = None) -> Stats:
    """Stats computed the slow way from the matching summaries."""
    count = len(summaries)
    errors = sum(s.has_errors for s in summaries)
    usages = reported(summaries, "token_usage")
    costs = reported(summaries, "cost_usd")
    latencies = sorted(reported(summaries, "latency_ms"))
    groups: dict[str, list[TraceSummary]] = {}
    for summary in summaries:
        value = getattr(summary, group_by) if group_by else UNSET
        if value is not UNSET:
            groups.setdefault(value, []).append(summary)
    return Stats(
        count=count,
        error_count=errors,
        error_rate=errors / count if count else 0.0,
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        total_tokens=sum(u.total_tokens for u in usages),
        cost_usd=math.fsum(costs),
        mean_cost_usd=math.fsum(costs) / len(costs) if costs else None,
        latency_p50_ms=nearest_rank(latencies, 50),
        latency_p95_ms=nearest_rank(latencies, 95),
        latency_p99_ms=nearest_rank(latencies, 99),
        per_hour=dict(Counter(s.timestamp.strftime("%Y-%m-%dT%H:00:00Z") for s in summaries)),
        top_agents=Counter(s.agent_name for s in summaries).most_common(10),
        groups={value: model_stats(members) for value, members in groups.items()},
    )


def assert_stats_equal(got: Stats, want: Stats) -> None:
    """Equal up to float summation order and the order of agents that tie."""
    exact = ("count", "error_count", "prompt_tokens", "completion_tokens", "total_tokens")
    assert {n: getattr(got, n) for n in exact} == {n: getattr(want, n) for n in exact}
    for name in ("error_rate", "cost_usd", "mean_cost_usd"):
        expected = getattr(want, name)
        assert getattr(got, name) == (expected if expected is None else pytest.approx(expected))
    percentiles = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
    assert [getattr(got, n) for n in percentiles] == [getattr(want, n) for n in percentiles]
    assert got.per_hour == want.per_hour
    counts = [count for _, count in got.top_agents]
    assert counts == sorted(counts, reverse=True)
    assert dict(got.top_agents) == dict(want.top_agents)
    assert got.groups.keys() == want.groups.keys()
    for value, group in want.groups.items():
        assert_stats_equal(got.groups[value], group)


# --- reading pages ----------------------------------------------------------------------------


def walk(store: flightlog.Store, limit: int, **options: Any) -> list[TraceSummary]:
    """Every item of a query, page by page, following the cursors."""
    items: list[TraceSummary] = []
    cursor = None
    while True:
        page = store.query(limit=limit, cursor=cursor, **options)
        assert len(page.items) <= limit
        items += page
        if page.next_cursor is None:
            return items
        assert len(page.items) == limit, "only the last page may be short"
        cursor = page.next_cursor


def assert_ordered(items: list[TraceSummary], order_by: str, descending: bool) -> None:
    """Sorted by the order's value; traces that did not report it come last."""
    values = [getattr(item, order_by) for item in items]
    known = [v for v in values if v is not UNSET]
    assert values[: len(known)] == known, "unreported values come after reported ones"
    assert known == sorted(known, reverse=descending)


# --- filters ----------------------------------------------------------------------------------


@st.composite
def instants(draw: st.DrawFn, stamps: list[dt.datetime]) -> dt.datetime | str | float:
    """A since/until value in any accepted form, often exactly a trace's timestamp."""
    on_a_trace = bool(stamps) and draw(st.integers(0, 3)) > 0
    instant = draw(st.sampled_from(stamps) if on_a_trace else timestamps)
    form = draw(st.sampled_from(["aware", "naive", "iso", "naive-iso", "epoch"]))
    if form == "aware":
        return instant
    if form == "naive":
        return instant.replace(tzinfo=None)
    if form == "iso":
        return instant.isoformat()
    if form == "naive-iso":
        return instant.replace(tzinfo=None).isoformat()
    seconds = instant.timestamp()
    return int(seconds) if seconds.is_integer() else seconds


@st.composite
def filter_sets(draw: st.DrawFn, stamps: list[dt.datetime]) -> dict[str, Any]:
    """Up to three filters with values that hit, miss and sit on boundaries."""
    values: dict[str, st.SearchStrategy[Any]] = {
        "agent_name": one_or_many([*AGENTS, "nobody"]),
        "framework": one_or_many(FRAMEWORKS),
        "run_id": one_or_many(RUNS),
        "request_id": one_or_many(REQUESTS),
        "session_id": one_or_many(SESSIONS),
        "status": one_or_many(STATUSES),
        "has_errors": st.booleans(),
        "tag": one_or_many([*TAGS, "absent"]),
        "since": instants(stamps),
        "until": instants(stamps),
        "min_cost_usd": st.sampled_from([*COSTS, 0.002]),
        "max_cost_usd": st.sampled_from([*COSTS, 0.002]),
        "min_latency_ms": st.sampled_from([*LATENCIES, 100.0]),
        "max_latency_ms": st.sampled_from([*LATENCIES, 100.0]),
    }
    names = draw(st.lists(st.sampled_from(sorted(values)), unique=True, max_size=3))
    return {name: draw(values[name]) for name in names}

"""query, count and stats as a user sees them, checked against a brute-force model.

The model is the logged traces themselves: each trace's fragments are merged with the same
rules ``get()`` uses, filtered and aggregated in plain Python, and compared with what the
store's indexes and summaries answer (query_model.py holds the filtering and aggregating).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path
from typing import Any

import flightlog
import pytest
from flightlog import (
    UNSET,
    Page,
    Span,
    TokenUsage,
    ToolCall,
    Trace,
    TraceSummary,
    ValidationError,
    trace_id_for,
)
from flightlog.merge import merge_fragments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_model import (
    AGENTS,
    COSTS,
    FRAMEWORKS,
    GROUP_BY,
    LATENCIES,
    ORDERS,
    REQUESTS,
    RUNS,
    SESSIONS,
    SPAN_CODES,
    SPREAD_S,
    STATUSES,
    T0,
    TAGS,
    assert_ordered,
    assert_stats_equal,
    filter_sets,
    has_errors,
    matches,
    maybe,
    model_stats,
    timestamps,
    token_usages,
    walk,
    with_total,
)

# --- traces -----------------------------------------------------------------------------------


@st.composite
def spans(draw: st.DrawFn, number: int) -> list[Span]:
    """0-3 spans, some of them ERROR, with ids out of a pool of 5 per trace: an update often
    re-sends a span of the first fragment, perhaps with another status."""
    numbers = draw(st.lists(st.integers(1, 5), unique=True, max_size=3))
    return [
        Span(
            name="step",
            span_id=f"{number + 1:08x}{k:08x}",
            status_code=draw(st.sampled_from(SPAN_CODES)),
        )
        for k in numbers
    ]


tool_calls = st.lists(
    st.builds(ToolCall, tool_name=st.just("search"), error=maybe(st.just("timeout"))),
    max_size=2,
)


@st.composite
def trace_fragments(draw: st.DrawFn, number: int) -> list[Trace]:
    """One trace as logged: a first fragment and sometimes a later update of it."""
    first = Trace(
        agent_name=draw(st.sampled_from(AGENTS)),
        trace_id=trace_id_for(f"trace-{number}"),
        timestamp=draw(timestamps),
        framework=draw(maybe(st.sampled_from(FRAMEWORKS))),
        status=draw(maybe(st.sampled_from(STATUSES))),
        run_id=draw(maybe(st.sampled_from(RUNS))),
        request_id=draw(maybe(st.sampled_from(REQUESTS))),
        session_id=draw(maybe(st.sampled_from(SESSIONS))),
        tags=draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=3)),
        latency_ms=draw(maybe(st.sampled_from(LATENCIES))),
        cost_usd=draw(maybe(st.sampled_from(COSTS))),
        token_usage=draw(maybe(token_usages)),
        spans=draw(spans(number)),
        tool_calls=draw(tool_calls),
    )
    if not draw(st.booleans()):
        return [first]
    # A terminal status never goes back to running (SPEC), so an update keeps to that.
    statuses = [UNSET] if first.status in ("succeeded", "failed") else [UNSET, *STATUSES]
    assert isinstance(first.timestamp, dt.datetime)
    update = Trace(
        agent_name=first.agent_name,
        trace_id=first.trace_id,
        timestamp=first.timestamp + dt.timedelta(hours=draw(st.integers(1, 30))),
        framework=draw(maybe(st.sampled_from(FRAMEWORKS))),
        status=draw(st.sampled_from(statuses)),
        run_id=draw(maybe(st.sampled_from(RUNS))),
        session_id=draw(maybe(st.sampled_from(SESSIONS))),
        tags=draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=2)),
        latency_ms=draw(maybe(st.sampled_from(LATENCIES))),
        cost_usd=draw(maybe(st.sampled_from(COSTS))),
        token_usage=draw(maybe(token_usages)),
        spans=draw(spans(number)),
        tool_calls=draw(tool_calls),
    )
    return [first, update]


def log_all(store: flightlog.Store, traces: list[list[Trace]]) -> None:
    """Logs every trace's first fragment, then every update, and waits for the commit."""
    store.log_many([fragments[0] for fragments in traces])
    store.log_many([fragments[1] for fragments in traces if len(fragments) > 1])
    store.flush()


# --- the model --------------------------------------------------------------------------------


def expected_summary(fragments: list[Trace]) -> TraceSummary:
    """The summary of the merged view of a trace's fragments."""
    merged = merge_fragments(fragments)
    assert isinstance(merged.trace_id, str) and isinstance(merged.timestamp, dt.datetime)
    return TraceSummary(
        trace_id=merged.trace_id,
        agent_name=merged.agent_name,
        timestamp=merged.timestamp,
        framework=merged.framework,
        status=merged.status,
        has_errors=has_errors(merged),
        latency_ms=merged.latency_ms,
        token_usage=with_total(merged.token_usage),
        cost_usd=merged.cost_usd,
        run_id=merged.run_id,
        request_id=merged.request_id,
        session_id=merged.session_id,
        span_count=len(merged.spans),
        tags=merged.tags,
    )


# --- the model test ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_query_count_and_stats_agree_with_the_model(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    traces = [data.draw(trace_fragments(i)) for i in range(data.draw(st.integers(0, 25)))]
    expected = {s.trace_id: s for s in map(expected_summary, traces)}
    stamps = [s.timestamp for s in expected.values()]
    with flightlog.open(tmp_path_factory.mktemp("model") / "store") as store:
        log_all(store, traces)
        for filters in data.draw(st.lists(filter_sets(stamps), min_size=2, max_size=4)):
            matching = [s for s in expected.values() if matches(s, filters)]
            assert store.count(**filters) == len(matching)
            for order_by in ORDERS:
                for descending in (True, False):
                    limit = data.draw(st.integers(1, 7))
                    items = walk(store, limit, order_by=order_by, descending=descending, **filters)
                    assert sorted(i.trace_id for i in items) == sorted(s.trace_id for s in matching)
                    assert items == [expected[i.trace_id] for i in items]
                    assert_ordered(items, order_by, descending)
            group_by = data.draw(st.sampled_from([None, *GROUP_BY]))
            assert_stats_equal(
                store.stats(**filters, group_by=group_by), model_stats(matching, group_by)
            )


# --- since and until --------------------------------------------------------------------------


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


@pytest.fixture
def hourly(store: flightlog.Store) -> list[str]:
    """Four traces, one per hour from T0."""
    ids = store.log_many([Trace(agent_name="bot", timestamp=at(h)) for h in range(4)])
    store.flush()
    return ids


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (at(1), at(3)),
        (at(1).replace(tzinfo=None), at(3).replace(tzinfo=None)),
        (at(1).astimezone(dt.timezone(dt.timedelta(hours=2))), at(3)),
        (at(1).isoformat(), at(3).isoformat()),
        ("2025-06-02T01:00:00Z", "2025-06-02T03:00:00Z"),
        ("2025-06-02T01:00:00", "2025-06-02T05:00:00+02:00"),
        (int(at(1).timestamp()), int(at(3).timestamp())),
        (at(1).timestamp(), at(3).timestamp()),
    ],
    ids=["aware", "naive", "offset", "iso", "iso-z", "naive-iso", "epoch-int", "epoch-float"],
)
def test_since_is_inclusive_and_until_exclusive_in_every_accepted_form(
    store: flightlog.Store, hourly: list[str], since: Any, until: Any
) -> None:
    page = store.query(since=since, until=until, descending=False)

    assert [item.trace_id for item in page] == hourly[1:3]
    assert store.count(since=since, until=until) == 2
    assert store.stats(since=since, until=until).count == 2


def test_a_float_epoch_of_a_timestamp_finds_the_trace_logged_at_it(
    store: flightlog.Store,
) -> None:
    stamp = T0 + dt.timedelta(microseconds=123_456)
    tid = store.log(agent_name="bot", timestamp=stamp)
    store.flush()

    assert [s.trace_id for s in store.query(since=stamp.timestamp())] == [tid]
    assert store.count(until=stamp.timestamp()) == 0


@pytest.mark.parametrize(
    "bad", ["not-a-date", "", True, [T0], {"at": 1}, float("nan"), float("inf"), b"\x01"]
)
@pytest.mark.parametrize("name", ["since", "until"])
def test_a_bad_since_or_until_is_refused_naming_it(
    store: flightlog.Store, hourly: list[str], name: str, bad: Any
) -> None:
    for call in (store.query, store.count, store.stats):
        with pytest.raises(ValidationError) as caught:
            call(**{name: bad})
        assert [e["path"] for e in caught.value.errors] == [name]
        assert name in str(caught.value)


def test_an_unencodable_filter_value_is_refused_naming_it(store: flightlog.Store) -> None:
    with pytest.raises(ValidationError) as caught:
        store.query(since=object())  # type: ignore[arg-type]

    assert caught.value.errors[0]["path"] == "since"


# --- other bad arguments ----------------------------------------------------------------------


def test_an_unknown_filter_is_refused_naming_it(store: flightlog.Store) -> None:
    for call in (store.query, store.count, store.stats):
        with pytest.raises(ValidationError) as caught:
            call(agent="support-bot")  # type: ignore[call-arg]
        assert [e["path"] for e in caught.value.errors] == ["agent"]


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("agent_name", 5),
        ("status", "done"),
        ("has_errors", "yes"),
        ("min_cost_usd", "cheap"),
        ("max_latency_ms", float("nan")),
        ("tag", {"prod": True}),
    ],
)
def test_a_filter_value_of_the_wrong_type_is_refused_naming_it(
    store: flightlog.Store, name: str, bad: Any
) -> None:
    with pytest.raises(ValidationError) as caught:
        store.query(**{name: bad})

    assert [e["path"] for e in caught.value.errors] == [name]


def test_a_bad_item_of_an_any_of_list_is_refused_naming_its_index(
    store: flightlog.Store,
) -> None:
    with pytest.raises(ValidationError) as caught:
        store.query(agent_name=["bot", 1])  # type: ignore[list-item]

    assert [e["path"] for e in caught.value.errors] == ["agent_name[1]"]


def test_a_none_filter_is_not_applied(store: flightlog.Store, hourly: list[str]) -> None:
    assert store.count(agent_name=None, since=None) == store.count() == 4


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limit_outside_1_to_1000_is_refused(store: flightlog.Store, limit: int) -> None:
    with pytest.raises(ValidationError) as caught:
        store.query(limit=limit)

    assert [e["path"] for e in caught.value.errors] == ["limit"]


def test_limit_1_and_1000_are_accepted(store: flightlog.Store, hourly: list[str]) -> None:
    assert len(store.query(limit=1).items) == 1
    assert len(store.query(limit=1000).items) == 4


def test_an_unknown_order_is_refused(store: flightlog.Store) -> None:
    with pytest.raises(ValidationError) as caught:
        store.query(order_by="agent_name")  # type: ignore[arg-type]

    assert [e["path"] for e in caught.value.errors] == ["order_by"]


def test_an_unknown_group_by_is_refused(store: flightlog.Store) -> None:
    with pytest.raises(ValidationError) as caught:
        store.stats(group_by="tag")  # type: ignore[arg-type]

    assert [e["path"] for e in caught.value.errors] == ["group_by"]


@pytest.mark.parametrize("cursor", ["", "zz", "00" * 40])
def test_a_cursor_not_made_by_query_is_refused(store: flightlog.Store, cursor: str) -> None:
    with pytest.raises(ValidationError) as caught:
        store.query(cursor=cursor)

    assert [e["path"] for e in caught.value.errors] == ["cursor"]


def test_a_cursor_only_continues_its_own_order(store: flightlog.Store, hourly: list[str]) -> None:
    cursor = store.query(limit=1).next_cursor
    assert cursor is not None

    with pytest.raises(ValidationError, match="cursor"):
        store.query(limit=1, cursor=cursor, descending=False)
    with pytest.raises(ValidationError, match="cursor"):
        store.query(limit=1, cursor=cursor, order_by="cost_usd")


# --- the merged view --------------------------------------------------------------------------


def test_a_trace_relogged_as_failed_is_found_by_its_merged_status(
    store: flightlog.Store,
) -> None:
    tid = store.log(agent_name="bot", status="running", timestamp=at(0), latency_ms=5.0)
    store.flush()
    assert [s.trace_id for s in store.query(status="running")] == [tid]
    assert store.count(has_errors=True) == 0

    store.log(agent_name="bot", trace_id=tid, status="failed", timestamp=at(2), cost_usd=0.5)
    store.flush()

    assert store.count(status="running") == 0
    assert [s.trace_id for s in store.query(status="failed")] == [tid]
    assert [s.trace_id for s in store.query(has_errors=True)] == [tid]
    (summary,) = store.query()
    assert (summary.status, summary.has_errors, summary.timestamp) == ("failed", True, at(0))
    assert (summary.latency_ms, summary.cost_usd) == (5.0, 0.5)
    stats = store.stats()
    assert (stats.count, stats.error_count, stats.per_hour) == (1, 1, {"2025-06-02T00:00:00Z": 1})


def test_a_summary_has_the_token_usage_get_returns(store: flightlog.Store) -> None:
    usage = TokenUsage(prompt_tokens=10, completion_tokens=5)
    tid = store.log(agent_name="bot", token_usage=usage)
    store.log(agent_name="bot", trace_id=tid, token_usage=TokenUsage(prompt_tokens=3))
    store.flush()

    (summary,) = store.query()
    assert summary.token_usage == store.get(tid).token_usage


def test_a_span_resent_without_its_error_clears_has_errors(store: flightlog.Store) -> None:
    span_id = "00f067aa0ba902b7"
    failing = Span(name="call", span_id=span_id, status_code="ERROR")
    tid = store.log(agent_name="bot", spans=[failing])
    store.log(
        agent_name="bot", trace_id=tid, spans=[Span(name="call", span_id=span_id, status_code="OK")]
    )
    store.flush()

    assert not has_errors(store.get(tid))
    assert store.count(has_errors=True) == 0
    assert [s.has_errors for s in store.query()] == [False]


def test_a_page_iterates_its_items(store: flightlog.Store, hourly: list[str]) -> None:
    page = store.query(limit=3)

    assert isinstance(page, Page)
    assert list(page) == page.items and len(page.items) == 3
    assert [s.trace_id for s in page] == hourly[:0:-1]


# --- paging while others log ------------------------------------------------------------------


def random_trace(rng: random.Random, agent: str) -> Trace:
    """A trace at a random time over the spread, sometimes without latency or cost."""
    return Trace(
        agent_name=agent,
        timestamp=T0 + dt.timedelta(seconds=rng.randrange(SPREAD_S)),
        latency_ms=UNSET if rng.random() < 0.2 else rng.choice(LATENCIES),
        cost_usd=UNSET if rng.random() < 0.2 else rng.choice(COSTS),
    )


@pytest.mark.parametrize("order_by", ORDERS)
@pytest.mark.parametrize("descending", [True, False])
def test_paging_while_another_thread_logs_lists_every_earlier_match_once(
    tmp_path: Path, order_by: str, descending: bool
) -> None:
    rng = random.Random(7)
    with flightlog.open(tmp_path / "store") as store:
        before = set(store.log_many([random_trace(rng, "bot") for _ in range(300)]))
        store.flush()
        stop = threading.Event()
        logged_meanwhile: list[str] = []

        def keep_logging() -> None:
            writer_rng = random.Random(11)
            while not stop.is_set():
                logged_meanwhile.extend(
                    store.log_many([random_trace(writer_rng, "bot") for _ in range(5)])
                )
                time.sleep(0.001)

        thread = threading.Thread(target=keep_logging)
        thread.start()
        try:
            items = walk_slowly(store, order_by=order_by, descending=descending)
        finally:
            stop.set()
            thread.join()

    listed = [item.trace_id for item in items]
    assert logged_meanwhile, "the other thread logged while the pages were read"
    assert len(listed) == len(set(listed)), "no trace is listed twice"
    assert before <= set(listed)
    assert set(listed) <= before | set(logged_meanwhile)
    assert_ordered(items, order_by, descending)


def walk_slowly(store: flightlog.Store, **options: Any) -> list[TraceSummary]:
    """Like :func:`walk` with small pages and a pause between them, so commits land."""
    items: list[TraceSummary] = []
    cursor = None
    while True:
        page = store.query(limit=7, cursor=cursor, agent_name="bot", **options)
        items += page
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor
        time.sleep(0.002)

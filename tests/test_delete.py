"""Deleting traces by id and by filter, and compacting what is left."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import flightlog
import lmdb
import pytest
from conftest import count_records
from flightlog import (
    Span,
    StorageError,
    StoreClosed,
    ToolCall,
    Trace,
    TraceNotFound,
    ValidationError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T0 = dt.datetime(2025, 6, 2, tzinfo=dt.timezone.utc)
AGENTS = ["support-bot", "planner", "coder"]


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def logged(store: flightlog.Store, *traces: Trace) -> list[str]:
    ids = store.log_many(traces)
    store.flush()
    return ids


def listed(store: flightlog.Store, **filters: Any) -> set[str]:
    return {s.trace_id for s in store.query(limit=1000, **filters)}


def raw_keys(path: Path) -> dict[str, list[bytes]]:
    """The keys of every database a trace is listed in, read from a *closed* store with the
    ``lmdb`` package (docs/format.md), not through flightlog."""
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        found = {}
        for name in ("fragments", "summaries", "by_time", "index"):
            db = env.open_db(name.encode(), create=False, dupsort=name == "fragments")
            with env.begin(db=db) as txn:
                found[name] = [bytes(key) for key in txn.cursor().iternext(keys=True, values=False)]
        return found
    finally:
        env.close()


def test_delete_returns_true_then_false_and_the_trace_is_gone_everywhere(
    store: flightlog.Store,
) -> None:
    keep, gone = logged(
        store,
        Trace(agent_name="support-bot", timestamp=at(0), cost_usd=0.5),
        Trace(agent_name="planner", timestamp=at(1), status="failed", tags=["prod"]),
    )

    assert store.delete(gone) is True
    assert store.delete(gone) is False
    with pytest.raises(TraceNotFound, match=gone):
        store.get(gone)
    assert listed(store) == {keep}
    assert store.count() == 1
    assert store.count(agent_name="planner") == store.count(has_errors=True) == 0
    assert store.count(tag="prod") == store.count(status="failed") == 0
    stats = store.stats(group_by="agent_name")
    assert (stats.count, stats.error_count, set(stats.groups)) == (1, 0, {"support-bot"})
    assert [agent for agent, _ in stats.top_agents] == ["support-bot"]
    assert store.get(keep).cost_usd == 0.5
    assert store.check().ok


def test_delete_removes_every_fragment_summary_and_index_entry(
    store: flightlog.Store, store_path: Path
) -> None:
    (keep,) = logged(store, Trace(agent_name="support-bot", tags=["prod"]))
    (gone,) = logged(store, Trace(agent_name="planner", run_id="run-1", tags=["prod", "eu"]))
    logged(store, Trace(agent_name="planner", trace_id=gone, status="failed", session_id="s"))
    assert store.check().records == 3

    assert store.delete(gone)

    report = store.check()
    assert (report.ok, report.traces, report.records) == (True, 1, 1)
    store.close()
    assert count_records(store_path) == 1
    for database, keys in raw_keys(store_path).items():
        assert not [k for k in keys if bytes.fromhex(gone) in k], database
        assert [k for k in keys if bytes.fromhex(keep) in k], database


def test_delete_is_committed_when_it_returns(store: flightlog.Store, store_path: Path) -> None:
    (gone,) = logged(store, Trace(agent_name="support-bot"))

    assert store.delete(gone)

    other_process = (
        "import flightlog, sys\n"
        "with flightlog.open(sys.argv[1], readonly=True) as s: print(s.count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", other_process, str(store_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "0"


def test_delete_where_deletes_the_matches_and_returns_how_many(store: flightlog.Store) -> None:
    ids = logged(
        store,
        Trace(agent_name="support-bot", timestamp=at(0), status="succeeded"),
        Trace(agent_name="support-bot", timestamp=at(1), status="failed"),
        Trace(agent_name="planner", timestamp=at(2), spans=[Span(name="x", status_code="ERROR")]),
        Trace(agent_name="planner", timestamp=at(3), tool_calls=[ToolCall(tool_name="t")]),
        Trace(agent_name="coder", timestamp=at(4), tool_calls=[ToolCall(tool_name="t", error="e")]),
    )

    assert store.delete_where(has_errors=True, since=at(1), until=at(4)) == 2
    assert listed(store) == {ids[0], ids[3], ids[4]}
    assert store.delete_where(agent_name=["coder", "nobody"]) == 1
    assert store.delete_where(agent_name="nobody") == 0
    assert listed(store) == {ids[0], ids[3]}
    for trace_id in (ids[1], ids[2], ids[4]):
        with pytest.raises(TraceNotFound):
            store.get(trace_id)
    assert store.check().ok


def test_delete_where_deletes_traces_logged_just_before_it(
    store: flightlog.Store, store_path: Path
) -> None:
    """Found by the model test: delete_where read its matches from what was committed, so a
    trace logged a moment before (still queued in group mode) survived it; delete() by id
    never had that gap. Each round gives the writer a batch it cannot have committed yet."""
    logged(store, Trace(agent_name="support-bot"))
    for _ in range(10):
        ids = store.log_many([Trace(agent_name="planner", input="q" * 2000) for _ in range(20)])

        assert store.delete_where(agent_name="planner") == 20
        for trace_id in ids[::7]:
            with pytest.raises(TraceNotFound):
                store.get(trace_id)

    store.close()
    assert count_records(store_path) == 1


@pytest.mark.parametrize(
    "filters",
    [{}, {"agent_name": None}, {"since": None, "tag": None}],
    ids=["no-filters", "none", "all-none"],
)
def test_delete_where_without_a_filter_deletes_nothing(
    store: flightlog.Store, filters: dict[str, Any]
) -> None:
    logged(store, Trace(agent_name="support-bot"), Trace(agent_name="planner"))

    with pytest.raises(ValidationError, match="filter"):
        store.delete_where(**filters)
    assert store.count() == 2


@pytest.mark.parametrize(
    ("filters", "path"),
    [({"agent": "planner"}, "agent"), ({"since": "yesterday"}, "since")],
)
def test_delete_where_with_a_bad_filter_deletes_nothing(
    store: flightlog.Store, filters: dict[str, Any], path: str
) -> None:
    logged(store, Trace(agent_name="planner"))

    with pytest.raises(ValidationError) as caught:
        store.delete_where(**filters)
    assert [e["path"] for e in caught.value.errors] == [path]
    assert store.count() == 1


@pytest.mark.parametrize("bad", ["not-hex", "A" * 32, "0" * 31, "0" * 32, 42, None])
def test_delete_of_a_malformed_id_is_refused(store: flightlog.Store, bad: Any) -> None:
    logged(store, Trace(agent_name="planner"))

    with pytest.raises(ValidationError) as caught:
        store.delete(bad)
    assert [e["path"] for e in caught.value.errors] == ["trace_id"]
    assert store.count() == 1


def test_a_read_only_handle_refuses_to_delete(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        (tid,) = logged(store, Trace(agent_name="planner"))

    with flightlog.open(store_path, readonly=True) as readonly:
        with pytest.raises(StorageError, match="read-only"):
            readonly.delete(tid)
        with pytest.raises(StorageError, match="read-only"):
            readonly.delete_where(agent_name="planner")
        assert readonly.count() == 1


def test_a_closed_store_refuses_to_delete(store: flightlog.Store) -> None:
    (tid,) = logged(store, Trace(agent_name="planner"))
    store.close()

    with pytest.raises(StoreClosed):
        store.delete(tid)
    with pytest.raises(StoreClosed):
        store.delete_where(agent_name="planner")


@st.composite
def deletions(draw: st.DrawFn) -> tuple[list[Trace], set[int], str | None]:
    """Traces, the positions of those to delete by id, and an agent to delete by filter."""
    traces = [
        Trace(agent_name=draw(st.sampled_from(AGENTS)), timestamp=at(draw(st.integers(0, 48))))
        for _ in range(draw(st.integers(1, 15)))
    ]
    by_id = draw(st.sets(st.integers(0, len(traces) - 1)))
    return traces, by_id, draw(st.one_of(st.none(), st.sampled_from(AGENTS)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=deletions())
def test_after_any_deletions_the_store_holds_exactly_the_rest(
    case: tuple[list[Trace], set[int], str | None], tmp_path_factory: pytest.TempPathFactory
) -> None:
    traces, by_id, agent = case
    with flightlog.open(tmp_path_factory.mktemp("delete") / "store") as store:
        ids = logged(store, *traces)
        for i in sorted(by_id):
            assert store.delete(ids[i])
        remaining = {tid for i, tid in enumerate(ids) if i not in by_id}
        if agent is not None:
            hit = {tid for tid in remaining if store.get(tid).agent_name == agent}
            assert store.delete_where(agent_name=agent) == len(hit)
            remaining -= hit

        assert listed(store) == remaining
        assert store.count() == len(remaining) == store.stats().count
        for tid in set(ids) - remaining:
            assert not store.delete(tid)
        report = store.check()
        assert (report.ok, report.traces, report.records) == (True, len(remaining), len(remaining))


def test_compact_writes_a_store_that_opens_with_the_same_traces(
    store: flightlog.Store, tmp_path: Path
) -> None:
    ids = logged(
        store,
        *[
            Trace(agent_name=AGENTS[i % 3], timestamp=at(i), input=f"question {i} " * 200)
            for i in range(200)
        ],
    )
    for trace_id in ids[::2]:
        store.delete(trace_id)
    kept = ids[1::2]
    dest = tmp_path / "compacted"

    assert store.compact(dest) == dest

    with flightlog.open(dest) as copy:
        assert copy.check().ok
        assert listed(copy) == set(kept) == listed(store)
        assert copy.stats(group_by="agent_name") == store.stats(group_by="agent_name")
        assert [copy.get(tid) for tid in kept] == [store.get(tid) for tid in kept]
        with pytest.raises(TraceNotFound):
            copy.get(ids[0])
    assert (dest / "data.mdb").stat().st_size < (store.path / "data.mdb").stat().st_size


def test_compact_accepts_a_str_path(store: flightlog.Store, tmp_path: Path) -> None:
    (tid,) = logged(store, Trace(agent_name="planner"))

    dest = store.compact(str(tmp_path / "copy"))

    assert dest == tmp_path / "copy"
    with flightlog.open(dest, readonly=True) as copy:
        assert copy.get(tid).agent_name == "planner"

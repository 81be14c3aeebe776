"""The Store API as a user sees it: opening, logging, reading back, fragments and ids."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import flightlog
import msgspec
import pytest
from conftest import count_records, is_hex
from flightlog import Event, Span, SpanEvent, TokenUsage, ToolCall, Trace

T0 = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT_SPAN = "00f067aa0ba902b7"
CHILD_SPAN = "53995c3f42cd8ad8"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def read_back(store: flightlog.Store, trace_id: str) -> Trace:
    store.flush()
    return store.get(trace_id)


def full_trace() -> Trace:
    """A trace with every field of every record type set to a non-default value."""
    return Trace(
        agent_name="support-bot",
        trace_id=TID,
        framework="langgraph",
        input="Where is my order?",
        output="It ships tomorrow.",
        tool_calls=[
            ToolCall(
                tool_name="orders.lookup",
                input={"order": 42, "fields": ["eta", None], "deep": {"a": [1.5, True]}},
                output=[1, -2.5, "x", False, None],
                latency_ms=12.5,
                error="partial result",
            ),
            ToolCall(tool_name="no-extras"),
        ],
        latency_ms=812.5,
        token_usage=TokenUsage(prompt_tokens=120, completion_tokens=30, total_tokens=150),
        cost_usd=0.0031,
        metadata={
            "customer": {"tier": "gold", "ids": [1, 2, 3]},
            "flag": False,
            "ratio": -0.5,
            "nothing": None,
            "big": 2**64 - 1,
            "small": -(2**63),
            "when": at(7),
            "unicode": "naïve ☃ \x00 end",
        },
        spans=[
            Span(
                name="agent",
                span_id=ROOT_SPAN,
                kind="AGENT",
                status_code="OK",
                status_message="done",
                start_time=at(0),
                end_time=at(1.5),
                attributes={"gen_ai.system": "openai", "n": 3},
                events=[SpanEvent(name="retry", timestamp=at(0.5), attributes={"attempt": 2})],
            ),
            Span(
                name="chat gpt-4o",
                span_id=CHILD_SPAN,
                parent_span_id=ROOT_SPAN,
                kind="LLM",
                status_code="ERROR",
                status_message="rate limited",
                start_time=at(0.25),
                duration_ms=250.0,
                attributes={"gen_ai.request.model": "gpt-4o"},
            ),
        ],
        events=[
            Event(
                event_id="a1b2c3d4e5f60718",
                type="model.call",
                status="succeeded",
                at=at(0.3),
                metadata={"model": "gpt-4o"},
            ),
            Event(
                event_id="b1b2c3d4e5f60718",
                type="mcp.tool_call",
                status="failed",
                at=at(0.4),
                parent_id="a1b2c3d4e5f60718",
                metadata={"tool": "orders.lookup"},
            ),
        ],
        timestamp=T0,
        run_id="run_abc",
        request_id="req-1",
        session_id="sess-9",
        status="succeeded",
        ended_at=at(2),
        tags=["prod", "eu"],
    )


# --- opening and closing -------------------------------------------------------------------------


def test_context_manager_closes_and_keeps_what_was_logged(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        trace_id = store.log(agent_name="a", input="kept")
        assert not store.closed
    assert store.closed
    with flightlog.open(store_path) as reopened:
        assert reopened.get(trace_id).input == "kept"


def test_context_manager_closes_when_the_block_raises(store_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), flightlog.open(store_path) as store:
        store.log(agent_name="a")
        raise RuntimeError("boom")
    assert store.closed
    assert count_records(store_path) == 1


def test_open_reports_its_options(store_path: Path) -> None:
    with flightlog.open(store_path, durability="sync") as store:
        assert store.path == store_path
        assert store.durability == "sync"
        assert store.readonly is False
        assert "sync" in repr(store)
    assert "closed" in repr(store)


def test_unknown_durability_is_refused(store_path: Path) -> None:
    with pytest.raises(flightlog.ValidationError, match="durability") as info:
        flightlog.open(store_path, durability=cast(Any, "fast"))
    assert info.value.errors[0]["path"] == "durability"


def test_store_defaults_to_dot_flightlog_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLIGHTLOG_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    with flightlog.open() as store:
        trace_id = store.log(agent_name="a")
    assert (tmp_path / ".flightlog" / "data.mdb").is_file()
    with flightlog.open(tmp_path / ".flightlog") as again:
        assert again.get(trace_id).agent_name == "a"


def test_flightlog_path_environment_variable_chooses_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLIGHTLOG_PATH", str(tmp_path / "from-env"))
    with flightlog.open() as store:
        trace_id = store.log(agent_name="a")
    assert (tmp_path / "from-env" / "data.mdb").is_file()
    assert not (tmp_path / ".flightlog").exists()
    with flightlog.open(tmp_path / "from-env") as again:
        assert again.get(trace_id).agent_name == "a"


def test_explicit_path_beats_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLIGHTLOG_PATH", str(tmp_path / "from-env"))
    with flightlog.open(tmp_path / "explicit") as store:
        store.log(agent_name="a")
    assert (tmp_path / "explicit" / "data.mdb").is_file()
    assert not (tmp_path / "from-env").exists()


def test_store_directory_and_files_are_owner_only(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        store.log(agent_name="a")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(store_path) == 0o700
    assert mode(store_path / "data.mdb") == 0o600
    assert mode(store_path / "lock.mdb") == 0o600


def test_closed_store_refuses_every_operation(store: flightlog.Store) -> None:
    trace_id = store.log(agent_name="a")
    store.close()
    assert store.closed
    store.close()  # idempotent
    with pytest.raises(flightlog.StoreClosed, match="closed"):
        store.log(agent_name="a")
    with pytest.raises(flightlog.StoreClosed, match="closed"):
        store.log_many([{"agent_name": "a"}])
    with pytest.raises(flightlog.StoreClosed, match="closed"):
        store.get(trace_id)
    with pytest.raises(flightlog.StoreClosed, match="closed"):
        store.flush()


def test_reopened_store_keeps_its_data(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        trace_id = store.log(full_trace())
        before = read_back(store, trace_id)
    with flightlog.open(store_path) as reopened:
        assert reopened.get(trace_id) == before


# --- read-only ---------------------------------------------------------------------------------


def test_readonly_store_reads_but_refuses_to_log(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        trace_id = store.log(agent_name="a", input="hello")
    with flightlog.open(store_path, readonly=True) as reader:
        assert reader.readonly
        assert reader.get(trace_id).input == "hello"
        with pytest.raises(flightlog.StorageError, match="read-only"):
            reader.log(agent_name="a")
        with pytest.raises(flightlog.StorageError, match="read-only"):
            reader.log_many([{"agent_name": "a"}])
        reader.flush()
    assert count_records(store_path) == 1


def test_readonly_open_of_a_missing_store_fails_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(flightlog.StorageError, match="no store"):
        flightlog.open(missing, readonly=True)
    assert not missing.exists()


def test_readonly_handle_on_a_store_open_for_writing_still_refuses_to_log(
    store: flightlog.Store, store_path: Path
) -> None:
    trace_id = store.log(agent_name="writer")
    store.flush()
    with flightlog.open(store_path, readonly=True) as reader:
        assert reader.get(trace_id).agent_name == "writer"
        with pytest.raises(flightlog.StorageError, match="read-only"):
            reader.log(agent_name="a")
    still = store.log(agent_name="still writable")
    store.flush()
    assert store.get(still).agent_name == "still writable"


def test_opening_for_writing_while_open_readonly_in_this_process_is_refused(
    store_path: Path,
) -> None:
    with flightlog.open(store_path) as store:
        store.log(agent_name="a")
    with flightlog.open(store_path, readonly=True) as reader:
        with pytest.raises(flightlog.StorageError, match="read-only"):
            flightlog.open(store_path)
        assert reader.readonly


# --- one path, several handles -------------------------------------------------------------------


def test_same_path_opened_twice_shares_data(store_path: Path) -> None:
    with flightlog.open(store_path) as first, flightlog.open(store_path) as second:
        a = first.log(agent_name="first")
        b = second.log(agent_name="second")
        first.flush()
        second.flush()
        assert second.get(a).agent_name == "first"
        assert first.get(b).agent_name == "second"
    assert count_records(store_path) == 2


def test_same_store_via_symlink_shares_data(tmp_path: Path, store_path: Path) -> None:
    link = tmp_path / "link"
    with flightlog.open(store_path) as direct:
        link.symlink_to(store_path, target_is_directory=True)
        with flightlog.open(link) as via_link:
            a = via_link.log(agent_name="via link")
            via_link.flush()
            assert direct.get(a).agent_name == "via link"
            b = direct.log(agent_name="direct")
            direct.flush()
            assert via_link.get(b).agent_name == "direct"


def test_same_store_via_relative_path_shares_data(
    tmp_path: Path, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with flightlog.open(store_path) as absolute, flightlog.open("./sub/../store") as relative:
        a = relative.log(agent_name="relative")
        relative.flush()
        assert absolute.get(a).agent_name == "relative"


def test_closing_one_handle_leaves_the_other_usable(store_path: Path) -> None:
    first = flightlog.open(store_path)
    second = flightlog.open(store_path)
    a = first.log(agent_name="a")
    first.close()
    b = second.log(agent_name="b")
    second.flush()
    assert second.get(a).agent_name == "a"
    assert second.get(b).agent_name == "b"
    second.close()
    assert count_records(store_path) == 2


# --- round trip ----------------------------------------------------------------------------------


def test_every_field_round_trips(store: flightlog.Store) -> None:
    sent = full_trace()
    trace_id = store.log(sent)
    assert trace_id == TID
    got = read_back(store, trace_id)

    expected = msgspec.structs.replace(sent, redactions=0)
    expected.spans[0] = msgspec.structs.replace(expected.spans[0], duration_ms=1500.0)
    assert got == expected


def test_unset_fields_read_back_with_documented_defaults(store: flightlog.Store) -> None:
    trace_id = store.log(
        Trace(
            agent_name="a",
            timestamp=T0,
            token_usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
            spans=[Span(name="s", end_time=at(2), events=[SpanEvent(name="e")])],
            events=[Event()],
        )
    )
    got = read_back(store, trace_id)
    assert is_hex(got.trace_id, 32)
    span = got.spans[0]
    assert is_hex(span.span_id, 16)
    assert is_hex(got.events[0].event_id, 16)

    expected = Trace(
        agent_name="a",
        trace_id=trace_id,
        timestamp=T0,
        token_usage=TokenUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        spans=[
            Span(
                name="s",
                span_id=span.span_id,
                kind="INTERNAL",
                status_code="UNSET",
                start_time=T0,
                end_time=at(2),
                duration_ms=2000.0,
                events=[SpanEvent(name="e", timestamp=T0)],
            )
        ],
        events=[Event(event_id=got.events[0].event_id, type="custom.event", at=T0)],
        redactions=0,
    )
    assert got == expected


def test_unreported_values_stay_unset_not_zero(store: flightlog.Store) -> None:
    got = read_back(store, store.log(agent_name="a"))
    assert got.latency_ms is msgspec.UNSET
    assert got.cost_usd is msgspec.UNSET
    assert got.token_usage is msgspec.UNSET
    assert got.status is msgspec.UNSET
    assert got.ended_at is msgspec.UNSET
    assert got.input is msgspec.UNSET
    assert (got.spans, got.events, got.tool_calls, got.tags, got.metadata) == ([], [], [], [], {})


def test_timestamp_defaults_to_the_time_of_log(store: flightlog.Store) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    trace_id = store.log(agent_name="a", spans=[Span(name="s")])
    after = dt.datetime.now(dt.timezone.utc)
    got = read_back(store, trace_id)
    assert isinstance(got.timestamp, dt.datetime)
    assert before <= got.timestamp <= after
    assert got.spans[0].start_time == got.timestamp


def test_a_trace_is_listed_and_filtered_at_the_instant_get_returns(store: flightlog.Store) -> None:
    """Found by the model test: the store kept the nanoseconds of the clock (or of an ISO
    string), get() read them back rounded to the nearest microsecond and query() listed and
    filtered them rounded down, so ``query(since=get(tid).timestamp)`` could miss the trace.
    Timestamps are now stored in whole microseconds."""
    ids = [store.log(agent_name="a", spans=[Span(name="s")]) for _ in range(20)]
    ids.append(store.log(agent_name="a", timestamp="2025-06-02T12:00:00.123456789Z"))
    store.flush()

    listed = {s.trace_id: s.timestamp for s in store.query(limit=1000)}
    for trace_id in ids:
        stamp = store.get(trace_id).timestamp
        assert isinstance(stamp, dt.datetime)
        assert listed[trace_id] == stamp
        just_then = store.query(since=stamp, until=stamp + dt.timedelta(microseconds=1))
        assert [s.trace_id for s in just_then] == [trace_id]
    assert store.get(ids[-1]).timestamp == at(0).replace(microsecond=123_456)


def test_span_event_timestamp_defaults_to_its_span_start(store: flightlog.Store) -> None:
    trace_id = store.log(
        Trace(
            agent_name="a",
            timestamp=T0,
            spans=[Span(name="s", start_time=at(5), events=[SpanEvent(name="e")])],
        )
    )
    assert read_back(store, trace_id).spans[0].events[0].timestamp == at(5)


def test_trace_dict_and_keywords_log_the_same_record(store: flightlog.Store) -> None:
    fields: dict[str, Any] = {
        "agent_name": "a",
        "input": "hi",
        "timestamp": T0,
        "metadata": {"k": [1, 2]},
        "spans": [{"name": "s", "span_id": ROOT_SPAN}],
    }
    ids = [
        store.log(Trace(**{**fields, "spans": [Span(name="s", span_id=ROOT_SPAN)]})),
        store.log(fields),
        store.log(**fields),
    ]
    assert len(set(ids)) == 3
    store.flush()
    got = [msgspec.structs.replace(store.get(i), trace_id=msgspec.UNSET) for i in ids]
    assert got[0] == got[1] == got[2]
    assert got[0].spans[0].span_id == ROOT_SPAN and got[0].input == "hi"


def test_log_refuses_a_trace_and_keywords_together(
    store: flightlog.Store, store_path: Path
) -> None:
    with pytest.raises(TypeError, match="not both"):
        store.log(Trace(agent_name="a", trace_id=TID), input="x")
    store.close()
    assert count_records(store_path) == 0


def test_log_many_accepts_a_list_and_returns_ids_in_order(store: flightlog.Store) -> None:
    given = [flightlog.trace_id_for(f"run-{i}") for i in range(5)]
    ids = store.log_many(
        [
            Trace(agent_name="a", trace_id=given[0]),
            *({"agent_name": "b", "trace_id": t} for t in given[1:]),
        ]
    )
    assert ids == given
    store.flush()
    assert [store.get(t).agent_name for t in ids] == ["a", "b", "b", "b", "b"]


def test_log_many_accepts_a_generator(store: flightlog.Store) -> None:
    def traces() -> Iterator[Trace]:
        for i in range(10):
            yield Trace(agent_name="gen", input=str(i))

    ids = store.log_many(traces())
    assert len(ids) == len(set(ids)) == 10
    store.flush()
    assert [store.get(t).input for t in ids] == [str(i) for i in range(10)]
    assert store.log_many([]) == []


def test_log_many_is_all_or_nothing(store: flightlog.Store, store_path: Path) -> None:
    good = Trace(agent_name="fine", trace_id=TID)
    with pytest.raises(flightlog.ValidationError, match=r"\[1\]\.agent_name") as info:
        store.log_many([good, {"input": "no agent"}])
    assert info.value.errors[0]["path"] == "[1].agent_name"
    store.flush()
    with pytest.raises(flightlog.TraceNotFound):
        store.get(TID)
    store.close()
    assert count_records(store_path) == 0


# --- get -----------------------------------------------------------------------------------------


def test_get_of_an_unknown_id_raises_trace_not_found_naming_it(store: flightlog.Store) -> None:
    store.log(agent_name="someone else")
    store.flush()
    unknown = flightlog.new_trace_id()
    with pytest.raises(flightlog.TraceNotFound, match=unknown) as info:
        store.get(unknown)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, flightlog.FlightlogError)


@pytest.mark.parametrize(
    "bad_id",
    [
        TID.upper(),
        TID[:-1],
        TID + "0",
        "g" * 32,
        "0" * 32,
        "",
        "4bf92f35-77b3-4da6-a3ce-929d0e0e4736",
    ],
)
def test_get_of_a_malformed_id_raises_validation_error(store: flightlog.Store, bad_id: str) -> None:
    with pytest.raises(flightlog.ValidationError, match="trace_id") as info:
        store.get(bad_id)
    assert info.value.errors[0]["path"] == "trace_id"


def test_get_of_a_non_string_id_raises_validation_error(store: flightlog.Store) -> None:
    with pytest.raises(flightlog.ValidationError, match="trace_id") as info:
        store.get(cast(Any, 1234))
    assert info.value.errors[0]["path"] == "trace_id"


# --- fragments: logging the same trace id again --------------------------------------------------


def test_relogging_a_trace_id_merges_fragments(store: flightlog.Store) -> None:
    first = Trace(
        agent_name="bot",
        trace_id=TID,
        timestamp=T0,
        input="question",
        status="running",
        latency_ms=1.0,
        spans=[
            Span(name="root", span_id=ROOT_SPAN, start_time=at(0)),
            Span(name="child", span_id=CHILD_SPAN, start_time=at(1)),
        ],
        events=[Event(event_id="a1b2c3d4e5f60718", type="model.call", at=at(1))],
        tool_calls=[ToolCall(tool_name="first")],
        metadata={"a": 1, "b": 1},
        tags=["x", "y"],
    )
    second = Trace(
        agent_name="bot",
        trace_id=TID,
        timestamp=at(60),
        output="answer",
        status="succeeded",
        latency_ms=2.0,
        spans=[Span(name="child", span_id=CHILD_SPAN, status_code="OK", start_time=at(1))],
        events=[Event(event_id="b1b2c3d4e5f60718", type="model.call", at=at(2))],
        tool_calls=[ToolCall(tool_name="second")],
        metadata={"b": 2, "c": 3},
        tags=["y", "z"],
    )
    assert store.log(first) == store.log(second) == TID
    got = read_back(store, TID)

    assert got.timestamp == T0
    assert (got.input, got.output, got.status, got.latency_ms) == (
        "question",
        "answer",
        "succeeded",
        2.0,
    )
    assert [(s.span_id, s.status_code) for s in got.spans] == [
        (ROOT_SPAN, "UNSET"),
        (CHILD_SPAN, "OK"),
    ]
    assert [e.event_id for e in got.events] == ["a1b2c3d4e5f60718", "b1b2c3d4e5f60718"]
    assert [c.tool_name for c in got.tool_calls] == ["first", "second"]
    assert got.metadata == {"a": 1, "b": 2, "c": 3}
    assert got.tags == ["x", "y", "z"]
    assert got.redactions == 0


def test_resent_span_is_not_duplicated(store: flightlog.Store) -> None:
    span = Span(name="llm", span_id=ROOT_SPAN, kind="LLM", start_time=T0)
    for _ in range(3):
        store.log(Trace(agent_name="a", trace_id=TID, timestamp=T0, spans=[span]))
    got = read_back(store, TID)
    assert [s.span_id for s in got.spans] == [ROOT_SPAN]


def test_resent_event_replaces_the_earlier_version(store: flightlog.Store) -> None:
    event_id = "a1b2c3d4e5f60718"
    store.log(
        Trace(agent_name="a", trace_id=TID, events=[Event(event_id=event_id, status="pending")])
    )
    store.log(
        Trace(agent_name="a", trace_id=TID, events=[Event(event_id=event_id, status="succeeded")])
    )
    got = read_back(store, TID)
    assert [(e.event_id, e.status) for e in got.events] == [(event_id, "succeeded")]


def test_later_fragment_without_a_value_keeps_the_earlier_value(store: flightlog.Store) -> None:
    store.log(agent_name="a", trace_id=TID, output="kept", cost_usd=0.5)
    store.log(agent_name="a", trace_id=TID, status="failed")
    got = read_back(store, TID)
    assert (got.output, got.cost_usd, got.status) == ("kept", 0.5, "failed")


def test_each_fragment_is_one_record(store: flightlog.Store, store_path: Path) -> None:
    for i in range(4):
        store.log(agent_name="a", trace_id=TID, input=str(i))
    assert read_back(store, TID).input == "3"
    store.close()
    assert count_records(store_path) == 4


# --- ids -----------------------------------------------------------------------------------------


def test_trace_id_for_is_deterministic_hex() -> None:
    first = flightlog.trace_id_for("run_abc")
    assert is_hex(first, 32)
    assert flightlog.trace_id_for("run_abc") == first
    assert flightlog.trace_id_for("run_abd") != first
    digest = hashlib.sha256(b"flightlog.trace_id_for\0run_abc").hexdigest()
    assert first == digest[:32]


def test_trace_id_for_a_run_groups_its_fragments(store: flightlog.Store) -> None:
    run = flightlog.trace_id_for("run_abc")
    assert store.log(agent_name="a", trace_id=run, input="start") == run
    assert store.log(agent_name="a", trace_id=run, output="end") == run
    got = read_back(store, run)
    assert (got.trace_id, got.input, got.output) == (run, "start", "end")


def test_minted_trace_ids_are_time_ordered(store: flightlog.Store) -> None:
    ids = []
    before_ms = time.time_ns() // 1_000_000
    for _ in range(5):
        ids.append(store.log(agent_name="a"))
        time.sleep(0.003)  # different milliseconds, so the order is fixed by time
    after_ms = time.time_ns() // 1_000_000
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    for trace_id in ids:
        assert is_hex(trace_id, 32)
        assert before_ms <= int(trace_id[:12], 16) <= after_ms
        assert trace_id[12] == "7"  # UUIDv7 layout
        assert trace_id[16] in "89ab"


def test_new_ids_are_well_formed_and_distinct() -> None:
    spans = {flightlog.new_span_id() for _ in range(1000)}
    traces = {flightlog.new_trace_id() for _ in range(1000)}
    assert len(spans) == len(traces) == 1000
    assert all(is_hex(s, 16) for s in spans)
    assert all(is_hex(t, 32) for t in traces)


def test_store_files_are_created_in_a_fresh_nested_directory(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "store"
    with flightlog.open(nested) as store:
        store.log(agent_name="a")
    assert sorted(os.listdir(nested)) == ["data.mdb", "lock.mdb"]

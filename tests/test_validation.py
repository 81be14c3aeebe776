"""What the store refuses, with which path, and that a refused trace leaves nothing behind.

Every refusal test checks the error type, the path of the first error (which the exception
message names) and a word of its message, then closes the store and counts its records
directly with ``lmdb``. The property tests check that any valid trace reads back equal to what
was sent with the documented defaults applied, and that arbitrary input never crashes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast, get_args

import flightlog
import lmdb
import msgspec
import pytest
from conftest import count_records, is_hex
from flightlog import UNSET, Event, Span, SpanEvent, TokenUsage, ToolCall, Trace
from flightlog.records import SpanKind
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
T0_EPOCH = 1_748_865_600
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_A = "00f067aa0ba902b7"
SPAN_B = "53995c3f42cd8ad8"
SPAN_C = "1111111111111111"
KINDS = list(get_args(SpanKind))
DECISION_KEYS = [
    "proposal_summary",
    "changed_fields",
    "change_summary",
    "change_type",
    "final_action",
    "outcome_label",
    "outcome_score",
    "reason_summary",
    "redaction_version",
]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def rec(**fields: Any) -> dict[str, Any]:
    """A trace dict with a fixed id, so a test can also check the id was not stored."""
    return {"agent_name": "a", "trace_id": TID, **fields}


def refuse(
    store: flightlog.Store,
    store_path: Path,
    record: object,
    path: str,
    *words: str,
) -> flightlog.ValidationError:
    """Logs ``record``, expects a ValidationError at ``path``, and checks nothing was stored.

    ``words``: at least one must occur in the first error's message (any wording will do).
    """
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(cast(Any, record))
    err = info.value
    assert err.errors, "a ValidationError must list its errors"
    first = err.errors[0]
    assert first["path"] == path, err.errors
    assert path in str(err), "the exception message must name the first path"
    if words:
        assert any(w in first["message"].lower() for w in words), (words, first)
    store.close()
    assert count_records(store_path) == 0
    return err


def read_back(store: flightlog.Store, trace_id: str) -> Trace:
    store.flush()
    return store.get(trace_id)


# --- shape of the record -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [["agent_name", "a"], "agent_name=a", 42, b"\x81\xa1a\xa1b"])
def test_trace_that_is_not_a_map_is_refused(
    store: flightlog.Store, store_path: Path, value: object
) -> None:
    refuse(store, store_path, value, "", "map", "object", "dict")


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (rec(colour="red"), "colour"),
        (rec(spans=[{"name": "s", "colour": "red"}]), "spans[0].colour"),
        (rec(tool_calls=[{"tool_name": "t", "colour": "red"}]), "tool_calls[0].colour"),
        (rec(token_usage={"prompt_tokens": 1, "colour": 2}), "token_usage.colour"),
        (rec(events=[{"type": "llm", "colour": "red"}]), "events[0].colour"),
        (
            rec(spans=[{"name": "s", "events": [{"name": "e", "colour": 1}]}]),
            "spans[0].events[0].colour",
        ),
    ],
)
def test_unknown_key_is_refused(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path, "unknown", "unexpected", "not allowed")


@pytest.mark.parametrize(
    ("record", "path"),
    [
        ({"trace_id": TID, "input": "no agent"}, "agent_name"),
        ({"trace_id": TID, "agent_name": None}, "agent_name"),
        (rec(spans=[{"kind": "LLM"}]), "spans[0].name"),
        (rec(tool_calls=[{"input": {}}]), "tool_calls[0].tool_name"),
        (rec(spans=[{"name": "s", "events": [{"attributes": {}}]}]), "spans[0].events[0].name"),
    ],
)
def test_missing_required_field_is_refused(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path, "required", "missing")


@pytest.mark.parametrize("name", ["", "x" * 257, 42, ["a"]])
def test_agent_name_must_be_1_to_256_characters(
    store: flightlog.Store, store_path: Path, name: object
) -> None:
    refuse(store, store_path, {"trace_id": TID, "agent_name": name}, "agent_name")


def test_agent_name_of_256_characters_is_accepted(store: flightlog.Store) -> None:
    name = "é" * 256  # 256 characters, 512 bytes
    assert read_back(store, store.log(agent_name=name)).agent_name == name


@pytest.mark.parametrize("field", ["framework", "run_id", "request_id", "session_id"])
@pytest.mark.parametrize("value", ["", "x" * 257])
def test_identifying_strings_must_be_1_to_256_characters(
    store: flightlog.Store, store_path: Path, field: str, value: str
) -> None:
    refuse(store, store_path, rec(**{field: value}), field)


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (rec(input=5), "input"),
        (rec(output=["a"]), "output"),
        (rec(tags=["ok", 1]), "tags[1]"),
        (rec(tags="prod"), "tags"),
        (rec(spans={"name": "s"}), "spans"),
        (rec(spans=[{"name": 3}]), "spans[0].name"),
        (rec(metadata=["a"]), "metadata"),
        (rec(spans=[{"name": "s", "attributes": "x"}]), "spans[0].attributes"),
        (rec(tool_calls=[{"tool_name": "t", "error": 500}]), "tool_calls[0].error"),
    ],
)
def test_value_of_the_wrong_type_is_refused(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path)


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("status", "done", "status"),
        ("spans", [{"name": "s", "kind": "banana"}], "spans[0].kind"),
        ("spans", [{"name": "s", "status_code": "FINE"}], "spans[0].status_code"),
        ("events", [{"type": "llm", "status": "exploded"}], "events[0].status"),
    ],
)
def test_value_outside_its_enumeration_is_refused(
    store: flightlog.Store, store_path: Path, field: str, value: object, path: str
) -> None:
    refuse(store, store_path, rec(**{field: value}), path)


# --- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trace_id", [TID.upper(), TID[:-1], TID + "a", "z" * 32, "0" * 32, 12345, ""]
)
def test_malformed_trace_id_is_refused(
    store: flightlog.Store, store_path: Path, trace_id: object
) -> None:
    record = {"agent_name": "a", "trace_id": trace_id}
    refuse(store, store_path, record, "trace_id", "hex", "str")


@pytest.mark.parametrize("span_id", [SPAN_A.upper(), SPAN_A[:-1], "z" * 16, "0" * 16, TID, 7])
def test_malformed_span_id_is_refused(
    store: flightlog.Store, store_path: Path, span_id: object
) -> None:
    record = rec(spans=[{"name": "s", "span_id": span_id}])
    refuse(store, store_path, record, "spans[0].span_id", "hex", "str")


def test_parent_span_id_must_name_a_span_of_the_trace(
    store: flightlog.Store, store_path: Path
) -> None:
    # Without a trace_id the trace is new, so the parent must be in it (a named trace's
    # parent may be in an earlier fragment: test_update.py checks those).
    record = {
        "agent_name": "a",
        "spans": [
            {"name": "root", "span_id": SPAN_A},
            {"name": "orphan", "parent_span_id": SPAN_B},
        ],
    }
    refuse(store, store_path, record, "spans[1].parent_span_id", SPAN_B, "span", "parent")


def test_span_that_is_its_own_parent_is_refused(store: flightlog.Store, store_path: Path) -> None:
    record = rec(spans=[{"name": "loop", "span_id": SPAN_A, "parent_span_id": SPAN_A}])
    refuse(store, store_path, record, "spans[0].parent_span_id", "cycle")


def test_parent_cycle_is_refused(store: flightlog.Store) -> None:
    record = rec(
        spans=[
            {"name": "a", "span_id": SPAN_A, "parent_span_id": SPAN_C},
            {"name": "b", "span_id": SPAN_B, "parent_span_id": SPAN_A},
            {"name": "c", "span_id": SPAN_C, "parent_span_id": SPAN_B},
        ]
    )
    with pytest.raises(flightlog.ValidationError, match="cycle") as info:
        store.log(record)
    path = info.value.errors[0]["path"]
    assert path in {f"spans[{i}].parent_span_id" for i in range(3)}
    store.flush()
    with pytest.raises(flightlog.TraceNotFound):
        store.get(TID)


def test_duplicate_span_id_is_refused(store: flightlog.Store, store_path: Path) -> None:
    record = rec(spans=[{"name": "a", "span_id": SPAN_A}, {"name": "b", "span_id": SPAN_A}])
    refuse(store, store_path, record, "spans[1].span_id", "duplicate")


def test_valid_parent_links_are_kept(store: flightlog.Store) -> None:
    spans = [
        Span(name="root", span_id=SPAN_A),
        Span(name="child", span_id=SPAN_B, parent_span_id=SPAN_A),
        Span(name="grandchild", parent_span_id=SPAN_B),
    ]
    got = read_back(store, store.log(Trace(agent_name="a", spans=spans)))
    assert [s.parent_span_id for s in got.spans] == [UNSET, SPAN_A, SPAN_B]
    assert is_hex(got.spans[2].span_id, 16)


# --- spans ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "stored"), [("llm", "LLM"), ("Tool", "TOOL"), ("aGeNt", "AGENT")])
def test_span_kind_is_case_insensitive(store: flightlog.Store, sent: str, stored: str) -> None:
    trace_id = store.log(rec(spans=[{"name": "s", "kind": sent}]))
    assert read_back(store, trace_id).spans[0].kind == stored


def test_span_kind_and_status_default(store: flightlog.Store) -> None:
    span = read_back(store, store.log(rec(spans=[{"name": "s"}]))).spans[0]
    assert (span.kind, span.status_code) == ("INTERNAL", "UNSET")


def test_span_duration_is_derived_from_start_and_end(store: flightlog.Store) -> None:
    spans = [
        {"name": "timed", "start_time": at(1), "end_time": at(2.5)},
        {"name": "instant", "start_time": at(1), "end_time": at(1)},
        {"name": "from trace start", "end_time": at(0.25)},
    ]
    got = read_back(store, store.log(rec(timestamp=T0, spans=spans)))
    assert [s.duration_ms for s in got.spans] == [1500.0, 0.0, 250.0]
    assert got.spans[2].start_time == T0


def test_span_ending_before_it_starts_is_refused(store: flightlog.Store, store_path: Path) -> None:
    record = rec(spans=[{"name": "s", "start_time": at(2), "end_time": at(1)}])
    refuse(store, store_path, record, "spans[0].end_time", "before", "start", "after")


def test_span_ending_before_the_trace_start_it_defaults_to_is_refused(
    store: flightlog.Store, store_path: Path
) -> None:
    record = rec(timestamp=T0, spans=[{"name": "s", "end_time": at(-1)}])
    refuse(store, store_path, record, "spans[0].end_time", "before", "start", "after")


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "path"),
    [
        ({"prompt_tokens": -1}, "token_usage.prompt_tokens"),
        ({"completion_tokens": 1.5}, "token_usage.completion_tokens"),
        ({"total_tokens": "10"}, "token_usage.total_tokens"),
        ({"prompt_tokens": True}, "token_usage.prompt_tokens"),
        ({"prompt_tokens": 2**64}, "token_usage.prompt_tokens"),
    ],
)
def test_token_counts_must_be_non_negative_integers(
    store: flightlog.Store, store_path: Path, usage: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, rec(token_usage=usage), path)


@pytest.mark.parametrize(
    ("usage", "total"),
    [
        (TokenUsage(prompt_tokens=120, completion_tokens=30), 150),
        (TokenUsage(prompt_tokens=5), 5),
        (TokenUsage(prompt_tokens=2**40, completion_tokens=2**40), 2**41),
        (TokenUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3), 3),
    ],
)
def test_total_tokens_is_the_sum_when_absent(
    store: flightlog.Store, usage: TokenUsage, total: int
) -> None:
    got = read_back(store, store.log(Trace(agent_name="a", token_usage=usage))).token_usage
    assert isinstance(got, TokenUsage)
    assert got.total_tokens == total
    assert (got.prompt_tokens, got.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (rec(latency_ms=-1.0), "latency_ms"),
        (rec(cost_usd=-0.01), "cost_usd"),
        (rec(latency_ms=math.nan), "latency_ms"),
        (rec(cost_usd=math.inf), "cost_usd"),
        (rec(latency_ms="fast"), "latency_ms"),
        (rec(tool_calls=[{"tool_name": "t", "latency_ms": -5}]), "tool_calls[0].latency_ms"),
        (rec(tool_calls=[{"tool_name": "t", "latency_ms": math.nan}]), "tool_calls[0].latency_ms"),
    ],
)
def test_latency_and_cost_must_be_finite_and_non_negative(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path)


def test_integer_latency_and_cost_are_stored_as_floats(
    store: flightlog.Store, store_path: Path
) -> None:
    got = read_back(
        store,
        store.log(rec(latency_ms=3, cost_usd=0, tool_calls=[{"tool_name": "t", "latency_ms": 7}])),
    )
    assert (got.latency_ms, got.cost_usd, got.tool_calls[0].latency_ms) == (3.0, 0.0, 7.0)
    # The typed read converts ints silently, so look at the canonical record itself: it must
    # carry float64 (docs/format.md). A record this small is stored raw.
    store.log({"agent_name": "a", "latency_ms": 3})
    store.close()
    raw = _last_raw_fragment(store_path)
    assert raw["latency_ms"] == 3.0 and isinstance(raw["latency_ms"], float)


def _last_raw_fragment(path: Path) -> dict[str, Any]:
    """The canonical map of the newest record of a closed store (a small, raw one)."""
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        records = env.open_db(b"records", create=False)
        with env.begin(db=records) as txn:
            cursor = txn.cursor(db=records)
            assert cursor.last()
            value = bytes(cursor.value())
        assert value[1] == 0, "a record under 128 bytes is stored raw (docs/format.md)"
        decoded: dict[str, Any] = msgspec.msgpack.decode(value[6:])
        return decoded
    finally:
        env.close()


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (rec(metadata={"x": math.nan}), "metadata.x"),
        (rec(metadata={"a": {"b": math.inf}}), "metadata.a.b"),
        (rec(spans=[{"name": "s", "attributes": {"k": -math.inf}}]), "spans[0].attributes.k"),
        (rec(tool_calls=[{"tool_name": "t", "input": [1.0, math.nan]}]), "tool_calls[0].input[1]"),
        (rec(tool_calls=[{"tool_name": "t", "output": {"o": math.inf}}]), "tool_calls[0].output.o"),
        (rec(events=[{"type": "llm", "metadata": {"m": [math.nan]}}]), "events[0].metadata.m[0]"),
        (
            rec(spans=[{"name": "s", "events": [{"name": "e", "attributes": {"v": math.nan}}]}]),
            "spans[0].events[0].attributes.v",
        ),
    ],
)
def test_non_finite_float_anywhere_is_refused_with_its_path(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path, "finite", "nan", "inf")


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        T0,
        T0.astimezone(dt.timezone(dt.timedelta(hours=2))),
        T0.astimezone(dt.timezone(dt.timedelta(hours=-9, minutes=-30))),
        T0.replace(tzinfo=None),  # naive means UTC
        "2025-06-02T12:00:00Z",
        "2025-06-02T14:00:00+02:00",
        "2025-06-02T12:00:00",
        T0_EPOCH,
        float(T0_EPOCH),
    ],
    ids=repr,
)
def test_timestamp_accepts_every_documented_form(store: flightlog.Store, sent: object) -> None:
    got = read_back(store, store.log(rec(timestamp=sent)))
    assert got.timestamp == T0
    assert isinstance(got.timestamp, dt.datetime) and got.timestamp.utcoffset() == dt.timedelta(0)


def test_fractional_epoch_keeps_sub_second_precision(store: flightlog.Store) -> None:
    got = read_back(store, store.log(rec(timestamp=T0_EPOCH + 0.25)))
    assert got.timestamp == at(0.25)


@pytest.mark.parametrize(
    "sent",
    [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        dt.datetime(2600, 1, 1, tzinfo=UTC),
    ],
    ids=str,
)
def test_timestamps_across_the_whole_range_round_trip(
    store: flightlog.Store, sent: dt.datetime
) -> None:
    got = read_back(store, store.log(rec(timestamp=sent, ended_at=sent)))
    assert (got.timestamp, got.ended_at) == (sent, sent)


@pytest.mark.parametrize(
    "sent",
    [
        "10000-01-01T00:00:00Z",
        253_402_300_800,  # 10000-01-01T00:00:00Z
        -62_135_596_801,  # one second before 0001-01-01
        1e300,
        "yesterday",
        "2025-13-01T00:00:00Z",
        True,
        [2025, 6, 2],
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("timestamp", "timestamp"),
        ("span", "spans[0].start_time"),
        ("event", "events[0].at"),
    ],
)
def test_timestamp_out_of_range_or_unparseable_is_refused(
    store: flightlog.Store, store_path: Path, sent: object, field: str, path: str
) -> None:
    if field == "timestamp":
        record = rec(timestamp=sent)
    elif field == "span":
        record = rec(spans=[{"name": "s", "start_time": sent}])
    else:
        record = rec(events=[{"type": "llm", "at": sent}])
    refuse(store, store_path, record, path)


# --- nil, keys, bytes, size ----------------------------------------------------------------------


def test_nil_for_an_optional_field_means_not_set(store: flightlog.Store) -> None:
    record = rec(
        latency_ms=None,
        cost_usd=None,
        input=None,
        token_usage=None,
        status=None,
        ended_at=None,
        spans=[{"name": "s", "kind": None, "start_time": None, "end_time": None}],
        tool_calls=[{"tool_name": "t", "latency_ms": None, "error": None}],
        events=[{"type": None, "at": None}],
        timestamp=T0,
    )
    got = read_back(store, store.log(record))
    assert (got.latency_ms, got.cost_usd, got.input, got.token_usage, got.status, got.ended_at) == (
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
    )
    assert (got.spans[0].kind, got.spans[0].start_time, got.spans[0].end_time) == (
        "INTERNAL",
        T0,
        UNSET,
    )
    assert (got.tool_calls[0].latency_ms, got.tool_calls[0].error) == (UNSET, UNSET)
    assert (got.events[0].type, got.events[0].at) == ("custom.event", T0)


def test_nil_inside_metadata_is_a_value(store: flightlog.Store) -> None:
    got = read_back(store, store.log(rec(metadata={"k": None, "l": [None]})))
    assert got.metadata == {"k": None, "l": [None]}


@pytest.mark.parametrize(
    ("record", "path_prefix"),
    [
        (rec(metadata={1: "a"}), "metadata"),
        (rec(metadata={"a": {2.5: "b"}}), "metadata.a"),
        (rec(spans=[{"name": "s", "attributes": {b"k": 1}}]), "spans[0].attributes"),
        (rec(events=[{"type": "llm", "metadata": {None: 1}}]), "events[0].metadata"),
    ],
)
def test_non_string_key_in_metadata_or_attributes_is_refused(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path_prefix: str
) -> None:
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(record)
    path = info.value.errors[0]["path"]
    assert path.startswith(path_prefix), info.value.errors
    assert path in str(info.value)
    store.close()
    assert count_records(store_path) == 0


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (rec(metadata={"blob": b"\x00\x01"}), "metadata.blob"),
        (rec(tool_calls=[{"tool_name": "t", "output": b"raw"}]), "tool_calls[0].output"),
        (
            rec(spans=[{"name": "s", "attributes": {"l": [bytearray(b"x")]}}]),
            "spans[0].attributes.l[0]",
        ),
        (rec(input=b"text as bytes"), "input"),
    ],
)
def test_bytes_value_is_refused(
    store: flightlog.Store, store_path: Path, record: dict[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path, "bytes", "binary", "bin")


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_nesting_deeper_than_max_depth_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shallow"
    store = flightlog.open(path, max_depth=8)
    accepted = store.log(agent_name="a", metadata=nested(2))
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(rec(metadata=nested(20)))
    first = info.value.errors[0]
    assert first["path"].startswith("metadata.a"), first
    assert any(w in first["message"].lower() for w in ("deep", "depth", "nest")), first
    assert read_back(store, accepted).metadata == nested(2)
    store.close()
    assert count_records(path) == 1


def test_default_max_depth_refuses_absurd_nesting(store: flightlog.Store, store_path: Path) -> None:
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(rec(metadata=nested(100)))
    assert info.value.errors[0]["path"].startswith("metadata.a")
    store.close()
    assert count_records(store_path) == 0


def test_nesting_beyond_pythons_recursion_limit_is_a_validation_error(
    store: flightlog.Store, store_path: Path
) -> None:
    # msgspec raises RecursionError on such input; the caller must still get a
    # ValidationError, not a crash of another type.
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(rec(metadata=nested(5000)))
    assert info.value.errors[0]["path"].startswith("metadata")
    store.close()
    assert count_records(store_path) == 0


def test_trace_larger_than_max_trace_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small"
    store = flightlog.open(path, max_trace_bytes=4096)
    accepted = store.log(agent_name="a", input="x" * 1000)
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(rec(input="x" * 10_000))
    message = str(info.value).lower()
    assert any(w in message for w in ("bytes", "large", "size")), info.value.errors
    assert read_back(store, accepted).input == "x" * 1000
    store.close()
    assert count_records(path) == 1


def test_more_spans_than_max_spans_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "few-spans"
    store = flightlog.open(path, max_spans=3)
    accepted = store.log(agent_name="a", spans=[Span(name=str(i)) for i in range(3)])
    with pytest.raises(flightlog.ValidationError) as info:
        store.log(rec(spans=[{"name": str(i)} for i in range(4)]))
    assert info.value.errors[0]["path"] == "spans", info.value.errors
    assert len(read_back(store, accepted).spans) == 3
    store.close()
    assert count_records(path) == 1


# --- events --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (None, "custom.event"),
        ("llm", "model.call"),
        ("tool", "mcp.tool_call"),
        ("model.call", "model.call"),
        ("mcp.tool_call", "mcp.tool_call"),
        ("my_step", "custom.my_step"),
    ],
)
def test_event_type_is_normalized(store: flightlog.Store, sent: str | None, stored: str) -> None:
    event: dict[str, Any] = {} if sent is None else {"type": sent}
    got = read_back(store, store.log(rec(timestamp=T0, events=[event]))).events[0]
    assert got.type == stored
    assert is_hex(got.event_id, 16)
    assert got.at == T0


def test_decision_summary_with_allowed_keys_is_kept(store: flightlog.Store) -> None:
    decision: dict[str, Any] = {key: "x" * 500 for key in DECISION_KEYS}
    decision["outcome_score"] = 0.75
    decision["changed_fields"] = ["status", "amount"]
    event = Event(type="policy.decision", status="proposed", metadata={"decision": decision})
    got = read_back(store, store.log(Trace(agent_name="a", events=[event])))
    assert got.events[0].metadata["decision"] == decision


@pytest.mark.parametrize(
    ("decision", "path"),
    [
        (
            {"proposal_summary": "ok", "raw_prompt": "secret"},
            "events[0].metadata.decision.raw_prompt",
        ),
        ({"reason_summary": "x" * 501}, "events[0].metadata.decision.reason_summary"),
    ],
)
def test_decision_summary_refuses_other_keys_and_long_strings(
    store: flightlog.Store, store_path: Path, decision: dict[str, Any], path: str
) -> None:
    record = rec(events=[{"type": "policy.decision", "metadata": {"decision": decision}}])
    refuse(store, store_path, record, path)


def test_redaction_count_is_set_by_the_store(store: flightlog.Store, store_path: Path) -> None:
    try:
        trace_id = store.log(rec(redactions=7))
    except flightlog.ValidationError as err:
        assert err.errors[0]["path"] == "redactions"
        store.close()
        assert count_records(store_path) == 0
    else:
        assert read_back(store, trace_id).redactions == 0


# --- error reporting -----------------------------------------------------------------------------


def test_every_problem_is_listed_and_the_message_names_the_first(
    store: flightlog.Store, store_path: Path
) -> None:
    record = rec(latency_ms=-1.0, spans=[{"name": "s", "kind": "banana"}], cost_usd=math.nan)
    err = refuse(store, store_path, record, "latency_ms")
    paths = [e["path"] for e in err.errors]
    assert {"latency_ms", "spans[0].kind", "cost_usd"} <= set(paths), paths
    assert all(isinstance(e["message"], str) and e["message"] for e in err.errors)


def test_log_many_error_paths_start_with_the_trace_position(
    store: flightlog.Store, store_path: Path
) -> None:
    traces = [
        rec(),
        {"agent_name": "b"},
        {"agent_name": "c", "spans": [{"name": "s", "start_time": "not a time"}]},
    ]
    with pytest.raises(flightlog.ValidationError, match=r"\[2\]\.spans\[0\]\.start_time") as info:
        store.log_many(traces)
    assert info.value.errors[0]["path"] == "[2].spans[0].start_time"
    store.close()
    assert count_records(store_path) == 0


# --- values the Python layer cannot encode -------------------------------------------------------


class Opaque:
    pass


def test_python_values_msgspec_knows_are_stored_in_their_json_form(
    store: flightlog.Store,
) -> None:
    trace_id = store.log(rec(metadata={"s": {"b", "a"}, "when": dt.date(2025, 1, 2)}))
    store.flush()
    metadata = store.get(trace_id).metadata
    assert sorted(metadata["s"]) == ["a", "b"]
    assert metadata["when"] == "2025-01-02"


@pytest.mark.parametrize(
    ("record", "path"),
    [
        (rec(metadata={"obj": Opaque()}), "metadata.obj"),
        (rec(metadata={"big": 2**64}), "metadata.big"),
        (rec(metadata={"neg": -(2**63) - 1}), "metadata.neg"),
        (
            Trace(agent_name="a", trace_id=TID, spans=[Span(name="s", attributes={"x": Opaque()})]),
            "spans[0].attributes.x",
        ),
        (
            Trace(
                agent_name="a", trace_id=TID, tool_calls=[ToolCall(tool_name="t", input=object())]
            ),
            "tool_calls[0].input",
        ),
        (Trace(agent_name="a", trace_id=TID, metadata={"obj": Opaque()}), "metadata.obj"),
        # A lone surrogate is a str Python can hold but not valid UTF-8.
        (rec(input="half a pair: \ud800"), "input"),
        (rec(metadata={"k": ["ok", "\udfff"]}), "metadata.k[1]"),
    ],
)
def test_unencodable_python_value_is_refused_with_its_path(
    store: flightlog.Store, store_path: Path, record: Trace | Mapping[str, Any], path: str
) -> None:
    refuse(store, store_path, record, path)


# --- properties ----------------------------------------------------------------------------------

HEX = "0123456789abcdef"
span_ids = st.text(HEX, min_size=16, max_size=16).filter(lambda s: s != "0" * 16)
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
instants = st.datetimes(
    min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=offsets
)
durations = st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=1))
non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
finite = st.floats(allow_nan=False, allow_infinity=False)
keys = st.text(max_size=8).filter(lambda k: k != "decision")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | finite
    | st.text(max_size=20)
    | instants
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
json_maps = st.dictionaries(keys, json_values, max_size=4)
# Top-level None of an optional field means "not set", so it is not generated there.
json_present = json_values.filter(lambda v: v is not None)
short_text = st.text(min_size=1, max_size=24)
EVENT_TYPES = {"llm": "model.call", "tool": "mcp.tool_call", "model.call": "model.call"}


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | strategy


@st.composite
def valid_traces(draw: st.DrawFn) -> Trace:
    timestamp = draw(maybe(instants))
    spans: list[Span] = []
    ids = draw(st.lists(span_ids, min_size=4, max_size=4, unique=True))
    named: list[str] = []
    for i in range(draw(st.integers(0, 4))):
        span_id = draw(maybe(st.just(ids[i])))
        parent = draw(maybe(st.sampled_from(named))) if named else UNSET
        start = draw(maybe(instants))
        base = start if start is not UNSET else timestamp
        end = UNSET if base is UNSET else cast(dt.datetime, base) + draw(durations)
        end = draw(st.sampled_from([UNSET, end]))
        spans.append(
            Span(
                name=draw(short_text),
                span_id=span_id,
                parent_span_id=parent,
                kind=draw(maybe(st.sampled_from(KINDS + [k.lower() for k in KINDS]))),
                status_code=draw(maybe(st.sampled_from(["UNSET", "OK", "ERROR"]))),
                status_message=draw(maybe(st.text(max_size=16))),
                start_time=start,
                end_time=end,
                duration_ms=draw(maybe(non_negative)) if end is UNSET else UNSET,
                attributes=draw(json_maps),
                events=draw(
                    st.lists(
                        st.builds(
                            SpanEvent,
                            name=short_text,
                            timestamp=maybe(instants),
                            attributes=json_maps,
                        ),
                        max_size=2,
                    )
                ),
            )
        )
        if span_id is not UNSET:
            named.append(span_id)
    event_ids = draw(st.lists(span_ids, min_size=3, max_size=3, unique=True))
    events = [
        Event(
            event_id=draw(maybe(st.just(event_ids[i]))),
            type=draw(maybe(st.sampled_from(sorted(EVENT_TYPES)))),
            status=draw(
                maybe(
                    st.sampled_from(
                        ["started", "proposed", "pending", "succeeded", "failed", "blocked"]
                    )
                )
            ),
            at=draw(maybe(instants)),
            metadata=draw(json_maps),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    usage = draw(
        maybe(
            st.builds(
                lambda p, c, with_total: TokenUsage(
                    prompt_tokens=p,
                    completion_tokens=c,
                    total_tokens=p + c if with_total else UNSET,
                ),
                st.integers(0, 2**40),
                st.integers(0, 2**40),
                st.booleans(),
            )
        )
    )
    return Trace(
        agent_name=draw(st.text(min_size=1, max_size=256)),
        framework=draw(maybe(short_text)),
        input=draw(maybe(st.text())),
        output=draw(maybe(st.text())),
        tool_calls=draw(
            st.lists(
                st.builds(
                    ToolCall,
                    tool_name=short_text,
                    input=maybe(json_present),
                    output=maybe(json_present),
                    latency_ms=maybe(non_negative),
                    error=maybe(st.text(max_size=16)),
                ),
                max_size=3,
            )
        ),
        latency_ms=draw(maybe(non_negative)),
        token_usage=usage,
        cost_usd=draw(maybe(non_negative)),
        metadata=draw(json_maps),
        spans=spans,
        events=events,
        timestamp=timestamp,
        run_id=draw(maybe(short_text)),
        request_id=draw(maybe(short_text)),
        session_id=draw(maybe(short_text)),
        status=draw(maybe(st.sampled_from(["running", "succeeded", "failed"]))),
        ended_at=draw(maybe(instants)),
        tags=draw(st.lists(short_text, max_size=3, unique=True)),
    )


def with_defaults(
    sent: Trace, got: Trace, logged_from: dt.datetime, logged_to: dt.datetime
) -> Trace:
    """``sent`` with the documented defaults applied; minted ids are taken from ``got``
    after checking their form, and a defaulted timestamp after checking it is "now"."""
    assert is_hex(got.trace_id, 32)
    timestamp = sent.timestamp
    if timestamp is UNSET:
        assert isinstance(got.timestamp, dt.datetime)
        rounding = dt.timedelta(microseconds=1)  # nanoseconds read back as microseconds
        assert logged_from - rounding <= got.timestamp <= logged_to + rounding
        timestamp = got.timestamp
    usage = sent.token_usage
    if isinstance(usage, TokenUsage) and usage.total_tokens is UNSET:
        total = cast(int, usage.prompt_tokens) + cast(int, usage.completion_tokens)
        usage = msgspec.structs.replace(usage, total_tokens=total)
    assert len(got.spans) == len(sent.spans) and len(got.events) == len(sent.events)
    spans = []
    for mine, theirs in zip(sent.spans, got.spans, strict=True):
        if mine.span_id is UNSET:
            assert is_hex(theirs.span_id, 16)
        start = timestamp if mine.start_time is UNSET else mine.start_time
        duration = mine.duration_ms
        if mine.end_time is not UNSET:
            assert isinstance(start, dt.datetime)
            exact = (mine.end_time - start) / dt.timedelta(milliseconds=1)
            assert isinstance(theirs.duration_ms, float)
            assert math.isclose(theirs.duration_ms, exact, rel_tol=1e-12, abs_tol=1e-9)
            duration = theirs.duration_ms
        spans.append(
            msgspec.structs.replace(
                mine,
                span_id=theirs.span_id if mine.span_id is UNSET else mine.span_id,
                kind="INTERNAL" if mine.kind is UNSET else cast(Any, mine.kind.upper()),
                status_code="UNSET" if mine.status_code is UNSET else mine.status_code,
                start_time=start,
                duration_ms=duration,
                events=[
                    msgspec.structs.replace(
                        e, timestamp=start if e.timestamp is UNSET else e.timestamp
                    )
                    for e in mine.events
                ],
            )
        )
    events = []
    for mine_event, their_event in zip(sent.events, got.events, strict=True):
        if mine_event.event_id is UNSET:
            assert is_hex(their_event.event_id, 16)
        events.append(
            msgspec.structs.replace(
                mine_event,
                event_id=their_event.event_id
                if mine_event.event_id is UNSET
                else mine_event.event_id,
                type="custom.event" if mine_event.type is UNSET else EVENT_TYPES[mine_event.type],
                at=timestamp if mine_event.at is UNSET else mine_event.at,
            )
        )
    return msgspec.structs.replace(
        sent,
        trace_id=got.trace_id,
        timestamp=timestamp,
        token_usage=usage,
        spans=spans,
        events=events,
        redactions=0,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_valid_trace_reads_back_as_sent_with_defaults(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    sent = data.draw(valid_traces())
    store = _shared_store(tmp_path_factory)
    logged_from = dt.datetime.now(UTC)
    trace_id = store.log(sent)
    logged_to = dt.datetime.now(UTC)
    got = read_back(store, trace_id)
    assert got == with_defaults(sent, got, logged_from, logged_to)


_stores: dict[str, flightlog.Store] = {}


def _shared_store(factory: pytest.TempPathFactory) -> flightlog.Store:
    """One store per property test run (creating one per example would dominate the time)."""
    key = str(factory.getbasetemp())
    if key not in _stores or _stores[key].closed:
        _stores[key] = flightlog.open(factory.mktemp("property"), durability="none")
    return _stores[key]


@pytest.fixture(scope="module", autouse=True)
def _close_shared_stores() -> Iterator[None]:
    yield
    for opened in _stores.values():
        opened.close()
    _stores.clear()


FIELD_NAMES = [*Trace.__struct_fields__, *Span.__struct_fields__, *ToolCall.__struct_fields__]
FIELD_NAMES += [*Event.__struct_fields__, *TokenUsage.__struct_fields__, "name", "timestamp"]
wild_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=20)
    | st.datetimes()
    | st.datetimes(timezones=offsets)
    | st.sampled_from([TID, SPAN_A, "LLM", "llm", "succeeded", "0" * 32, "2025-06-02T12:00:00Z"])
)
wild_values = st.recursive(
    wild_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=20,
)
wild_records = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=6), wild_values, max_size=8
)


def _encode_or_empty(record: dict[str, Any]) -> bytes:
    try:
        return msgspec.msgpack.encode(record)
    except (TypeError, OverflowError, msgspec.EncodeError):
        return b""


def _accepted_or_refused(store: flightlog.Store, attempt: Callable[[], object]) -> None:
    try:
        result = attempt()
    except flightlog.ValidationError as err:
        assert err.errors, "a ValidationError must list its errors"
        for item in err.errors:
            assert isinstance(item["path"], str) and isinstance(item["message"], str)
        return
    try:
        store.flush()
    except flightlog.ValidationError as err:
        # Refused by the writer (a named trace's span parent no fragment holds): typed too.
        assert err.errors and all(isinstance(e["path"], str) for e in err.errors)
        return
    for trace_id in result if isinstance(result, list) else [result]:
        assert isinstance(trace_id, str) and is_hex(trace_id, 32)
        # Whatever is accepted must read back.
        assert isinstance(read_back(store, trace_id), Trace)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=wild_records)
def test_arbitrary_dict_is_accepted_or_refused_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, record: dict[str, Any]
) -> None:
    store = _shared_store(tmp_path_factory)
    _accepted_or_refused(store, lambda: store.log(record))
    _accepted_or_refused(store, lambda: store.log({"agent_name": "fuzz", **record}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(max_size=200) | wild_records.map(_encode_or_empty),
    cut=st.integers(0, 400),
    flip=st.integers(0, 255),
)
def test_arbitrary_bytes_are_accepted_or_refused_never_crash(
    tmp_path_factory: pytest.TempPathFactory, payload: bytes, cut: int, flip: int
) -> None:
    store = _shared_store(tmp_path_factory)
    core = store._core
    mangled = bytearray(payload[:cut] if cut < len(payload) else payload)
    if mangled:
        mangled[cut % len(mangled)] ^= flip
    for candidate in (payload, bytes(mangled)):
        _accepted_or_refused(store, partial(core.log, candidate))
        _accepted_or_refused(store, partial(core.log_many, candidate))
        _accepted_or_refused(store, partial(store.log, cast(Any, candidate)))

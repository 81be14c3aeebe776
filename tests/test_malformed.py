"""Malformed input (RELIABILITY.md test 9): a valid trace with one thing wrong in it is
refused with a ``ValidationError`` naming exactly that field, and nothing of it is stored,
alone or in a batch.

Each example builds a valid trace, then breaks it in one of the ways a caller can: a wrong
type, a bad id, a bad timestamp, NaN or infinity, a string too long, nesting too deep, a span
parent cycle, a duplicate id, invalid UTF-8, an unknown field, a trace over the size limit.
``FLIGHTLOG_LONG=1`` runs ten times as many examples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flightlog
import msgspec
import pytest
from conftest import count_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 20_000 if os.environ.get("FLIGHTLOG_LONG") == "1" else 2_000
MAX_TRACE_BYTES = 64 << 10
MAX_DEPTH = 16
HEX = "0123456789abcdef"
# Stands in for a string until the encoded bytes are patched to invalid UTF-8.
SENTINEL = "\x00UTF8\x00"

span_ids = st.lists(
    st.text(HEX, min_size=16, max_size=16).filter(lambda s: s != "0" * 16),
    min_size=4,
    max_size=4,
    unique=True,
)
plain = st.text(max_size=30)
json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | plain
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def valid_traces(draw: st.DrawFn) -> dict[str, Any]:
    """A valid trace of every part (2 to 4 spans, a tool call, an event), as plain values."""
    ids = draw(span_ids)
    spans = [
        {
            "name": draw(st.text(min_size=1, max_size=20)),
            "span_id": ids[i],
            "start_time": "2025-06-02T12:00:00Z",
            "attributes": {"k": draw(json_values)},
        }
        for i in range(draw(st.integers(2, 4)))
    ]
    for i in range(1, len(spans)):
        spans[i]["parent_span_id"] = ids[draw(st.integers(0, i - 1))]
    return {
        "agent_name": draw(st.text(min_size=1, max_size=40)),
        "input": draw(plain),
        "timestamp": "2025-06-02T12:00:00Z",
        "latency_ms": draw(st.floats(0, 1e6)),
        "token_usage": {"prompt_tokens": draw(st.integers(0, 10**6)), "completion_tokens": 2},
        "tool_calls": [{"tool_name": "search", "input": draw(json_values), "latency_ms": 1.0}],
        "metadata": {"run": draw(json_values)},
        "spans": spans,
        "events": [{"type": "tool", "event_id": ids[0]}],
        "tags": ["a"],
    }


ints = st.integers(-(2**63), 2**64 - 1)
not_a_string = ints | st.booleans() | st.floats() | st.lists(ints, max_size=2)
not_a_number = (
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-300, True])
    | plain
    | st.lists(ints, min_size=1, max_size=2)
)
not_a_count = st.integers(-(2**63), -1) | st.sampled_from([0.5, math.nan, math.inf, 1e300]) | plain
not_a_time = (
    st.sampled_from(["yesterday", "2025-13-01T00:00:00Z", "2025-06-31", "", "T12:00", "now"])
    | st.sampled_from([math.nan, math.inf, 1e20, -1e20, 2**64 - 1])
    | st.booleans()
)
bad_ids = st.text(max_size=40).filter(
    lambda s: not (len(s) in (16, 32) and all(c in HEX for c in s) and set(s) != {"0"})
) | st.sampled_from(["0" * 16, "0" * 32, "ABCDEF0123456789", 12])
not_a_list = st.text(max_size=3) | st.dictionaries(plain, ints, max_size=2)
not_a_map = st.text(max_size=3) | st.lists(ints, max_size=2) | ints

# (path, wrong values): `spans[1]` is there in every trace; `[-1]` means the last span.
WRONG_VALUES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("agent_name", not_a_string),
    ("input", not_a_string),
    ("framework", not_a_string),
    ("run_id", not_a_string),
    ("spans[1].name", not_a_string),
    ("spans[1].status_message", not_a_string),
    ("tool_calls[0].tool_name", not_a_string),
    ("tool_calls[0].error", not_a_string),
    ("latency_ms", not_a_number),
    ("cost_usd", not_a_number),
    ("tool_calls[0].latency_ms", not_a_number),
    ("spans[1].duration_ms", not_a_number),
    ("token_usage.prompt_tokens", not_a_count),
    ("token_usage.total_tokens", not_a_count),
    ("timestamp", not_a_time),
    ("ended_at", not_a_time),
    ("spans[1].start_time", not_a_time),
    ("spans[1].end_time", not_a_time),
    ("trace_id", bad_ids),
    ("spans[1].span_id", bad_ids),
    ("spans[1].parent_span_id", bad_ids),
    ("events[0].event_id", not_a_string),  # caller-chosen: any 1..256 characters
    ("status", plain.filter(lambda s: s not in ("running", "succeeded", "failed"))),
    ("spans[1].kind", st.sampled_from(["", "server ", "LLMS", "span", "internals"])),
    ("spans[1].status_code", plain.filter(lambda s: s not in ("UNSET", "OK", "ERROR"))),
    ("tags", not_a_list),
    ("spans", not_a_list),
    ("tool_calls", not_a_list),
    ("metadata", not_a_map),
    ("token_usage", not_a_map),
    ("spans[1].attributes", not_a_map),
    ("tool_calls[0]", not_a_map),
]


def parts(path: str) -> list[str | int]:
    """``spans[1].name`` as ``["spans", 1, "name"]``."""
    out: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        out.append(name)
        if rest:
            out.append(int(rest.rstrip("]")))
    return out


def put(record: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = parts(path)
    node: Any = record
    for key in parents:
        node = node[key]
    node[last] = value


Mutation = Callable[[st.DrawFn, dict[str, Any]], tuple[Any, str]]


def wrong_value(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    path, values = draw(st.sampled_from(WRONG_VALUES))
    put(record, path, draw(values))
    return record, path


def non_finite_deep(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    depth = draw(st.integers(0, 4))
    value: Any = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    for _ in range(depth):
        value = [value]
    record["spans"][0]["attributes"]["x"] = value
    return record, "spans[0].attributes.x" + "[0]" * depth


def too_long(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    path, limit = draw(
        st.sampled_from(
            [("agent_name", 256), ("run_id", 256), ("tags[0]", 256), ("spans[1].name", 1024)]
        )
    )
    put(record, path, "é" * draw(st.integers(limit + 1, 4 * limit)))
    return record, path


def too_large(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    record["output"] = "x" * draw(st.integers(MAX_TRACE_BYTES, 2 * MAX_TRACE_BYTES))
    return record, ""  # the limit is the whole trace's


def too_deep(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    value: Any = draw(ints)
    for _ in range(draw(st.integers(MAX_DEPTH, 10 * MAX_DEPTH))):
        value = draw(st.sampled_from([lambda v: [v], lambda v: {"k": v}]))(value)
    record["metadata"]["deep"] = value
    return record, "metadata.deep"  # the error's path continues inside it


def parent_cycle(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    spans = record["spans"]
    members = draw(st.lists(st.integers(0, len(spans) - 1), min_size=1, unique=True))
    for i, member in enumerate(members):
        spans[member]["parent_span_id"] = spans[members[i - 1]]["span_id"]
    return record, f"spans[{min(members)}].parent_span_id"


def duplicate_id(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    if draw(st.booleans()):
        record["events"].append({"type": "tool", "event_id": record["events"][0]["event_id"]})
        return record, "events[1].event_id"
    spans = record["spans"]
    later = draw(st.integers(1, len(spans) - 1))
    spans[later]["span_id"] = spans[0]["span_id"]
    for span in spans[1:]:
        span.pop("parent_span_id")
    return record, f"spans[{later}].span_id"


def unknown_field(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    path = draw(st.sampled_from(["colour", "spans[1].colour", "tool_calls[0].colour"]))
    put(record, path, draw(json_values))
    return record, path


def invalid_utf8(draw: st.DrawFn, record: dict[str, Any]) -> tuple[Any, str]:
    path = draw(st.sampled_from(["input", "agent_name", "spans[1].name", "metadata.run"]))
    put(record, path, SENTINEL)
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))
    encoded = msgspec.msgpack.encode(record)
    patched = bad + SENTINEL.encode()[len(bad) :]
    return encoded.replace(SENTINEL.encode(), patched), path


MUTATIONS: list[Mutation] = [
    wrong_value,
    wrong_value,
    wrong_value,
    non_finite_deep,
    too_long,
    too_large,
    too_deep,
    parent_cycle,
    duplicate_id,
    unknown_field,
    invalid_utf8,
]


@st.composite
def malformed_traces(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid trace broken in one way, msgpack-encoded, and the path of what is broken."""
    record, path = draw(st.sampled_from(MUTATIONS))(draw, draw(valid_traces()))
    encoded = record if isinstance(record, bytes) else msgspec.msgpack.encode(record)
    return encoded, path


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[flightlog.Store, Path]]:
    path = tmp_path_factory.mktemp("malformed") / "store"
    store = flightlog.open(
        path, durability="none", max_trace_bytes=MAX_TRACE_BYTES, max_depth=MAX_DEPTH
    )
    # One valid trace first, so "nothing stored" is checked against a store that has data.
    store.log(agent_name="valid", input="before")
    yield store, path
    store.close()
    assert count_records(path) == 1


def refused_at(error: flightlog.ValidationError, path: str) -> bool:
    paths = [e["path"] for e in error.errors]
    return any(p == path or p.startswith((path + ".", path + "[")) for p in paths)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=malformed_traces(), valid=st.integers(0, 3), position=st.integers(0, 3))
def test_a_trace_with_one_thing_wrong_is_refused_at_that_field_and_nothing_is_stored(
    limited: tuple[flightlog.Store, Path], case: tuple[bytes, str], valid: int, position: int
) -> None:
    store, _ = limited
    payload, path = case
    before = store.count()
    with pytest.raises(flightlog.ValidationError) as alone:
        store._core.log(payload)
    assert refused_at(alone.value, path), (path, alone.value.errors)
    assert all(isinstance(e["message"], str) and e["message"] for e in alone.value.errors)
    # In a batch, the error's path starts with the trace's position and no trace is stored.
    good = msgspec.msgpack.encode({"agent_name": "valid", "input": "in a batch"})
    position = min(position, valid)
    items = [good] * position + [payload] + [good] * (valid - position)
    batch = bytes([0x90 + len(items)]) + b"".join(items)
    with pytest.raises(flightlog.ValidationError) as batched:
        store._core.log_many(batch)
    assert refused_at(batched.value, f"[{position}]" + (f".{path}" if path else "")), (
        batched.value.errors
    )
    store.flush()
    assert store.count() == before

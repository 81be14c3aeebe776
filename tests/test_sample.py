"""The sample traces: deterministic, shaped like the product spec's standard trace, storable."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import flightlog
import msgspec
import pytest
from flightlog import Trace
from flightlog.sample import (
    BASE_TIME,
    SIZES,
    Size,
    many_spans_trace,
    sample_traces,
    sized_trace,
    standard_trace,
)


def _json_size(trace: Trace) -> int:
    return len(msgspec.json.encode(trace))


def test_sample_traces_are_deterministic_for_a_seed() -> None:
    first = msgspec.json.encode(sample_traces(60, seed=3))
    assert msgspec.json.encode(sample_traces(60, seed=3)) == first
    assert msgspec.json.encode(sample_traces(60, seed=4)) != first


def test_standard_trace_depends_only_on_the_rng_state() -> None:
    assert standard_trace(random.Random(9)) == standard_trace(random.Random(9))
    assert standard_trace(random.Random(9)) != standard_trace(random.Random(10))


@pytest.mark.parametrize("seed", range(10))
def test_standard_trace_has_the_benchmark_shape(seed: int) -> None:
    trace = standard_trace(random.Random(seed))

    assert 4000 <= _json_size(trace) <= 6500
    assert isinstance(trace.input, str) and isinstance(trace.output, str)
    assert 450 <= len(trace.input) <= 510
    assert 1400 <= len(trace.output) <= 1510
    assert len(trace.tool_calls) == 3
    for call in trace.tool_calls:
        assert 100 <= len(msgspec.json.encode(call.input)) <= 200
        assert 200 <= len(msgspec.json.encode(call.output)) <= 300
    kinds = Counter(span.kind for span in trace.spans)
    assert len(trace.spans) == 6
    assert kinds == {"AGENT": 1, "LLM": 2, "TOOL": 3}
    assert trace.run_id and trace.request_id and trace.status == "succeeded"


@pytest.mark.parametrize("seed", range(5))
def test_standard_trace_spans_are_timed_children_of_the_root(seed: int) -> None:
    trace = standard_trace(random.Random(seed))
    root, *children = trace.spans
    assert isinstance(root.start_time, dt.datetime) and isinstance(root.end_time, dt.datetime)

    assert root.kind == "AGENT" and root.parent_span_id is msgspec.UNSET
    assert {child.parent_span_id for child in children} == {root.span_id}
    assert len({span.span_id for span in trace.spans}) == 6
    for span in trace.spans:
        assert isinstance(span.start_time, dt.datetime)
        assert isinstance(span.end_time, dt.datetime)
        assert span.start_time.utcoffset() == dt.timedelta(0)
        assert root.start_time <= span.start_time < span.end_time <= root.end_time
    assert trace.timestamp == root.start_time
    assert trace.ended_at == root.end_time


def test_llm_spans_carry_gen_ai_usage_that_adds_up_to_the_trace_tokens() -> None:
    trace = standard_trace(random.Random(1))
    llm = [span for span in trace.spans if span.kind == "LLM"]
    keys = {"gen_ai.system", "gen_ai.request.model", "gen_ai.usage.input_tokens"}

    assert all(keys | {"gen_ai.usage.output_tokens"} <= span.attributes.keys() for span in llm)
    usage = trace.token_usage
    assert isinstance(usage, flightlog.TokenUsage)
    assert usage.prompt_tokens == sum(s.attributes["gen_ai.usage.input_tokens"] for s in llm)
    assert usage.completion_tokens == sum(s.attributes["gen_ai.usage.output_tokens"] for s in llm)
    assert trace.cost_usd == pytest.approx(sum(s.attributes["gen_ai.usage.cost"] for s in llm))


def test_text_is_made_of_words_not_random_letters() -> None:
    output = standard_trace(random.Random(2)).output
    assert isinstance(output, str)
    words = output.split()

    assert 150 <= len(words) <= 400
    assert len({w.strip(",.").lower() for w in words}) < len(words)  # words recur


@pytest.mark.parametrize(
    ("size", "low", "high"),
    [
        ("1kb", 800, 1500),
        ("standard", 4000, 6500),
        ("100kb", 90_000, 120_000),
        ("1mb", 900_000, 1_200_000),
        ("many_spans", 10_000, 30_000),
    ],
)
def test_size_variants_have_their_size(size: Size, low: int, high: int) -> None:
    assert low <= _json_size(standard_trace(random.Random(0), size=size)) <= high


def test_many_spans_nests_100_spans_under_the_root() -> None:
    trace = standard_trace(random.Random(0), size="many_spans")
    ids = {span.span_id for span in trace.spans}

    assert len(trace.spans) == len(ids) == 100
    assert all(span.parent_span_id in ids for span in trace.spans[1:])
    assert max(len(msgspec.msgpack.encode(span)) for span in trace.spans[1:]) <= 150


@pytest.mark.parametrize("size", SIZES)
def test_each_variant_round_trips_through_a_store(tmp_path: Path, size: Size) -> None:
    trace = standard_trace(random.Random(5), size=size)
    with flightlog.open(tmp_path / "store") as store:
        trace_id = store.log(trace)
        store.flush()
        stored = store.get(trace_id)

    assert stored.trace_id == trace_id
    assert (stored.agent_name, stored.input, stored.output) == (
        trace.agent_name,
        trace.input,
        trace.output,
    )
    assert stored.tool_calls == trace.tool_calls
    assert stored.token_usage == trace.token_usage
    assert [(s.span_id, s.parent_span_id, s.kind) for s in stored.spans] == [
        (s.span_id, s.parent_span_id, s.kind) for s in trace.spans
    ]


def test_the_demo_mix_varies_agents_failures_events_sessions_and_tags() -> None:
    traces = sample_traces(300)

    assert len({t.agent_name for t in traces}) == 20
    models = {s.attributes.get("gen_ai.request.model") for t in traces for s in t.spans}
    assert len(models - {None}) > 10
    failed = [t for t in traces if t.status == "failed"]
    assert 3 <= len(failed) <= 60
    for trace in failed:
        assert any(span.status_code == "ERROR" for span in trace.spans)
    assert any(call.error for t in failed for call in t.tool_calls)
    event_types = {e.type for t in traces for e in t.events}
    assert {"llm", "tool", "approval.requested"} <= event_types
    sessions = Counter(t.session_id for t in traces if t.session_id)
    assert max(sessions.values()) > 1
    assert any(t.tags for t in traces)


def test_the_demo_mix_is_interesting_even_when_short() -> None:
    traces = sample_traces(3)

    assert traces[1].status == "failed"
    assert traces[2].events


@pytest.mark.parametrize("base", [BASE_TIME, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)])
def test_traces_start_within_six_hours_before_the_base(base: dt.datetime) -> None:
    traces = sample_traces(50) if base == BASE_TIME else sample_traces(50, base=base)
    for trace in traces:
        assert isinstance(trace.timestamp, dt.datetime)
        assert base - dt.timedelta(hours=6) <= trace.timestamp <= base


def test_the_demo_mix_is_accepted_by_the_store_in_one_batch(tmp_path: Path) -> None:
    traces = sample_traces(300)
    with flightlog.open(tmp_path / "store") as store:
        ids = store.log_many(traces)
        store.flush()
        failed = next(i for i, t in zip(ids, traces, strict=True) if t.status == "failed")
        stored = store.get(failed)

    assert len(set(ids)) == 300
    assert stored.status == "failed"
    assert [s.status_code for s in stored.spans].count("ERROR") >= 1


# --- the benchmark's size table: sized_trace and many_spans_trace ----------------------------


@pytest.mark.parametrize("target", [1000, 2500, 4000, 5600, 20_000, 100_000, 1_000_000])
@pytest.mark.parametrize("seed", range(3))
def test_sized_trace_is_within_ten_percent_of_its_target_as_json(target: int, seed: int) -> None:
    size = _json_size(sized_trace(random.Random(seed), target))
    assert 0.9 * target <= size <= 1.1 * target


def test_sized_trace_has_the_standard_shape_from_4000_bytes_and_one_model_call_below() -> None:
    large = sized_trace(random.Random(1), 100_000)
    small = sized_trace(random.Random(1), 1000)

    assert Counter(s.kind for s in large.spans) == {"AGENT": 1, "LLM": 2, "TOOL": 3}
    assert len(large.tool_calls) == 3
    assert [s.kind for s in small.spans] == ["LLM"]
    assert small.tool_calls == []


def test_sized_trace_scales_every_text_in_the_standard_proportions() -> None:
    trace = sized_trace(random.Random(2), 100_000)
    assert isinstance(trace.input, str) and isinstance(trace.output, str)

    assert 2.8 <= len(trace.output) / len(trace.input) <= 3.2  # 1500 : 500
    for call in trace.tool_calls:
        assert len(msgspec.json.encode(call.output)) > len(msgspec.json.encode(call.input)) > 1000


def test_sized_trace_is_deterministic_and_consumes_the_rng_like_one_trace() -> None:
    first, second = random.Random(7), random.Random(7)
    a = [sized_trace(first, 50_000) for _ in range(3)]
    b = [sized_trace(second, 50_000) for _ in range(3)]

    assert a == b
    assert first.random() == second.random()
    assert a[0] != a[1]
    assert sized_trace(random.Random(8), 50_000) != a[0]


def test_sized_trace_refuses_targets_below_the_smallest_shape() -> None:
    with pytest.raises(ValueError, match="at least 1000"):
        sized_trace(random.Random(0), 999)


@pytest.mark.parametrize("seed", range(3))
def test_many_spans_trace_is_a_tree_of_100_small_spans(seed: int) -> None:
    trace = many_spans_trace(random.Random(seed))
    root, *rest = trace.spans
    ids = {span.span_id for span in trace.spans}
    sizes = [len(msgspec.msgpack.encode(span)) for span in rest]

    assert len(trace.spans) == len(ids) == 100
    assert root.kind == "AGENT" and root.parent_span_id is msgspec.UNSET
    assert all(span.parent_span_id in ids for span in rest)
    assert Counter(span.kind for span in rest) == {"INTERNAL": 9, "LLM": 45, "TOOL": 45}
    # 100 bytes is below the smallest timed child span: every span is at that floor.
    assert all(110 <= size <= 135 for size in sizes)
    assert 10_000 <= _json_size(trace) <= 20_000


@pytest.mark.parametrize("span_bytes", [300, 1000])
def test_many_spans_trace_pads_spans_to_span_bytes(span_bytes: int) -> None:
    trace = many_spans_trace(random.Random(0), spans=40, span_bytes=span_bytes)
    sizes = [len(msgspec.msgpack.encode(span)) for span in trace.spans[1:]]

    assert len(trace.spans) == 40
    assert all(0.9 * span_bytes <= size <= 1.1 * span_bytes for size in sizes)


@pytest.mark.parametrize("spans", [1, 2, 11, 12, 57])
def test_many_spans_trace_makes_exactly_the_spans_asked(spans: int) -> None:
    assert len(many_spans_trace(random.Random(0), spans=spans).spans) == spans


def test_many_spans_trace_is_deterministic_for_the_rng_state() -> None:
    assert many_spans_trace(random.Random(4)) == many_spans_trace(random.Random(4))
    assert many_spans_trace(random.Random(4)) != many_spans_trace(random.Random(5))


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: sized_trace(rng, 1000),
        lambda rng: sized_trace(rng, 100_000),
        lambda rng: sized_trace(rng, 1_000_000),
        lambda rng: many_spans_trace(rng),
        lambda rng: many_spans_trace(rng, spans=300, span_bytes=400),
    ],
    ids=["1kb", "100kb", "1mb", "100-spans", "300-spans-of-400"],
)
def test_benchmark_variants_are_stored_as_given(
    tmp_path: Path, make: Callable[[random.Random], Trace]
) -> None:
    trace = make(random.Random(11))
    with flightlog.open(tmp_path / "store") as store:
        trace_id = store.log(trace)
        store.flush()
        stored = store.get(trace_id)

    assert (stored.input, stored.output, stored.tool_calls) == (
        trace.input,
        trace.output,
        trace.tool_calls,
    )
    assert [(s.span_id, s.parent_span_id, s.kind, s.attributes) for s in stored.spans] == [
        (s.span_id, s.parent_span_id, s.kind, s.attributes) for s in trace.spans
    ]

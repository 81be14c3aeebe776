"""Instrumentation (SPEC §2): ``store.trace()`` / ``t.span()`` context managers, the
``@traced`` decorator, context in ``contextvars`` across threads, tasks and generators, the
default store, and the :class:`Capture` hook the pytest plugin uses."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import math
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import flightlog
import pytest
from conftest import count_records
from flightlog import NoDefaultStore, TraceNotActive, ValidationError
from flightlog.instrument import Capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(autouse=True)
def no_default_store() -> Iterator[None]:
    """Every test starts and ends without a default store."""
    flightlog.set_default_store(None)
    yield
    flightlog.set_default_store(None)


def stored(store: flightlog.Store, trace_id: str) -> flightlog.Trace:
    store.flush()
    return store.get(trace_id)


def spans_by_name(trace: flightlog.Trace) -> dict[str, flightlog.Span]:
    return {span.name: span for span in trace.spans}


# --- a trace's two fragments -------------------------------------------------------------------


def test_entering_a_trace_logs_it_running(store: flightlog.Store) -> None:
    with store.trace("support-bot", input="where is my order?", session_id="s1") as t:
        running = stored(store, t.trace_id)
        assert (running.status, running.input, running.session_id) == (
            "running",
            "where is my order?",
            "s1",
        )
        assert running.output is flightlog.UNSET


def test_leaving_a_trace_records_output_latency_and_success(store: flightlog.Store) -> None:
    with store.trace(agent_name="support-bot", input="q") as t:
        t.output = "answer"

    trace = stored(store, t.trace_id)
    assert (trace.status, trace.input, trace.output) == ("succeeded", "q", "answer")
    assert isinstance(trace.latency_ms, float) and trace.latency_ms >= 0
    assert isinstance(trace.ended_at, dt.datetime)
    assert trace.ended_at >= trace.timestamp  # type: ignore[operator]
    assert store.count(status="succeeded") == 1 and store.count(status="running") == 0


def test_an_exception_fails_the_trace_records_it_and_propagates(store: flightlog.Store) -> None:
    with pytest.raises(KeyError, match="order 42"), store.trace("bot") as t:
        raise KeyError("order 42")

    trace = stored(store, t.trace_id)
    assert trace.status == "failed"
    assert trace.metadata["error"] == {"type": "KeyError", "message": "'order 42'"}
    assert store.count(has_errors=True) == 1


def test_both_fragments_share_one_trace_id(store: flightlog.Store, store_path: Path) -> None:
    with store.trace("bot") as t:
        pass
    assert stored(store, t.trace_id).status == "succeeded"
    assert store.count() == 1
    store.close()
    assert count_records(store_path) == 2


def test_a_caller_named_trace_id_is_used(store: flightlog.Store) -> None:
    tid = flightlog.trace_id_for("run-7")
    with store.trace("bot", trace_id=tid) as t:
        pass
    assert t.trace_id == tid
    assert stored(store, tid).status == "succeeded"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "succeeded"),
        ("latency_ms", 1.0),
        ("ended_at", 0.0),
        ("token_usage", {}),
        ("cost_usd", 1.0),
    ],
)
def test_fields_the_trace_measures_cannot_be_given(
    store: flightlog.Store, store_path: Path, field: str, value: object
) -> None:
    with pytest.raises(ValidationError) as caught:
        store.trace("bot", **{field: value})
    assert [e["path"] for e in caught.value.errors] == [field]
    store.close()
    assert count_records(store_path) == 0


def test_a_trace_refused_at_entry_stores_nothing(store: flightlog.Store, store_path: Path) -> None:
    with pytest.raises(ValidationError) as caught, store.trace("bot", tags=[1]):
        pytest.fail("the block must not run")
    assert [e["path"] for e in caught.value.errors] == ["tags[0]"]
    assert flightlog.current_trace() is None
    store.close()
    assert count_records(store_path) == 0


# --- spans -------------------------------------------------------------------------------------


def test_nested_spans_name_their_parents(store: flightlog.Store) -> None:
    with store.trace("bot") as t:
        with t.span("plan", kind="AGENT") as plan:
            with t.span("chat", kind="LLM", model="gpt-4o") as chat:
                assert flightlog.current_span() is chat
            assert flightlog.current_span() is plan
            with t.span("search", kind="TOOL"):
                pass
        with t.span("answer"):
            pass
        assert flightlog.current_span() is None

    spans = spans_by_name(stored(store, t.trace_id))
    assert spans["plan"].parent_span_id is flightlog.UNSET
    assert spans["chat"].parent_span_id == plan.span_id == spans["plan"].span_id
    assert spans["search"].parent_span_id == plan.span_id
    assert spans["answer"].parent_span_id is flightlog.UNSET
    assert (spans["plan"].kind, spans["chat"].kind, spans["answer"].kind) == (
        "AGENT",
        "LLM",
        "INTERNAL",
    )
    assert spans["chat"].attributes == {"model": "gpt-4o"}


def test_spans_are_listed_in_start_order(store: flightlog.Store) -> None:
    with store.trace("bot") as t:
        with t.span("outer"), t.span("inner"):
            pass
        with t.span("last"):
            pass
    assert [s.name for s in stored(store, t.trace_id).spans] == ["outer", "inner", "last"]


def test_span_times_nest_inside_their_parent(store: flightlog.Store) -> None:
    with store.trace("bot") as t, t.span("outer"):
        with t.span("first"):
            pass
        with t.span("second"):
            pass

    trace = stored(store, t.trace_id)
    s = spans_by_name(trace)
    times = [
        trace.timestamp,
        s["outer"].start_time,
        s["first"].start_time,
        s["first"].end_time,
        s["second"].start_time,
        s["second"].end_time,
        s["outer"].end_time,
        trace.ended_at,
    ]
    assert times == sorted(times)  # type: ignore[type-var]
    for span in trace.spans:
        assert isinstance(span.duration_ms, float) and span.duration_ms >= 0


def test_an_exception_in_a_span_marks_it_error_with_an_event(store: flightlog.Store) -> None:
    with pytest.raises(ValueError), store.trace("bot") as t:
        with t.span("ok"):
            pass
        with t.span("outer"), t.span("inner"):
            raise ValueError("bad tool output")

    trace = stored(store, t.trace_id)
    spans = spans_by_name(trace)
    assert spans["ok"].status_code == "UNSET"
    for name in ("outer", "inner"):
        span = spans[name]
        assert span.status_code == "ERROR"
        assert span.status_message == "ValueError: bad tool output"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes == {
            "exception.type": "ValueError",
            "exception.message": "bad tool output",
        }
    assert trace.status == "failed"


def test_a_caught_exception_fails_the_span_but_not_the_trace(store: flightlog.Store) -> None:
    with store.trace("bot") as t:
        with pytest.raises(TimeoutError), t.span("flaky call"):
            raise TimeoutError("upstream")
        t.output = "recovered"

    trace = stored(store, t.trace_id)
    assert trace.status == "succeeded"
    assert trace.spans[0].status_code == "ERROR"
    assert store.count(has_errors=True) == 1  # an ERROR span counts


def test_span_set_add_event_and_status(store: flightlog.Store) -> None:
    with store.trace("bot") as t, t.span("chat", kind="LLM") as s:
        s.set({"gen_ai.request.model": "gpt-4o"}, temperature=0.2)
        s.set(temperature=0.5)
        s.add_event("retry", attempt=2)
        s.set_status("OK", "fine")

    (span,) = stored(store, t.trace_id).spans
    assert span.attributes == {"gen_ai.request.model": "gpt-4o", "temperature": 0.5}
    (event,) = span.events
    assert (event.name, event.attributes) == ("retry", {"attempt": 2})
    assert span.start_time <= event.timestamp <= span.end_time  # type: ignore[operator]
    assert (span.status_code, span.status_message) == ("OK", "fine")


def test_tool_calls_and_usage_accumulate(store: flightlog.Store) -> None:
    with store.trace("bot") as t:
        t.tool_call("search", input={"q": "order 42"}, output=["hit"], latency_ms=12.5)
        t.tool_call("refund", error="not allowed")
        t.usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.002)
        t.usage(prompt_tokens=50, cost_usd=0.001)

    trace = stored(store, t.trace_id)
    assert trace.tool_calls == [
        flightlog.ToolCall(
            tool_name="search", input={"q": "order 42"}, output=["hit"], latency_ms=12.5
        ),
        flightlog.ToolCall(tool_name="refund", error="not allowed"),
    ]
    assert trace.token_usage == flightlog.TokenUsage(
        prompt_tokens=150, completion_tokens=20, total_tokens=170
    )
    assert trace.cost_usd == pytest.approx(0.003)
    (summary,) = store.query()
    assert summary.has_errors  # the tool call's error


def test_llm_span_usage_counts_when_usage_was_not_reported(store: flightlog.Store) -> None:
    with store.trace("bot") as t, t.span("chat", kind="LLM") as s:
        s.set({"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3})
    store.flush()
    (summary,) = store.query()
    assert summary.token_usage == flightlog.TokenUsage(
        prompt_tokens=7, completion_tokens=3, total_tokens=10
    )


def test_metadata_set_during_the_trace_merges_with_the_entry_metadata(
    store: flightlog.Store,
) -> None:
    with store.trace("bot", metadata={"user": "u1", "plan": "free"}) as t:
        t.set_metadata({"plan": "pro"}, retries=2)

    assert stored(store, t.trace_id).metadata == {"user": "u1", "plan": "pro", "retries": 2}


def test_set_error_fails_the_trace_without_an_exception(store: flightlog.Store) -> None:
    with store.trace("pytest") as t:
        t.set_error("AssertionError", "assert 1 == 2")

    trace = stored(store, t.trace_id)
    assert trace.status == "failed"
    assert trace.metadata["error"] == {"type": "AssertionError", "message": "assert 1 == 2"}


def test_an_exception_takes_precedence_over_set_error(store: flightlog.Store) -> None:
    with pytest.raises(OSError), store.trace("bot") as t:
        t.set_error("Refused", "handled")
        raise OSError("disk")
    assert stored(store, t.trace_id).metadata["error"] == {"type": "OSError", "message": "disk"}


def test_a_refused_final_fragment_still_ends_the_trace(tmp_path: Path) -> None:
    secret = "sk-" + "a1B2c3D4e5" * 5
    with flightlog.open(tmp_path / "strict", redaction="reject") as strict:
        with pytest.raises(flightlog.SecretDetected) as caught, strict.trace("bot") as t:
            with t.span("chat") as s:
                s.set(prompt=f"use key {secret}")
            t.output = "done"
        assert [e["path"] for e in caught.value.errors] == ["spans[0].attributes.prompt"]

        trace = stored(strict, t.trace_id)
        assert trace.status == "failed"
        assert trace.spans == [] and trace.output is flightlog.UNSET
        assert trace.metadata["error"]["type"] == "flightlog.errors.SecretDetected"
        assert "spans[0].attributes.prompt" in trace.metadata["final_fragment_refused"]
        assert secret not in repr(trace)


def test_a_refused_final_fragment_keeps_the_block_exception(tmp_path: Path) -> None:
    secret = "sk-" + "a1B2c3D4e5" * 5
    with flightlog.open(tmp_path / "strict", redaction="reject") as strict:
        with pytest.raises(LookupError), strict.trace("bot") as t:
            t.output = secret
            raise LookupError("no such order")
        trace = stored(strict, t.trace_id)
        assert trace.status == "failed"
        assert trace.metadata["error"] == {"type": "LookupError", "message": "no such order"}


# --- misuse ------------------------------------------------------------------------------------


def test_a_finished_trace_cannot_be_used(store: flightlog.Store) -> None:
    with store.trace("bot") as t:
        pass

    for use in (
        lambda: t.span("late"),
        lambda: t.tool_call("late"),
        lambda: t.usage(prompt_tokens=1),
        lambda: setattr(t, "output", "late"),
    ):
        with pytest.raises(TraceNotActive, match="has ended"):
            use()
    with pytest.raises(TraceNotActive, match="already entered"), t:
        pass
    assert len(stored(store, t.trace_id).spans) == 0


def test_a_trace_not_yet_entered_cannot_be_used(store: flightlog.Store) -> None:
    t = store.trace("bot")
    with pytest.raises(TraceNotActive, match="has not started"):
        t.span("early")


def test_a_finished_span_cannot_be_changed(store: flightlog.Store) -> None:
    with store.trace("bot") as t:
        with t.span("done") as s:
            pass
        uses: list[Callable[[], None]] = [
            lambda: s.set(x=1),
            lambda: s.add_event("late"),
            lambda: s.set_status("OK"),
        ]
        for use in uses:
            with pytest.raises(TraceNotActive, match=r"'done'.*has ended"):
                use()
        with pytest.raises(TraceNotActive, match="already entered"), s:
            pass
    (span,) = stored(store, t.trace_id).spans
    assert span.attributes == {} and span.events == []


@pytest.mark.parametrize(
    ("call", "path", "message"),
    [
        (lambda t: t.span(""), "name", "must be 1..1024 characters"),
        (lambda t: t.span(3), "name", "expected a string, got int"),
        (lambda t: t.span("s", kind="LLMX"), "kind", "expected one of"),
        (lambda t: t.span("s", blob=b"\x00"), "attributes.blob", "got bytes"),
        (lambda t: t.span("s", score=math.nan), "attributes.score", "finite"),
        (lambda t: t.span("s", deep={"a": {1: 2}}), "attributes.deep.a", "keys must be strings"),
        (lambda t: t.span("s", big=2**64), "attributes.big", "64 bits"),
        (lambda t: t.span("s", text="\ud800"), "attributes.text", "UTF-8"),
        (lambda t: t.tool_call("search", latency_ms=-1), "latency_ms", ">= 0"),
        (lambda t: t.tool_call("search", input=object()), "input", "JSON-compatible"),
        (lambda t: t.tool_call("", output=1), "tool_name", "1..256"),
        (lambda t: t.usage(prompt_tokens=-1), "prompt_tokens", ">= 0"),
        (lambda t: t.usage(completion_tokens=1.5), "completion_tokens", "an int"),
        (lambda t: t.usage(cost_usd=math.inf), "cost_usd", "finite"),
        (lambda t: setattr(t, "output", 3), "output", "expected a string"),
        (lambda t: t.set_metadata(when=object()), "metadata.when", "JSON-compatible"),
        (lambda t: t.set_error("E", 3), "message", "expected a string"),
    ],
)
def test_bad_input_is_refused_with_its_path_and_not_recorded(
    store: flightlog.Store, call: Any, path: str, message: str
) -> None:
    with store.trace("bot") as t:
        with pytest.raises(ValidationError, match=message) as caught:
            call(t)
        assert [e["path"] for e in caught.value.errors] == [path]

    trace = stored(store, t.trace_id)
    assert (trace.spans, trace.tool_calls, trace.token_usage, trace.output) == (
        [],
        [],
        flightlog.UNSET,
        flightlog.UNSET,
    )
    assert trace.status == "succeeded" and trace.metadata == {}


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(attributes=st.dictionaries(st.text(min_size=1), json_values, max_size=5))
def test_any_json_attributes_come_back_as_given(
    store: flightlog.Store, attributes: dict[str, Any]
) -> None:
    with store.trace("bot") as t, t.span("s") as s:
        s.set(attributes)
    assert stored(store, t.trace_id).spans[0].attributes == attributes


unencodable = st.sampled_from([b"raw", math.nan, -math.inf, 2**70, {1: "x"}, object(), "\udfff"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    good=st.dictionaries(st.text(min_size=1), json_values, max_size=3),
    key=st.text(min_size=1, alphabet=st.characters(codec="utf-8")),
    bad=st.builds(lambda v, wrap: [v] if wrap else v, unencodable, st.booleans()),
)
def test_a_bad_attribute_is_named_and_nothing_of_the_call_is_set(
    store: flightlog.Store, good: dict[str, Any], key: str, bad: object
) -> None:
    with store.trace("bot") as t, t.span("s") as s:
        s.set(kept=1)
        with pytest.raises(ValidationError) as caught:
            s.set({**good, key: bad})
        assert caught.value.errors[0]["path"].startswith(f"attributes.{key}")
    assert stored(store, t.trace_id).spans[0].attributes == {"kept": 1}


# --- crash evidence ----------------------------------------------------------------------------


def test_a_process_killed_inside_a_trace_leaves_it_running(store_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sys, time, flightlog
        store = flightlog.open({str(store_path)!r})
        with store.trace("crashing-bot", input="last words") as t:
            with t.span("never finished"):
                store.flush()
                print(t.trace_id, flush=True)
                time.sleep(60)
        """
    )
    with subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            trace_id = proc.stdout.readline().strip()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with flightlog.open(store_path) as reopened:
        trace = reopened.get(trace_id)
        assert (trace.status, trace.input, trace.agent_name) == (
            "running",
            "last words",
            "crashing-bot",
        )
        assert reopened.count(status="running") == 1


# --- context across threads, tasks and generators ---------------------------------------------


def test_a_thread_with_a_copied_context_keeps_the_parent(store: flightlog.Store) -> None:
    def work(n: int) -> None:
        t = flightlog.current_trace()
        assert t is not None
        with t.span(f"worker {n}"):
            pass

    with store.trace("bot") as t, t.span("fan out") as parent:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(work, n))
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    spans = spans_by_name(stored(store, t.trace_id))
    assert len(spans) == 5
    for n in range(4):
        assert spans[f"worker {n}"].parent_span_id == parent.span_id


def test_a_thread_without_the_context_sees_no_trace(store: flightlog.Store) -> None:
    seen: list[object] = []
    with store.trace("bot"):
        thread = threading.Thread(target=lambda: seen.append(flightlog.current_trace()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_a_span_outliving_its_trace_is_logged_when_it_ends(store: flightlog.Store) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(t: flightlog.ActiveTrace) -> None:
        with t.span("background"):
            started.set()
            release.wait()

    with store.trace("bot") as t, t.span("parent") as parent:
        thread = threading.Thread(target=contextvars.copy_context().run, args=(slow, t))
        thread.start()
        started.wait()
    release.set()
    thread.join()

    spans = spans_by_name(stored(store, t.trace_id))
    assert spans["background"].parent_span_id == parent.span_id
    assert spans["background"].end_time is not flightlog.UNSET
    assert spans["parent"].end_time is not flightlog.UNSET
    assert stored(store, t.trace_id).status == "succeeded"


def test_concurrent_tasks_keep_their_own_parents(store: flightlog.Store) -> None:
    async def step(t: flightlog.ActiveTrace, name: str) -> str:
        with t.span(name) as s:
            await asyncio.sleep(0)
            with t.span(f"{name}.child"):
                await asyncio.sleep(0)
            return s.span_id

    async def main() -> tuple[flightlog.ActiveTrace, list[str]]:
        with store.trace("bot") as t, t.span("root"):
            ids = await asyncio.gather(*(step(t, f"task{n}") for n in range(3)))
        return t, ids

    t, ids = asyncio.run(main())
    spans = spans_by_name(stored(store, t.trace_id))
    root = spans["root"].span_id
    for n, span_id in enumerate(ids):
        assert spans[f"task{n}"].parent_span_id == root
        assert spans[f"task{n}.child"].parent_span_id == span_id


def test_a_traced_async_generator_does_not_leak_its_spans_to_the_consumer(
    store: flightlog.Store,
) -> None:
    @flightlog.traced(name="stream", kind="LLM")
    async def stream(t: flightlog.ActiveTrace) -> AsyncIterator[int]:
        for i in range(3):
            with t.span(f"chunk {i}"):
                await asyncio.sleep(0)
                yield i

    async def main() -> flightlog.ActiveTrace:
        with store.trace("bot") as t, t.span("consumer") as consumer:
            async for i in stream(t):
                with t.span(f"handle {i}") as handled:
                    assert handled.parent_span_id == consumer.span_id
        return t

    t = asyncio.run(main())
    spans = spans_by_name(stored(store, t.trace_id))
    assert spans["stream"].parent_span_id == spans["consumer"].span_id
    for i in range(3):
        assert spans[f"chunk {i}"].parent_span_id == spans["stream"].span_id
        assert spans[f"handle {i}"].parent_span_id == spans["consumer"].span_id
    assert spans["stream"].end_time >= spans["chunk 2"].end_time  # type: ignore[operator]


def test_a_traced_generator_closed_early_ends_its_span(store: flightlog.Store) -> None:
    @flightlog.traced(name="numbers")
    def numbers() -> Generator[int, None, None]:
        yield from range(10)

    with store.trace("bot") as t:
        gen = numbers()
        assert next(gen) == 0
        with t.span("between") as between:
            assert between.parent_span_id is None
        gen.close()

    spans = spans_by_name(stored(store, t.trace_id))
    assert spans["numbers"].status_code == "UNSET"
    assert spans["numbers"].end_time is not flightlog.UNSET


def test_an_exception_inside_a_traced_generator_fails_its_span(store: flightlog.Store) -> None:
    @flightlog.traced(name="pages")
    def pages() -> Generator[int, None, None]:
        yield 1
        raise ConnectionError("page 2 timed out")

    with store.trace("bot") as t:
        with pytest.raises(ConnectionError):
            list(pages())
        assert flightlog.current_span() is None

    (span,) = stored(store, t.trace_id).spans
    assert (span.name, span.status_code) == ("pages", "ERROR")
    assert span.events[0].attributes["exception.type"] == "ConnectionError"


def test_a_traced_generator_passes_sent_values_and_its_return_value(
    store: flightlog.Store,
) -> None:
    @flightlog.traced(name="echo")
    def echo() -> Generator[str, str, int]:
        received = yield "ready"
        yield f"got {received}"
        return 7

    def drive() -> Generator[str, str, int]:
        result = yield from echo()
        return result

    with store.trace("bot") as t:
        gen = drive()
        assert next(gen) == "ready"
        assert gen.send("ping") == "got ping"
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == 7
    assert [s.name for s in stored(store, t.trace_id).spans] == ["echo"]


def test_a_failing_traced_async_generator_fails_its_trace(store: flightlog.Store) -> None:
    @flightlog.traced(agent_name="streamer", store=store)
    async def stream() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0)
        raise ValueError("stream broke")

    async def main() -> list[int]:
        return [i async for i in stream()]

    with pytest.raises(ValueError, match="stream broke"):
        asyncio.run(main())
    store.flush()
    (summary,) = store.query()
    assert (summary.agent_name, summary.status) == ("streamer", "failed")


# --- the decorator -----------------------------------------------------------------------------


def test_a_decorated_function_starts_a_trace_in_the_default_store(
    store: flightlog.Store,
) -> None:
    flightlog.set_default_store(store)

    @flightlog.traced(agent_name="greeter")
    def greet(name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    assert greet("ada") == "hello ada!"
    store.flush()
    (summary,) = store.query()
    trace = store.get(summary.trace_id)
    assert (trace.agent_name, trace.status, trace.output) == ("greeter", "succeeded", "hello ada!")
    assert trace.input == '{"name":"ada"}'


def test_a_decorated_call_inside_a_trace_is_a_span(store: flightlog.Store) -> None:
    @flightlog.traced(kind="TOOL")
    def lookup(order: int) -> dict[str, int]:
        return {"order": order}

    with store.trace("bot") as t, t.span("plan") as plan:
        lookup(42)

    spans = spans_by_name(stored(store, t.trace_id))
    span = spans[lookup.__qualname__]
    assert (span.kind, span.parent_span_id) == ("TOOL", plan.span_id)
    assert span.attributes == {"input.value": '{"order":42}', "output.value": '{"order":42}'}


def test_a_decorated_coroutine_failing_fails_its_trace(store: flightlog.Store) -> None:
    @flightlog.traced(agent_name="async-bot", store=store)
    async def answer(question: str) -> str:
        await asyncio.sleep(0)
        raise RuntimeError(f"cannot answer {question}")

    with pytest.raises(RuntimeError):
        asyncio.run(answer("why"))
    store.flush()
    (summary,) = store.query()
    trace = store.get(summary.trace_id)
    assert (trace.agent_name, trace.status) == ("async-bot", "failed")
    assert trace.metadata["error"] == {"type": "RuntimeError", "message": "cannot answer why"}


def test_a_decorated_coroutine_inside_a_trace_is_a_span(store: flightlog.Store) -> None:
    @flightlog.traced(capture_io=False)
    async def fetch() -> int:
        await asyncio.sleep(0)
        return 1

    async def main() -> flightlog.ActiveTrace:
        with store.trace("bot") as t:
            await asyncio.gather(fetch(), fetch())
        return t

    t = asyncio.run(main())
    spans = stored(store, t.trace_id).spans
    assert [s.name for s in spans] == [fetch.__qualname__] * 2
    assert all(s.attributes == {} for s in spans)


def test_decorated_helpers_build_a_span_tree(store: flightlog.Store) -> None:
    @flightlog.traced(kind="TOOL")
    def search(query: str) -> list[str]:
        return [query.upper()]

    @flightlog.traced(kind="LLM")
    def think(question: str) -> str:
        return search(question)[0]

    @flightlog.traced(agent_name="helper-bot", store=store)
    def agent(question: str) -> str:
        return think(question) + think(question)

    assert agent("why") == "WHYWHY"
    store.flush()
    (summary,) = store.query()
    trace = store.get(summary.trace_id)
    assert (trace.agent_name, trace.input, trace.output) == (
        "helper-bot",
        '{"question":"why"}',
        "WHYWHY",
    )
    thinks = [s for s in trace.spans if s.kind == "LLM"]
    searches = [s for s in trace.spans if s.kind == "TOOL"]
    assert len(thinks) == 2 and len(searches) == 2
    assert all(s.parent_span_id is flightlog.UNSET for s in thinks)
    assert [s.parent_span_id for s in searches] == [s.span_id for s in thinks]


def test_arguments_of_any_signature_are_described(store: flightlog.Store) -> None:
    class Agent:
        @flightlog.traced(agent_name="method-bot", store=store)
        def run(self, *questions: str, verbose: bool = False, **options: object) -> int:
            return len(questions)

    assert Agent().run("a", "b", verbose=True, budget=3) == 2
    store.flush()
    (summary,) = store.query()
    trace = store.get(summary.trace_id)
    assert trace.input == '{"questions":["a","b"],"verbose":true,"options":{"budget":3}}'
    assert trace.output == "2"


def test_decorating_with_a_bad_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind: expected one of"):
        flightlog.traced(kind="FUNCTION")  # type: ignore[arg-type]


# --- the default store -------------------------------------------------------------------------


def test_module_level_trace_uses_the_default_store(store: flightlog.Store) -> None:
    flightlog.set_default_store(store)
    assert flightlog.default_store() is store
    with flightlog.trace("bot", input="q") as t:
        assert flightlog.current_trace() is t
    assert flightlog.current_trace() is None
    assert stored(store, t.trace_id).status == "succeeded"


def test_without_a_default_store_tracing_is_a_typed_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLIGHTLOG_PATH", raising=False)
    with pytest.raises(NoDefaultStore, match="set_default_store"):
        flightlog.trace("bot")
    with pytest.raises(ValidationError, match=r"store: expected a flightlog\.Store"):
        flightlog.set_default_store("traces")  # type: ignore[arg-type]


def test_flightlog_path_opens_the_default_store(
    monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    monkeypatch.setenv("FLIGHTLOG_PATH", str(store_path))
    default = flightlog.default_store()
    try:
        assert default.path == store_path
        with flightlog.trace("bot") as t:
            pass
        assert stored(default, t.trace_id).status == "succeeded"
    finally:
        default.close()


# --- the capture hook --------------------------------------------------------------------------


def test_a_capture_ties_traces_to_its_run_and_sums_their_usage(store: flightlog.Store) -> None:
    with store.trace("pytest", run_id="run-1") as test_trace, Capture(store, run_id="run-1") as c:
        with store.trace("agent") as t1:
            t1.usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.01)
        t2 = store.log(
            agent_name="agent",
            spans=[
                {
                    "name": "chat",
                    "kind": "LLM",
                    "attributes": {"gen_ai.usage.input_tokens": 3, "gen_ai.usage.cost": 0.5},
                }
            ],
        )
        t3, t4 = store.log_many(
            [
                flightlog.Trace(agent_name="agent", run_id="other"),
                flightlog.Trace(agent_name="agent"),
            ]
        )
        usage = c.usage()

    assert c.trace_ids == [t1.trace_id, t2, t3, t4]
    assert (usage.traces, usage.prompt_tokens, usage.completion_tokens) == (4, 13, 5)
    assert usage.total_tokens == 18 and usage.cost_usd == pytest.approx(0.51)
    assert stored(store, t1.trace_id).run_id == "run-1"
    assert stored(store, t2).run_id == "run-1"
    assert stored(store, t3).run_id == "other"
    assert stored(store, t4).run_id == "run-1"
    assert test_trace.trace_id not in c.trace_ids
    after = store.log(agent_name="agent")
    assert stored(store, after).run_id is flightlog.UNSET


def test_a_capture_leaves_other_stores_alone(store: flightlog.Store, tmp_path: Path) -> None:
    with flightlog.open(tmp_path / "other") as other, Capture(store, run_id="run-1") as c:
        tid = other.log(agent_name="agent")
        assert stored(other, tid).run_id is flightlog.UNSET
    assert c.trace_ids == []

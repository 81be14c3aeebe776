"""Realistic sample agent traces, deterministic from a seed, for the demo and the benches.

The *standard trace* is the benchmark workload fixed by the product spec: about 5 KB as JSON,
with a 500-character input, a 1500-character output, 3 tool calls and 6 spans (an AGENT root,
2 LLM spans carrying ``gen_ai.*`` attributes and 3 TOOL spans). Text is English-like, sliced
from a corpus built once from a word list, so a trace takes tens of microseconds to make and
compresses like real prose rather than like random letters.

For the benchmark's size table, :func:`sized_trace` scales the standard trace's text to a
target size, and :func:`many_spans_trace` makes a trace of many small spans.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, replace
from typing import Any, Literal

import msgspec

from flightlog.records import UNSET, Event, Span, TokenUsage, ToolCall, Trace

__all__ = [
    "BASE_TIME",
    "SIZES",
    "Size",
    "many_spans_trace",
    "sample_traces",
    "sized_trace",
    "standard_trace",
]

Size = Literal["1kb", "standard", "100kb", "1mb", "many_spans"]
SIZES: tuple[Size, ...] = ("1kb", "standard", "100kb", "1mb", "many_spans")

BASE_TIME = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)
"""The default "now" of generated traces: a fixed instant, so a seed always yields the same."""

_SPREAD_S = 6 * 3600.0  # traces start within the 6 hours before the base time

_WORD_LIST = (
    "the a an of to and in for on with by from as at into over after before about through "
    "customer order account invoice refund payment shipment package delivery address ticket "
    "request response query table column schema index report dashboard metric revenue region "
    "quarter month week day user team manager agent model tool policy rule limit plan step "
    "result answer summary context document page section paragraph source citation record "
    "status error warning retry timeout latency service endpoint database cache queue worker "
    "is was will can should may must has have had does did not also only then still just "
    "check find look update create delete send read write run call fetch return compare "
    "confirm verify review approve reject escalate resolve close open list count filter sort "
    "new recent previous current total average daily monthly annual late early pending active "
    "large small first last next other same different correct missing available possible "
    "support billing sales product pricing discount subscription trial plan upgrade contract "
    "because however although while when where which that this these those it they we you "
    "please thanks sure here there now today yesterday soon usually often never always again "
    "shows suggests means indicates explains describes includes contains requires allows "
    "data value number amount date time name email phone note comment message history log "
    "issue problem cause reason change fix version release feature setting option default "
    "internal external public private shared secure standard custom manual automatic final"
)
_WORDS = _WORD_LIST.split()

_AGENTS: tuple[tuple[str, str, str], ...] = (
    # (agent name, framework, gen_ai.system of the model it calls)
    ("support-bot", "langgraph", "openai"),
    ("sql-agent", "langchain", "openai"),
    ("research-assistant", "crewai", "anthropic"),
    ("code-reviewer", "openai-agents", "openai"),
    ("billing-helper", "langgraph", "anthropic"),
    ("triage-agent", "autogen", "openai"),
    ("docs-qa", "llamaindex", "gcp.gemini"),
    ("sales-copilot", "crewai", "openai"),
    ("ops-runbook", "langgraph", "anthropic"),
    ("data-analyst", "openai-agents", "openai"),
    ("email-drafter", "pydantic-ai", "anthropic"),
    ("refund-agent", "langgraph", "openai"),
    ("onboarding-guide", "llamaindex", "mistral_ai"),
    ("incident-responder", "autogen", "anthropic"),
    ("contract-reviewer", "crewai", "anthropic"),
    ("web-researcher", "smolagents", "openai"),
    ("ticket-router", "openai-agents", "openai"),
    ("hr-assistant", "pydantic-ai", "gcp.gemini"),
    ("inventory-planner", "langchain", "aws.bedrock"),
    ("travel-booker", "semantic-kernel", "openai"),
)

_MODELS: dict[str, tuple[tuple[str, float, float], ...]] = {
    # gen_ai.system -> (model, USD per million input tokens, USD per million output tokens)
    "openai": (("gpt-4o", 2.5, 10.0), ("gpt-4o-mini", 0.15, 0.6), ("gpt-4.1", 2.0, 8.0)),
    "anthropic": (
        ("claude-3-5-sonnet", 3.0, 15.0),
        ("claude-3-5-haiku", 0.8, 4.0),
        ("claude-sonnet-4", 3.0, 15.0),
    ),
    "gcp.gemini": (("gemini-1.5-pro", 1.25, 5.0), ("gemini-2.0-flash", 0.1, 0.4)),
    "mistral_ai": (("mistral-large", 2.0, 6.0), ("mistral-small", 0.2, 0.6)),
    "aws.bedrock": (("anthropic.claude-3-haiku", 0.25, 1.25), ("amazon.nova-pro", 0.8, 3.2)),
}

_TOOLS: tuple[tuple[str, str], ...] = (
    # (tool name, the argument that carries its free text)
    ("search_docs", "query"),
    ("run_sql", "question"),
    ("lookup_customer", "notes"),
    ("get_order", "context"),
    ("web_search", "query"),
    ("read_file", "purpose"),
    ("create_ticket", "description"),
    ("send_email", "body"),
    ("fetch_url", "reason"),
    ("calculator", "expression_text"),
    ("get_weather", "location_text"),
    ("check_inventory", "query"),
)

_TAGS = ("prod", "staging", "beta", "eval", "canary", "vip", "batch", "interactive")
_REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
_FAILURES = (
    ("timeout", "tool call timed out after 30000 ms"),
    ("http_502", "upstream returned HTTP 502 Bad Gateway"),
    ("rate_limited", "rate limit exceeded, retry after 20 s"),
    ("not_found", "record not found for the given reference"),
)


@dataclass(frozen=True)
class _Profile:
    """Text sizes (characters) and shape of one size variant."""

    input_chars: int
    output_chars: int
    tool_input_chars: int
    tool_output_chars: int
    tools: int
    llm_calls: int
    agent_root: bool = True  # an AGENT span above the steps; "1kb" has room for one LLM span
    many_spans: bool = False


_PROFILES: dict[str, _Profile] = {
    "1kb": _Profile(100, 200, 0, 0, tools=0, llm_calls=1, agent_root=False),
    "standard": _Profile(500, 1500, 150, 250, tools=3, llm_calls=2),
    "100kb": _Profile(25_000, 68_000, 1_000, 2_000, tools=3, llm_calls=2),
    "1mb": _Profile(250_000, 700_000, 10_000, 20_000, tools=3, llm_calls=2),
    "many_spans": _Profile(500, 1500, 150, 250, tools=3, llm_calls=2, many_spans=True),
}


def _build_corpus(chars: int) -> str:
    """English-like sentences from the word list, at least ``chars`` long (fixed seed)."""
    rng = random.Random(0x5EED)
    sentences: list[str] = []
    total = 0
    while total < chars:
        words = rng.choices(_WORDS, k=rng.randint(6, 18))
        if len(words) > 9 and rng.random() < 0.4:
            words[rng.randint(3, len(words) - 3)] += ","
        sentence = " ".join(words).capitalize() + "."
        sentences.append(sentence)
        total += len(sentence) + 1
    return " ".join(sentences)


_CORPUS = _build_corpus(128 * 1024)
_CHUNK = len(_CORPUS) // 4  # the longest single slice; longer texts join several


def _text(rng: random.Random, chars: int) -> str:
    """About ``chars`` characters of prose starting at a sentence and ending in a period."""
    if chars > _CHUNK:
        parts = [_text(rng, _CHUNK) for _ in range(chars // _CHUNK)]
        parts.append(_text(rng, chars % _CHUNK or 1))
        return " ".join(parts)
    offset = int(rng.random() * (len(_CORPUS) - chars - 256))
    start = _CORPUS.find(". ", offset) + 2
    end = _CORPUS.rfind(" ", start, start + chars)
    if end <= start:  # shorter than a word: take the word
        end = _CORPUS.find(" ", start)
    return _CORPUS[start:end].rstrip(",.") + "."


def _pick(rng: random.Random, items: tuple[Any, ...]) -> Any:
    # Faster than rng.choice, which matters at 100k traces.
    return items[int(rng.random() * len(items))]


class _Ids:
    """Span ids for one trace, cut from one big random number (one call instead of many)."""

    __slots__ = ("_hex", "_next")

    def __init__(self, rng: random.Random, count: int) -> None:
        self._hex = f"{rng.getrandbits(64 * count):0{16 * count}x}"
        self._next = 0

    def take(self) -> str:
        start = self._next
        self._next = start + 16
        return self._hex[start : start + 16]


def standard_trace(
    rng: random.Random,
    *,
    size: Size = "standard",
    base: dt.datetime = BASE_TIME,
    agent: int | None = None,
) -> Trace:
    """One realistic successful agent run, deterministic from the state of ``rng``.

    Args:
        rng: The random source; the same state yields the same trace.
        size: ``"standard"`` (about 5 KB as JSON, 6 spans, 3 tool calls), ``"1kb"``,
            ``"100kb"``, ``"1mb"`` (text scaled) or ``"many_spans"`` (the standard content
            with 100 small spans, nested two levels under the root).
        base: The trace starts within the 6 hours before this instant (tz-aware).
        agent: Index into the 20 agents; random when ``None``.

    Returns:
        A :class:`Trace` without ``trace_id`` (the store mints one).
    """
    return _trace(rng, _PROFILES[size], base, agent)


def _trace(rng: random.Random, profile: _Profile, base: dt.datetime, agent: int | None) -> Trace:
    random_ = rng.random
    name, framework, system = _AGENTS[
        int(random_() * len(_AGENTS)) if agent is None else agent % len(_AGENTS)
    ]
    model, input_price, output_price = _pick(rng, _MODELS[system])
    start = base - _TD(0, _SPREAD_S * random_())
    ids = _Ids(rng, 1 + profile.llm_calls + profile.tools)
    root_id = ids.take()
    root = Span(name=name, span_id=root_id, kind="AGENT", start_time=start)
    tool_calls: list[ToolCall] = []
    prompt_tokens = completion_tokens = 0
    cost = 0.0
    spans = [root]
    # Times are kept as integer microseconds after `start`: exact, and cheap to turn into
    # datetimes and milliseconds.
    clock = 2000 + int(random_() * 10_000) if profile.agent_root else 0
    # An agent loop: plan with the model, call the tools, then answer with the model.
    for step in _STEPS[(profile.tools, profile.llm_calls)]:
        if step == "tool":
            took = 20_000 + int(random_() * 880_000)
            call, span = _tool_step(rng, profile, took, ids.take())
            tool_calls.append(call)
        else:
            took = 400_000 + int(random_() * 2_100_000)
            used_in = 300 + int(random_() * 2500)
            used_out = 40 + int(random_() * 400)
            span_cost = round((used_in * input_price + used_out * output_price) / 1e6, 6)
            span = _llm_span(system, model, (used_in, used_out, span_cost), ids.take())
            prompt_tokens += used_in
            completion_tokens += used_out
            cost += span_cost
        if profile.agent_root:
            span.parent_span_id = root_id
        span.start_time = start + _TD(0, 0, clock)
        span.end_time = start + _TD(0, 0, clock + took)
        spans.append(span)
        clock += took + 1000 + int(random_() * 5000)
    end = start + _TD(0, 0, clock)
    root.end_time = end
    root.attributes = {"gen_ai.agent.name": name}
    if profile.many_spans:
        spans = [root, *_small_spans(rng, root_id, start, clock)]
    elif not profile.agent_root:
        spans.pop(0)
    run_id = f"run_{rng.getrandbits(48):012x}"
    request_id = f"req_{rng.getrandbits(64):016x}"
    return Trace(
        agent_name=name,
        framework=framework,
        input=_text(rng, profile.input_chars),
        output=_text(rng, profile.output_chars),
        tool_calls=tool_calls,
        latency_ms=clock / 1000,
        token_usage=TokenUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        cost_usd=round(cost, 6),
        metadata={
            "user_id": f"user_{rng.getrandbits(20):05x}",
            "thread_id": f"thr_{rng.getrandbits(48):012x}",
            "region": _pick(rng, _REGIONS),
        },
        spans=spans,
        timestamp=start,
        run_id=run_id,
        request_id=request_id,
        status="succeeded",
        ended_at=end,
    )


_TD = dt.timedelta
_SMALL_SHAPE_BELOW = 4000  # JSON bytes: smaller targets get one LLM span and no tools
_TOOL_JSON = 30  # characters of a tool input's or output's JSON around its text


def sized_trace(
    rng: random.Random,
    target_bytes: int,
    *,
    base: dt.datetime = BASE_TIME,
    agent: int | None = None,
) -> Trace:
    """A standard trace whose text is scaled so that it is about ``target_bytes`` as JSON.

    From 4,000 bytes up the trace has the standard shape (6 spans, 3 tool calls) and every
    text (input, output, tool inputs and outputs) is scaled in the standard proportions; below
    that it is one model call (one LLM span, no tools, no AGENT root), as small as 1,000
    bytes. The JSON size lands within a few percent of the target (texts end on a word).
    Deterministic from the state of ``rng``.

    Args:
        rng: The random source; the same state yields the same trace.
        target_bytes: The size wanted, as ``msgspec.json`` encodes the trace; at least 1,000.
        base: The trace starts within the 6 hours before this instant (tz-aware).
        agent: Index into the 20 agents; random when ``None``.

    Returns:
        A :class:`Trace` without ``trace_id``.

    Raises:
        ValueError: ``target_bytes`` is below 1,000.
    """
    if target_bytes < 1000:
        raise ValueError(f"target_bytes must be at least 1000, not {target_bytes}")
    shape = _PROFILES["standard" if target_bytes >= _SMALL_SHAPE_BELOW else "1kb"]
    state = rng.getstate()
    # Two passes from the same random state: the first measures what the trace takes besides
    # its text, the second fills the rest of the target with text.
    first = _trace(rng, shape, base, agent)
    text = _text_chars(first)
    overhead = len(msgspec.json.encode(first)) - text
    scale = max(target_bytes - overhead, 1) / text
    rng.setstate(state)
    return _trace(rng, _scaled(shape, scale), base, agent)


def _text_chars(trace: Trace) -> int:
    """Characters of generated text in a trace: input, output and the tools' texts."""
    chars = len(trace.input) if isinstance(trace.input, str) else 0
    chars += len(trace.output) if isinstance(trace.output, str) else 0
    for call in trace.tool_calls:
        for part in (call.input, call.output):
            chars += sum(len(v) for v in part.values() if isinstance(v, str) and len(v) > 8)
    return chars


def _scaled(profile: _Profile, scale: float) -> _Profile:
    def tool(chars: int) -> int:
        return _TOOL_JSON + max(1, round((chars - _TOOL_JSON) * scale))

    return replace(
        profile,
        input_chars=max(1, round(profile.input_chars * scale)),
        output_chars=max(1, round(profile.output_chars * scale)),
        tool_input_chars=tool(profile.tool_input_chars) if profile.tools else 0,
        tool_output_chars=tool(profile.tool_output_chars) if profile.tools else 0,
    )


def many_spans_trace(
    rng: random.Random,
    *,
    spans: int = 100,
    span_bytes: int = 100,
    base: dt.datetime = BASE_TIME,
    agent: int | None = None,
) -> Trace:
    """An agent run made of many small spans: an AGENT root over INTERNAL steps of up to 10
    LLM and TOOL spans each (100 spans: the root and 9 steps of 10).

    Every span below the root has an id, its parent's id, a kind, a name (``chat``, a tool's
    name or ``step N``), a start time and a duration, plus text in a ``detail`` attribute
    when ``span_bytes`` leaves room for it. Sizes are counted as msgpack, the encoding
    :meth:`Store.log` sends. Such a span takes 119 to 131 bytes without the attribute (155 to
    170 as JSON), and the attribute adds at least 22: a ``span_bytes`` below ~155 (like the
    default 100, the smallest spans agents log) yields spans of that floor, larger values
    spans within a few bytes of it. The trace around the spans is small (200 and 400
    characters of input and output, token usage, no tool calls).

    Args:
        rng: The random source; the same state yields the same trace.
        spans: How many spans, at least 1.
        span_bytes: The size wanted for each span below the root, as msgpack.
        base: The trace starts within the 6 hours before this instant (tz-aware).
        agent: Index into the 20 agents; random when ``None``.

    Returns:
        A :class:`Trace` without ``trace_id``.
    """
    if spans < 1:
        raise ValueError(f"spans must be at least 1, not {spans}")
    random_ = rng.random
    name, framework, system = _AGENTS[
        int(random_() * len(_AGENTS)) if agent is None else agent % len(_AGENTS)
    ]
    model = _pick(rng, _MODELS[system])[0]
    start = base - _TD(0, _SPREAD_S * random_())
    took_us = 1_000_000 + int(random_() * 9_000_000)
    ids = _Ids(rng, spans)
    root_id = ids.take()
    out = [
        Span(
            name=name,
            span_id=root_id,
            kind="AGENT",
            start_time=start,
            end_time=start + _TD(0, 0, took_us),
            attributes={"gen_ai.agent.name": name},
        )
    ]
    steps = -(-(spans - 1) // 11)  # each step: the step span and up to 10 children
    slot = took_us // max(1, steps)
    step_id = root_id
    for i in range(spans - 1):
        position = i % 11
        if position == 0:
            step_id = ids.take()
            step_start = start + _TD(0, 0, slot * (i // 11))
            span = Span(
                name=f"step {i // 11}",
                span_id=step_id,
                parent_span_id=root_id,
                kind="INTERNAL",
                start_time=step_start,
                duration_ms=slot / 1000,
            )
        else:
            is_llm = position % 2 == 1
            child_us = slot // 10
            span = Span(
                name="chat" if is_llm else _pick(rng, _TOOLS)[0],
                span_id=ids.take(),
                parent_span_id=step_id,
                kind="LLM" if is_llm else "TOOL",
                start_time=step_start + _TD(0, 0, child_us * (position - 1)),
                duration_ms=(child_us - int(random_() * child_us // 4)) / 1000,
            )
        room = span_bytes - len(msgspec.msgpack.encode(span)) - _DETAIL_MSGPACK
        if room > 0:
            span.attributes = {"detail": _text(rng, room)}
        out.append(span)
    prompt, completion = 300 + int(random_() * 2500), 40 + int(random_() * 400)
    return Trace(
        agent_name=name,
        framework=framework,
        input=_text(rng, 200),
        output=_text(rng, 400),
        latency_ms=took_us / 1000,
        token_usage=TokenUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        ),
        metadata={"model": model},
        spans=out,
        timestamp=start,
        run_id=f"run_{rng.getrandbits(48):012x}",
        status="succeeded",
        ended_at=start + _TD(0, 0, took_us),
    )


# msgpack bytes the ``detail`` attribute adds besides its text: the "attributes" key, a map
# header, the "detail" key and a string header.
_DETAIL_MSGPACK = 11 + 1 + 7 + 2

_STEPS = {
    (profile.tools, profile.llm_calls): ("llm", *("tool",) * profile.tools)
    + ("llm",) * (profile.llm_calls - 1)
    for profile in _PROFILES.values()
}


def _llm_span(system: str, model: str, usage: tuple[int, int, float], span_id: str) -> Span:
    """A chat completion span with OpenTelemetry ``gen_ai.*`` attributes, not yet timed.

    ``usage`` is (input tokens, output tokens, cost in USD); the cost attribute follows the
    Langfuse convention since OpenTelemetry has none.
    """
    return Span(
        name=f"chat {model}",
        span_id=span_id,
        kind="LLM",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": usage[0],
            "gen_ai.usage.output_tokens": usage[1],
            "gen_ai.usage.cost": usage[2],
        },
    )


def _tool_step(
    rng: random.Random, profile: _Profile, took_us: int, span_id: str
) -> tuple[ToolCall, Span]:
    """A tool call with a JSON-ish input and output, and its TOOL span (not yet timed)."""
    tool, argument = _pick(rng, _TOOLS)
    # The text is sized so that the JSON of the whole input/output lands near the target.
    call = ToolCall(
        tool_name=tool,
        input={argument: _text(rng, profile.tool_input_chars - 30), "limit": 10},
        output={"status": "ok", "result": _text(rng, profile.tool_output_chars - 30)},
        latency_ms=took_us / 1000,
    )
    span = Span(
        name=f"execute_tool {tool}",
        span_id=span_id,
        kind="TOOL",
        attributes={"gen_ai.tool.name": tool},
    )
    return call, span


def _small_spans(rng: random.Random, root_id: str, start: dt.datetime, took_us: int) -> list[Span]:
    """99 small spans under the root: 9 INTERNAL steps of 10 LLM/TOOL children each."""
    ids = _Ids(rng, 99)
    slot = took_us // 90
    spans: list[Span] = []
    for step in range(9):
        step_id = ids.take()
        step_start = start + _TD(0, 0, slot * step * 10)
        spans.append(
            Span(
                name=f"step {step}",
                span_id=step_id,
                parent_span_id=root_id,
                kind="INTERNAL",
                start_time=step_start,
                end_time=step_start + _TD(0, 0, slot * 10),
            )
        )
        for child in range(10):
            is_llm = child % 2 == 0
            spans.append(
                Span(
                    name="chat" if is_llm else _pick(rng, _TOOLS)[0],
                    span_id=ids.take(),
                    parent_span_id=step_id,
                    kind="LLM" if is_llm else "TOOL",
                    start_time=step_start + _TD(0, 0, slot * child),
                    duration_ms=slot / 1000,
                )
            )
    return spans


def sample_traces(n: int, seed: int = 0, *, base: dt.datetime = BASE_TIME) -> list[Trace]:
    """A varied, deterministic mix of agent runs for the demo and the tests.

    Mostly standard traces over all 20 agents and their models, plus small and many-span
    ones; about 8% failed (an erroring tool span, a tool call with ``error``, status
    ``"failed"``), a quarter with agent events (``llm``, ``tool`` and sometimes
    ``approval.requested``), about half within multi-turn sessions, most tagged.

    Args:
        n: How many traces.
        seed: The same seed always yields the same traces.
        base: The traces start within the 6 hours before this instant (tz-aware).

    Returns:
        ``n`` traces without trace ids.
    """
    rng = random.Random(seed)
    sessions: list[tuple[str, int]] = []  # (session id, agent index) of recent sessions
    traces = []
    for i in range(n):
        agent, session_id = _session(rng, sessions)
        size: Size = "standard"
        roll = rng.random()
        if roll < 0.06:
            size = "1kb"
        elif roll < 0.09:
            size = "many_spans"
        trace = standard_trace(rng, size=size, base=base, agent=agent)
        if session_id is not None:
            trace.session_id = session_id
        trace.tags = _tags(rng)
        # Traces 1 and 2 are forced interesting so that even a short demo shows a failure
        # and a pending approval.
        if i == 1 or rng.random() < 0.08:
            _fail(rng, trace)
        if i == 2 or rng.random() < 0.25:
            trace.events = _events(rng, trace)
        traces.append(trace)
    return traces


def _session(rng: random.Random, sessions: list[tuple[str, int]]) -> tuple[int, str | None]:
    """An agent index and a session id: none, a new session, or a turn of a recent one."""
    roll = rng.random()
    if roll < 0.5:
        return int(rng.random() * len(_AGENTS)), None
    if roll < 0.65 or not sessions:
        session = (f"sess_{rng.getrandbits(64):016x}", int(rng.random() * len(_AGENTS)))
        sessions.append(session)
        del sessions[:-8]  # only the last few sessions are still active
    else:
        session = _pick(rng, tuple(sessions))
    return session[1], session[0]


def _tags(rng: random.Random) -> list[str]:
    roll = rng.random()
    if roll < 0.3:
        return []
    tags = [_pick(rng, _TAGS)]
    if roll > 0.8:
        tags.append(_pick(rng, _TAGS))
    return sorted(set(tags))


def _fail(rng: random.Random, trace: Trace) -> None:
    """Turns a successful trace into a failed one: a tool (or the model) errored."""
    code, message = _pick(rng, _FAILURES)
    trace.status = "failed"
    trace.output = f"Sorry, I could not finish this request: {message}."
    trace.metadata["error_code"] = code
    tool_spans = [s for s in trace.spans if s.kind == "TOOL"]
    if trace.tool_calls:
        # Tool calls and TOOL spans are generated in the same order.
        k = int(rng.random() * len(trace.tool_calls))
        trace.tool_calls[k].error = message
        trace.tool_calls[k].output = UNSET
        failing = tool_spans[k]
    else:
        failing = next(s for s in trace.spans if s.kind == "LLM")
    failing.status_code = "ERROR"
    failing.status_message = message
    if trace.spans[0].kind == "AGENT":
        trace.spans[0].status_code = "ERROR"
        trace.spans[0].status_message = f"agent run failed: {code}"


def _events(rng: random.Random, trace: Trace) -> list[Event]:
    """Agent events mirroring the trace's model and tool spans, maybe an approval request."""
    events: list[Event] = []
    for span in trace.spans:
        if span.kind == "LLM" and "gen_ai.request.model" in span.attributes:
            events.append(
                Event(
                    type="llm",
                    status="failed" if span.status_code == "ERROR" else "succeeded",
                    at=span.start_time,
                    metadata={"model": span.attributes["gen_ai.request.model"]},
                )
            )
        elif span.kind == "TOOL" and "gen_ai.tool.name" in span.attributes:
            events.append(
                Event(
                    type="tool",
                    status="failed" if span.status_code == "ERROR" else "succeeded",
                    at=span.start_time,
                    metadata={"tool": span.attributes["gen_ai.tool.name"]},
                )
            )
    if rng.random() < 0.3 or not events:
        events.append(
            Event(
                type="approval.requested",
                status="pending",
                at=trace.ended_at,
                metadata={
                    "action": "send_email",
                    "reason_summary": "outbound customer email needs a human approval",
                },
            )
        )
    return events

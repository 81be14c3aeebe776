"""Realistic sample agent traces, deterministic from a seed, for the demo and the benches.

The *standard trace* is the benchmark workload fixed by the product spec: about 5 KB as JSON,
with a 500-character input, a 1500-character output, 3 tool calls and 6 spans (an AGENT root,
2 LLM spans carrying ``gen_ai.*`` attributes and 3 TOOL spans). Text is English-like, sliced
from a corpus built once from a word list, so generating a trace costs a few microseconds and
compresses like real prose rather than like random letters.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any, Literal

from flightlog.records import Event, Span, TokenUsage, ToolCall, Trace

__all__ = ["BASE_TIME", "SIZES", "Size", "sample_traces", "standard_trace"]

Size = Literal["1kb", "standard", "100kb", "1mb", "many_spans"]
SIZES: tuple[Size, ...] = ("1kb", "standard", "100kb", "1mb", "many_spans")

BASE_TIME = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)
"""The default "now" of generated traces: a fixed instant, so a seed always yields the same."""

_SPREAD_S = 6 * 3600.0  # traces start within the 6 hours before the base time

_WORDS = (
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
).split()

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
    many_spans: bool = False


_PROFILES: dict[str, _Profile] = {
    "1kb": _Profile(120, 260, 40, 60, tools=1, llm_calls=1),
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


_CORPUS = _build_corpus(256 * 1024)
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


def _hex64(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def _pick(rng: random.Random, items: tuple[Any, ...]) -> Any:
    # Faster than rng.choice, which matters at 100k traces.
    return items[int(rng.random() * len(items))]


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
            with 100 small spans nested two levels under the root).
        base: The trace starts within the 6 hours before this instant (tz-aware).
        agent: Index into the 20 agents; random when ``None``.

    Returns:
        A :class:`Trace` without ``trace_id`` (the store mints one).
    """
    profile = _PROFILES[size]
    name, framework, system = _AGENTS[
        int(rng.random() * len(_AGENTS)) if agent is None else agent % len(_AGENTS)
    ]
    model, input_price, output_price = _pick(rng, _MODELS[system])
    start = base - dt.timedelta(seconds=rng.random() * _SPREAD_S)
    run_id = f"run_{rng.getrandbits(48):012x}"
    request_id = f"req_{rng.getrandbits(64):016x}"

    root_id = _hex64(rng)
    spans = [Span(name=name, span_id=root_id, kind="AGENT", start_time=start)]
    tool_calls: list[ToolCall] = []
    prompt_tokens = completion_tokens = 0
    cost = 0.0
    clock = start + dt.timedelta(milliseconds=2 + rng.random() * 10)
    # An agent loop: plan with the model, call the tools, then answer with the model.
    steps = ["llm"] + ["tool"] * profile.tools + ["llm"] * (profile.llm_calls - 1)
    for step in steps:
        if step == "tool":
            end = clock + dt.timedelta(milliseconds=20 + rng.random() * 880)
            tool_call, span = _tool_step(rng, profile, clock, end, root_id)
            tool_calls.append(tool_call)
        else:
            end = clock + dt.timedelta(milliseconds=400 + rng.random() * 2100)
            used_in = int(300 + rng.random() * 2500)
            used_out = int(40 + rng.random() * 400)
            span_cost = round((used_in * input_price + used_out * output_price) / 1e6, 6)
            span = _llm_span(rng, system, model, (used_in, used_out, span_cost), clock, end)
            span.parent_span_id = root_id
            prompt_tokens += used_in
            completion_tokens += used_out
            cost += span_cost
        spans.append(span)
        clock = end + dt.timedelta(milliseconds=1 + rng.random() * 5)
    spans[0].end_time = clock
    spans[0].attributes = {"gen_ai.agent.name": name, "gen_ai.request.model": model}
    if profile.many_spans:
        spans = [spans[0], *_small_spans(rng, model, root_id, start, clock)]

    return Trace(
        agent_name=name,
        framework=framework,
        input=_text(rng, profile.input_chars),
        output=_text(rng, profile.output_chars),
        tool_calls=tool_calls,
        latency_ms=round((clock - start).total_seconds() * 1000, 3),
        token_usage=TokenUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        cost_usd=round(cost, 6),
        metadata={
            "run_id": run_id,
            "request_id": request_id,
            "user_id": f"user_{rng.getrandbits(20):05x}",
            "region": _pick(rng, _REGIONS),
            "app_version": "2.14.0",
        },
        spans=spans,
        timestamp=start,
        run_id=run_id,
        request_id=request_id,
        status="succeeded",
        ended_at=clock,
    )


def _llm_span(
    rng: random.Random,
    system: str,
    model: str,
    usage: tuple[int, int, float],
    start: dt.datetime,
    end: dt.datetime,
) -> Span:
    """A chat completion span with OpenTelemetry ``gen_ai.*`` attributes.

    ``usage`` is (input tokens, output tokens, cost in USD); the cost attribute follows the
    Langfuse convention since OpenTelemetry has none.
    """
    return Span(
        name=f"chat {model}",
        span_id=_hex64(rng),
        kind="LLM",
        status_code="OK",
        start_time=start,
        end_time=end,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.request.model": model,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.usage.input_tokens": usage[0],
            "gen_ai.usage.output_tokens": usage[1],
            "gen_ai.usage.cost": usage[2],
            "gen_ai.response.finish_reasons": ["stop"],
        },
    )


def _tool_step(
    rng: random.Random,
    profile: _Profile,
    start: dt.datetime,
    end: dt.datetime,
    parent_id: str,
) -> tuple[ToolCall, Span]:
    """A tool call record and its TOOL span, with a JSON-ish input and output."""
    tool, argument = _pick(rng, _TOOLS)
    latency = round((end - start).total_seconds() * 1000, 3)
    # The text is sized so that the JSON of the whole input/output lands near the target.
    call = ToolCall(
        tool_name=tool,
        input={argument: _text(rng, profile.tool_input_chars - 45), "limit": 10, "lang": "en"},
        output={"status": "ok", "result": _text(rng, profile.tool_output_chars - 30)},
        latency_ms=latency,
    )
    span = Span(
        name=f"execute_tool {tool}",
        span_id=_hex64(rng),
        parent_span_id=parent_id,
        kind="TOOL",
        status_code="OK",
        start_time=start,
        end_time=end,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool},
    )
    return call, span


def _small_spans(
    rng: random.Random, model: str, root_id: str, start: dt.datetime, end: dt.datetime
) -> list[Span]:
    """99 small spans under the root: 9 INTERNAL steps of 10 LLM/TOOL children each."""
    spans: list[Span] = []
    slot = (end - start) / 90
    for step in range(9):
        step_id = _hex64(rng)
        spans.append(
            Span(
                name=f"step {step}",
                span_id=step_id,
                parent_span_id=root_id,
                kind="INTERNAL",
                start_time=start + slot * (step * 10),
                end_time=start + slot * (step * 10 + 10),
            )
        )
        for child in range(10):
            at = start + slot * (step * 10 + child)
            is_llm = child % 2 == 0
            spans.append(
                Span(
                    name=f"chat {model}" if is_llm else _pick(rng, _TOOLS)[0],
                    span_id=_hex64(rng),
                    parent_span_id=step_id,
                    kind="LLM" if is_llm else "TOOL",
                    start_time=at,
                    end_time=at + slot,
                )
            )
    return spans

"""The record types (msgspec Structs) and their msgpack codec.

``msgspec.UNSET`` means "not reported", which is different from zero or empty: a trace whose
latency was not measured has ``latency_ms=UNSET``, not ``0``. Lists and dicts default to empty.
The Rust core validates what these encode to and fills defaults (ids, timestamps, span kind and
status, durations, token totals, event types), so a record read back carries them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType, field

__all__ = [
    "UNSET",
    "Event",
    "EventStatus",
    "Span",
    "SpanEvent",
    "SpanKind",
    "SpanStatusCode",
    "TokenUsage",
    "ToolCall",
    "Trace",
    "TraceStatus",
    "UnsetType",
]

TraceStatus = Literal["running", "succeeded", "failed"]
SpanKind = Literal[
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
    "LLM",
    "TOOL",
    "AGENT",
    "RETRIEVER",
    "EMBEDDING",
    "GUARDRAIL",
]
SpanStatusCode = Literal["UNSET", "OK", "ERROR"]
EventStatus = Literal["started", "proposed", "pending", "succeeded", "failed", "blocked"]


class _Record(Struct, kw_only=True, omit_defaults=True):
    """Shared options: keyword construction; unset and default fields are not encoded."""


class TokenUsage(_Record):
    """Token counts. ``total_tokens`` is derived as the sum of the others when not given."""

    prompt_tokens: int | UnsetType = UNSET
    completion_tokens: int | UnsetType = UNSET
    total_tokens: int | UnsetType = UNSET


class ToolCall(_Record):
    """One tool invocation: name, any JSON input/output, latency and error text."""

    tool_name: str
    input: Any = UNSET
    output: Any = UNSET
    latency_ms: float | UnsetType = UNSET
    error: str | UnsetType = UNSET


class SpanEvent(_Record):
    """A timestamped event inside a span (OpenTelemetry span event)."""

    name: str
    timestamp: dt.datetime | UnsetType = UNSET
    attributes: dict[str, Any] = field(default_factory=dict)


class Span(_Record):
    """A unit of work in a trace (an LLM call, a tool call, an agent step).

    ``span_id`` is minted when absent; ``parent_span_id`` must name a span of the same trace.
    ``start_time`` defaults to the trace's timestamp and ``duration_ms`` is derived from the
    start and end times when both are known.
    """

    name: str
    span_id: str | UnsetType = UNSET
    parent_span_id: str | UnsetType = UNSET
    kind: SpanKind | UnsetType = UNSET
    status_code: SpanStatusCode | UnsetType = UNSET
    status_message: str | UnsetType = UNSET
    start_time: dt.datetime | UnsetType = UNSET
    end_time: dt.datetime | UnsetType = UNSET
    duration_ms: float | UnsetType = UNSET
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)


class Event(_Record):
    """A normalized agent event (model.call, mcp.tool_call, policy.decision, ...).

    ``type`` aliases such as ``"llm"`` or ``"tool"`` are normalized by the store; unknown types
    become ``custom.<name>``. ``metadata["decision"]``, when present, may hold only a redacted
    summary (``proposal_summary``, ``change_summary``, ``reason_summary``, ...).
    """

    event_id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    status: EventStatus | UnsetType = UNSET
    at: dt.datetime | UnsetType = UNSET
    parent_id: str | UnsetType = UNSET
    metadata: dict[str, Any] = field(default_factory=dict)


class Trace(_Record):
    """One agent run: input, output, spans, tool calls, tokens, cost, latency and events.

    Only ``agent_name`` is required. ``trace_id`` (32 lowercase hex, time-ordered) and
    ``timestamp`` (UTC, now) are filled by the store when absent; ``redactions`` is set by
    the store.
    """

    agent_name: str
    trace_id: str | UnsetType = UNSET
    framework: str | UnsetType = UNSET
    input: str | UnsetType = UNSET
    output: str | UnsetType = UNSET
    tool_calls: list[ToolCall] = field(default_factory=list)
    latency_ms: float | UnsetType = UNSET
    token_usage: TokenUsage | UnsetType = UNSET
    cost_usd: float | UnsetType = UNSET
    metadata: dict[str, Any] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    timestamp: dt.datetime | UnsetType = UNSET
    run_id: str | UnsetType = UNSET
    request_id: str | UnsetType = UNSET
    session_id: str | UnsetType = UNSET
    status: TraceStatus | UnsetType = UNSET
    ended_at: dt.datetime | UnsetType = UNSET
    tags: list[str] = field(default_factory=list)
    redactions: int | UnsetType = UNSET


encoder = msgspec.msgpack.Encoder()
trace_decoder = msgspec.msgpack.Decoder(Trace)

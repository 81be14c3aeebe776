"""The record types (msgspec Structs) and their msgpack codec.

``msgspec.UNSET`` means "not reported", which is different from zero or empty: a trace whose
latency was not measured has ``latency_ms=UNSET``, not ``0``. Lists and dicts default to empty.
The Rust core validates what these encode to and fills defaults (ids, timestamps, span kind and
status, durations, token totals, event types), so a record read back carries them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Struct, UnsetType, field

__all__ = [
    "UNSET",
    "AutomationMode",
    "CheckReport",
    "DecisionEvent",
    "DecisionEventType",
    "DecisionStatus",
    "DecisionTrace",
    "Event",
    "EventStatus",
    "Page",
    "Span",
    "SpanEvent",
    "SpanKind",
    "SpanStatusCode",
    "Stats",
    "TokenUsage",
    "ToolCall",
    "Trace",
    "TraceStatus",
    "TraceSummary",
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
AutomationMode = Literal["propose", "approve", "override", "autonomous"]
DecisionStatus = Literal["open", "needs_approval", "approved", "rejected", "committed", "aborted"]
DecisionEventType = Literal[
    "open",
    "read",
    "write",
    "evaluate",
    "approval_requested",
    "approval_resolved",
    "context",
    "close",
]


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


T = TypeVar("T")


class LazyDecoder(Generic[T]):
    """A msgpack decoder for one type, built on first use.

    Building a msgspec ``Decoder`` resolves the annotations of every Struct the type reaches;
    done at import for all of them, that was the largest part of ``import flightlog`` after
    msgspec's own import, paid even by processes that only log.
    """

    __slots__ = ("_decoder", "_type")

    def __init__(self, type_: Any) -> None:
        self._type = type_
        self._decoder: msgspec.msgpack.Decoder[T] | None = None

    def decode(self, data: bytes) -> T:
        """Decodes ``data`` as the type, building the decoder on the first call."""
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = msgspec.msgpack.Decoder(self._type)
        return decoder.decode(data)


encoder = msgspec.msgpack.Encoder()
trace_decoder: LazyDecoder[Trace] = LazyDecoder(Trace)


class _Result(Struct, kw_only=True):
    """Shared options of what the store returns: keyword construction, every field encoded."""


class TraceSummary(_Result):
    """One trace as :meth:`Store.query` lists it: the merged view of its fragments, without
    input, output, spans or events.

    Fields the trace did not report are ``UNSET``. ``has_errors`` is true when the status is
    ``failed``, a span has ``status_code="ERROR"`` or a tool call has an ``error``;
    ``span_count`` sums the spans logged over all fragments.
    """

    trace_id: str
    agent_name: str
    timestamp: dt.datetime
    framework: str | UnsetType = UNSET
    status: TraceStatus | UnsetType = UNSET
    has_errors: bool = False
    latency_ms: float | UnsetType = UNSET
    token_usage: TokenUsage | UnsetType = UNSET
    cost_usd: float | UnsetType = UNSET
    run_id: str | UnsetType = UNSET
    request_id: str | UnsetType = UNSET
    session_id: str | UnsetType = UNSET
    span_count: int = 0
    tags: list[str] = field(default_factory=list)


class Page(_Result, Generic[T]):
    """One page of results. Iterating a page iterates its items.

    ``next_cursor`` is ``None`` on the last page; otherwise pass it as ``cursor`` with the
    same filters, order and direction to get the next page.
    """

    items: list[T]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)


class Stats(_Result):
    """Aggregates over the traces matching a filter (see :meth:`Store.stats`).

    Token and cost sums count the traces that reported them. ``mean_cost_usd`` is ``None``
    when no trace reported a cost and the latency percentiles (nearest rank) are ``None``
    when none reported a latency. ``per_hour`` maps each UTC hour
    (``"2025-06-02T12:00:00Z"``) to how many traces started in it; ``top_agents`` lists the
    ten busiest agents with their counts, busiest first; ``groups`` holds one ``Stats`` per
    value of the ``group_by`` field (traces that lack the field are in no group).
    """

    count: int
    error_count: int
    error_rate: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    mean_cost_usd: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    per_hour: dict[str, int] = field(default_factory=dict)
    top_agents: list[tuple[str, int]] = field(default_factory=list)
    groups: dict[str, Stats] = field(default_factory=dict)


class CheckReport(_Result):
    """What :meth:`Store.check` found: how much it verified and every problem, in words.

    ``ok`` is true exactly when ``problems`` is empty.
    """

    ok: bool
    traces: int
    records: int
    index_entries: int
    decisions: int = 0
    problems: list[str] = field(default_factory=list)


class DecisionEvent(_Result):
    """One event of a decision, in the order it was recorded.

    ``hash`` (64 lowercase hex) is SHA-256 over the previous event's hash and this event's
    canonical bytes. Fields a type does not have, or the caller did not give, are ``UNSET``.
    The ``open`` event carries the envelope: ``agent``, ``intent``, ``automation_mode``,
    ``metadata``, ``trace_id``, ``run_id``.
    """

    event_id: str
    type: DecisionEventType
    timestamp: dt.datetime
    hash: str
    product: str | UnsetType = UNSET
    purpose: str | UnsetType = UNSET
    data_ref: str | UnsetType = UNSET
    mutation_summary: Any = UNSET
    idempotency_key: str | UnsetType = UNSET
    policy_id: str | UnsetType = UNSET
    outcome: Literal["allow", "deny", "requires_exception"] | UnsetType = UNSET
    rationale: str | UnsetType = UNSET
    approved: bool | UnsetType = UNSET
    by: str | UnsetType = UNSET
    context: Any = UNSET
    summary: str | UnsetType = UNSET
    action: Literal["commit", "abort"] | UnsetType = UNSET
    reason: str | UnsetType = UNSET
    agent: str | UnsetType = UNSET
    intent: str | UnsetType = UNSET
    automation_mode: AutomationMode | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    trace_id: str | UnsetType = UNSET
    run_id: str | UnsetType = UNSET


class DecisionTrace(_Result):
    """A decision: its envelope and (from :meth:`Store.decision_trace`) its events.

    :meth:`Store.decisions` lists envelopes only: ``events`` is then empty.
    """

    decision_id: str
    agent: str
    intent: str
    automation_mode: AutomationMode
    status: DecisionStatus
    created_at: dt.datetime
    closed_at: dt.datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    run_id: str | None = None
    events: list[DecisionEvent] = field(default_factory=list)


page_decoder: LazyDecoder[Page[TraceSummary]] = LazyDecoder(Page[TraceSummary])
stats_decoder: LazyDecoder[Stats] = LazyDecoder(Stats)
check_report_decoder: LazyDecoder[CheckReport] = LazyDecoder(CheckReport)
decision_trace_decoder: LazyDecoder[DecisionTrace] = LazyDecoder(DecisionTrace)
decision_event_decoder: LazyDecoder[DecisionEvent] = LazyDecoder(DecisionEvent)
decision_page_decoder: LazyDecoder[Page[DecisionTrace]] = LazyDecoder(Page[DecisionTrace])

"""The model test (RELIABILITY.md test 11): a hypothesis state machine logs, updates, re-sends,
deletes, queries and reopens a real store, and after every step compares it with an
in-memory model of what SPEC.md says must be stored.

The model keeps each trace as the fragments that were accepted, with the core's documented
defaults applied, and derives everything else from them by SPEC §4's rules, written out here
independently of ``flightlog.merge``: the merged view ``get()`` returns, the summary
``query()`` lists, and (through query_model.py) what every filter matches and what ``stats()``
adds up. Updates follow SPEC §4: an exact re-send changes nothing, the agent cannot change, a
finished trace cannot run again, and a ``log_many`` with one bad trace stores none of them.

Reads see committed data: in ``group`` and ``none`` durability a step that logged without
flushing leaves the comparison for the next step that flushes (``sync`` compares after every
step). Writes are compared whether or not the data is flushed: ``delete`` and ``delete_where``
must count what was logged before them, and an update the writer refuses must be reported by
``log()`` or the next ``flush()``.

A default run is 10 examples of up to 60 steps (a few hundred steps, seconds);
``FLIGHTLOG_LONG=1`` runs 100 examples of up to 100 steps (thousands).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import flightlog
import msgspec
import pytest
from conftest import is_hex
from faults import scale
from flightlog import (
    UNSET,
    Event,
    Span,
    SpanEvent,
    TokenUsage,
    ToolCall,
    Trace,
    TraceNotFound,
    TraceSummary,
    ValidationError,
    trace_id_for,
)
from flightlog.encoding import encode
from flightlog.records import SpanKind, UnsetType
from flightlog.store import Durability, OrderBy
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from query_model import (
    AGENTS,
    COSTS,
    FRAMEWORKS,
    GROUP_BY,
    LATENCIES,
    ORDERS,
    REQUESTS,
    RUNS,
    SESSIONS,
    STATUSES,
    TAGS,
    assert_stats_equal,
    filter_sets,
    has_errors,
    matches,
    maybe,
    model_stats,
    timestamps,
    token_usages,
    walk,
    with_total,
)

DURABILITIES: list[Durability] = ["group", "sync", "none"]
NAMED = [trace_id_for(f"model-run-{n}") for n in range(12)]  # ids callers derive from run ids
SPAN_SLOTS = range(1, 7)  # span ids per trace: updates often re-send one
EVENT_SLOTS = range(1, 5)

INPUTS = ["Where is my order #4521?", "Book a table for two at 8pm", "Summarize ticket 88"]
OUTPUTS = ["It ships tomorrow.", "Booked: 20:00, two guests.", "Customer wants a refund."]
TOOLS = ["orders.lookup", "calendar.create", "kb.search"]
SPAN_NAMES = ["agent", "chat gpt-4o", "tool orders.lookup", "retrieve", "guardrail"]
KINDS: list[SpanKind | UnsetType] = ["LLM", "TOOL", "AGENT", "RETRIEVER", UNSET]
# Event types as callers send them, and as the core stores them (SPEC §3).
EVENT_TYPES: dict[Any, str] = {
    "llm": "model.call",
    "tool": "mcp.tool_call",
    "policy.decision": "policy.decision",
    "approval": "approval.requested",
    "handoff": "custom.handoff",
    UNSET: "custom.event",
}
EVENT_STATUSES = ["started", "pending", "succeeded", "failed"]
# Binary fractions: span costs sum exactly in any order.
SPAN_COSTS = [0.0, 0.125, 0.25, 0.5]
METADATA = {
    "customer_tier": st.sampled_from(["gold", "free"]),
    "attempt": st.integers(1, 3),
    "region": st.sampled_from(["eu-west-1", "us-east-1"]),
    "experiment": st.fixed_dictionaries(
        {"arm": st.sampled_from(["a", "b"]), "ids": st.just([1, 2])}
    ),
    "ticket": st.none() | st.integers(1000, 1005),
}


def ms(amount: float) -> dt.timedelta:
    return dt.timedelta(milliseconds=amount)


# --- records as callers send them -------------------------------------------------------------


def span_id(slot: int) -> str:
    """The id of a trace's span in ``slot``; ids need only be unique within their trace."""
    return f"5b8aa5a2{slot:08x}"


def event_id(slot: int) -> str:
    return f"9c0e2f41{slot:08x}"


@st.composite
def usage_attributes(draw: st.DrawFn) -> dict[str, Any]:
    """An LLM span's attributes: a model name, and sometimes usage and cost."""
    attributes: dict[str, Any] = {"gen_ai.request.model": "gpt-4o"}
    if draw(st.booleans()):
        attributes["gen_ai.usage.input_tokens"] = draw(st.integers(0, 900))
        attributes["gen_ai.usage.output_tokens"] = draw(st.integers(0, 300))
    if draw(st.integers(0, 2)) == 0:
        attributes["gen_ai.usage.cost"] = draw(st.sampled_from(SPAN_COSTS))
    return attributes


@st.composite
def spans(draw: st.DrawFn, timestamp: dt.datetime) -> list[Span]:
    """0-3 spans out of the trace's slots; a span may be the child of an earlier one."""
    slots = draw(st.lists(st.sampled_from(SPAN_SLOTS), unique=True, max_size=3))
    drawn: list[Span] = []
    for slot in slots:
        kind = draw(st.sampled_from(KINDS))
        start = draw(maybe(st.integers(0, 5000).map(lambda offset: timestamp + ms(offset))))
        length = draw(maybe(st.integers(0, 3000)))  # whole ms: the duration is exact
        end = UNSET if length is UNSET else (timestamp if start is UNSET else start) + ms(length)
        parent = draw(maybe(st.sampled_from([s.span_id for s in drawn]))) if drawn else UNSET
        drawn.append(
            Span(
                name=draw(st.sampled_from(SPAN_NAMES)),
                span_id=span_id(slot),
                parent_span_id=parent,
                kind=kind,
                status_code=draw(st.sampled_from([UNSET, "OK", "ERROR"])),
                status_message=draw(maybe(st.just("rate limited"))),
                start_time=start,
                end_time=end,
                duration_ms=draw(maybe(st.sampled_from([1.5, 250.0]))) if end is UNSET else UNSET,
                attributes=draw(usage_attributes()) if kind == "LLM" else {},
                events=draw(
                    st.lists(
                        st.builds(
                            SpanEvent,
                            name=st.just("retry"),
                            timestamp=maybe(st.just(timestamp + ms(7))),
                            attributes=st.fixed_dictionaries({"attempt": st.integers(1, 3)}),
                        ),
                        max_size=1,
                    )
                ),
            )
        )
    return drawn


@st.composite
def events(draw: st.DrawFn, timestamp: dt.datetime) -> list[Event]:
    slots = draw(st.lists(st.sampled_from(EVENT_SLOTS), unique=True, max_size=2))
    return [
        Event(
            event_id=event_id(slot),
            type=draw(st.sampled_from(list(EVENT_TYPES))),
            status=draw(maybe(st.sampled_from(EVENT_STATUSES))),
            at=draw(maybe(st.just(timestamp + ms(slot)))),
            metadata=draw(st.sampled_from([{}, {"model": "gpt-4o"}, {"tool": "orders.lookup"}])),
        )
        for slot in slots
    ]


tool_calls = st.lists(
    st.builds(
        ToolCall,
        tool_name=st.sampled_from(TOOLS),
        input=maybe(st.fixed_dictionaries({"order": st.integers(4520, 4522)})),
        output=maybe(st.sampled_from([{"eta": "tomorrow"}, ["a", 1, None], "ok"])),
        latency_ms=maybe(st.sampled_from([3.0, 41.5])),
        error=maybe(st.just("timeout after 30 s")),
    ),
    max_size=2,
)
usages = token_usages | st.builds(
    lambda p, c, extra: TokenUsage(
        prompt_tokens=p, completion_tokens=c, total_tokens=p + c + extra
    ),
    st.integers(0, 500),
    st.integers(0, 500),
    st.integers(0, 9),
)


@st.composite
def fragments(
    draw: st.DrawFn, trace_id: str | UnsetType, agent: str, statuses: list[Any], first: bool
) -> Trace:
    """A fragment of the trace ``trace_id`` (UNSET: minted): a first one sets most fields,
    an update a few (new spans or re-sent ones with another status or usage, more tool calls,
    metadata keys that replace earlier ones, a status in ``statuses``)."""
    often = st.integers(0, 9).map(lambda n: n < (7 if first else 3))
    timestamp = draw(timestamps)

    def some(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(strategy) if draw(often) else UNSET

    keys = draw(st.lists(st.sampled_from(sorted(METADATA)), unique=True, max_size=2))
    return Trace(
        agent_name=agent,
        trace_id=trace_id,
        timestamp=timestamp,
        framework=some(st.sampled_from(FRAMEWORKS)),
        input=some(st.sampled_from(INPUTS)),
        output=some(st.sampled_from(OUTPUTS)),
        tool_calls=draw(tool_calls),
        latency_ms=some(st.sampled_from(LATENCIES)),
        token_usage=some(usages),
        cost_usd=some(st.sampled_from(COSTS)),
        metadata={key: draw(METADATA[key]) for key in keys},
        spans=draw(spans(timestamp)),
        events=draw(events(timestamp)),
        run_id=some(st.sampled_from(RUNS)),
        request_id=some(st.sampled_from(REQUESTS)),
        session_id=some(st.sampled_from(SESSIONS)),
        status=draw(st.sampled_from(statuses)),
        ended_at=some(st.just(timestamp + ms(2500))),
        tags=draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=2)),
    )


# --- the model --------------------------------------------------------------------------------


def as_stored(fragment: Trace, trace_id: str) -> Trace:
    """A fragment with the defaults the core applies (SPEC §4): the id, span kind, status,
    start (the fragment's timestamp) and duration, span event times (the span's start),
    event types and times, the token total, and ``redactions``."""
    timestamp = cast(dt.datetime, fragment.timestamp)
    stored_spans = []
    for span in fragment.spans:
        start = timestamp if span.start_time is UNSET else span.start_time
        duration = span.duration_ms
        if span.end_time is not UNSET:
            duration = (span.end_time - start) / ms(1)
        stored_spans.append(
            msgspec.structs.replace(
                span,
                kind="INTERNAL" if span.kind is UNSET else span.kind,
                status_code="UNSET" if span.status_code is UNSET else span.status_code,
                start_time=start,
                duration_ms=duration,
                events=[
                    msgspec.structs.replace(
                        e, timestamp=start if e.timestamp is UNSET else e.timestamp
                    )
                    for e in span.events
                ],
            )
        )
    stored_events = [
        msgspec.structs.replace(
            event,
            type=EVENT_TYPES[event.type],
            at=timestamp if event.at is UNSET else event.at,
        )
        for event in fragment.events
    ]
    return msgspec.structs.replace(
        fragment,
        trace_id=trace_id,
        token_usage=with_total(fragment.token_usage),
        spans=stored_spans,
        events=stored_events,
        redactions=0,
    )


# Fields with a merge rule of their own (SPEC §4); in every other one the newest value wins.
OWN_RULES = {"trace_id", "agent_name", "timestamp", "spans", "events", "tool_calls"}
OWN_RULES |= {"metadata", "tags", "redactions"}
SCALARS = [name for name in Trace.__struct_fields__ if name not in OWN_RULES]


def merged_view(stored: list[Trace]) -> Trace:
    """What ``get()`` must return for these fragments, oldest first (SPEC §4): the first
    fragment's id, agent and timestamp; the newest set value of every other scalar; spans and
    events unioned by id, a re-sent one replacing the earlier version in place; tool calls
    appended; metadata merged key by key; tags unioned in order; redactions summed."""
    first = stored[0]
    scalars = {name: getattr(first, name) for name in SCALARS}
    span_by_id = {span.span_id: span for span in first.spans}
    event_by_id = {event.event_id: event for event in first.events}
    calls, metadata, tags = list(first.tool_calls), dict(first.metadata), list(first.tags)
    redactions = cast(int, first.redactions)
    for later in stored[1:]:
        scalars.update(
            (name, getattr(later, name)) for name in SCALARS if getattr(later, name) is not UNSET
        )
        span_by_id.update((span.span_id, span) for span in later.spans)
        event_by_id.update((event.event_id, event) for event in later.events)
        calls += later.tool_calls
        metadata.update(later.metadata)
        tags += [tag for tag in later.tags if tag not in tags]
        redactions += cast(int, later.redactions)
    return Trace(
        agent_name=first.agent_name,
        trace_id=first.trace_id,
        timestamp=first.timestamp,
        spans=list(span_by_id.values()),
        events=list(event_by_id.values()),
        tool_calls=calls,
        metadata=metadata,
        tags=tags,
        redactions=redactions,
        **scalars,
    )


def span_usage(spans: list[Span]) -> tuple[TokenUsage | UnsetType, float | UnsetType]:
    """Token usage and cost summed over the LLM spans that reported them (SPEC §3), UNSET
    when none did."""
    llm = [span.attributes for span in spans if span.kind == "LLM"]
    counted = [a for a in llm if "gen_ai.usage.input_tokens" in a]
    priced = [a["gen_ai.usage.cost"] for a in llm if "gen_ai.usage.cost" in a]
    usage: TokenUsage | UnsetType = UNSET
    if counted:
        prompt = sum(a["gen_ai.usage.input_tokens"] for a in counted)
        completion = sum(a["gen_ai.usage.output_tokens"] for a in counted)
        usage = TokenUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )
    return usage, sum(priced) if priced else UNSET


def summary_of(trace: Trace) -> TraceSummary:
    """What ``query()`` must list for a merged trace: trace-level usage and cost when
    reported, else the LLM spans'."""
    derived_usage, derived_cost = span_usage(trace.spans)
    return TraceSummary(
        trace_id=cast(str, trace.trace_id),
        agent_name=trace.agent_name,
        timestamp=cast(dt.datetime, trace.timestamp),
        framework=trace.framework,
        status=trace.status,
        has_errors=has_errors(trace),
        latency_ms=trace.latency_ms,
        token_usage=derived_usage if trace.token_usage is UNSET else trace.token_usage,
        cost_usd=derived_cost if trace.cost_usd is UNSET else trace.cost_usd,
        run_id=trace.run_id,
        request_id=trace.request_id,
        session_id=trace.session_id,
        span_count=len(trace.spans),
        tags=trace.tags,
    )


def in_order(
    summaries: list[TraceSummary], order_by: OrderBy, descending: bool
) -> list[TraceSummary]:
    """The order ``query()`` lists them in: by the value, then timestamp, then trace id;
    traces that did not report the value last, by timestamp then id; all in one direction."""
    if order_by == "timestamp":
        return sorted(summaries, key=lambda s: (s.timestamp, s.trace_id), reverse=descending)
    reported = [s for s in summaries if getattr(s, order_by) is not UNSET]
    unreported = [s for s in summaries if getattr(s, order_by) is UNSET]
    return sorted(
        reported, key=lambda s: (getattr(s, order_by), s.timestamp, s.trace_id), reverse=descending
    ) + sorted(unreported, key=lambda s: (s.timestamp, s.trace_id), reverse=descending)


Payload = Trace | dict[str, Any]  # what a caller passes to log()


@dataclass
class ModelTrace:
    """One stored trace: its accepted fragments with defaults applied, oldest first, and the
    encodings of those logged under a named id (an exact re-send of one changes nothing)."""

    fragments: list[Trace] = field(default_factory=list)
    sent: dict[bytes, Payload] = field(default_factory=dict)

    def copy(self) -> ModelTrace:
        return ModelTrace(list(self.fragments), dict(self.sent))


def refusal(traces: Mapping[str, ModelTrace], trace_id: str, fragment: Trace) -> list[str]:
    """The fields SPEC §4 refuses this update for: another ``agent_name``, a finished trace
    running again (``status``)."""
    known = traces.get(trace_id)
    if known is None:
        return []
    merged = merged_view(known.fragments)
    agent = fragment.agent_name != merged.agent_name
    rerun = fragment.status == "running" and merged.status in ("succeeded", "failed")
    return ["agent_name"] * agent + ["status"] * rerun


# --- the state machine ------------------------------------------------------------------------


@settings(
    max_examples=scale(10, 100),
    stateful_step_count=scale(60, 100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
class StoreMachine(RuleBasedStateMachine):
    """A store in a temporary directory and the model of what it must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="flightlog-model-"))
        self.path = self.directory / "store"
        self.store: flightlog.Store | None = None
        self.traces: dict[str, ModelTrace] = {}
        self.gone: list[str] = [trace_id_for("never-logged")]  # ids with nothing stored
        # Logged but maybe not committed yet: reads may lag until the next flush.
        self.pending = False
        # An update that log() accepted and the writer must refuse: the next flush says so.
        self.owed: list[str] = []

    @property
    def open_store(self) -> flightlog.Store:
        assert self.store is not None
        return self.store

    def teardown(self) -> None:
        try:
            if self.store is not None:
                with contextlib.suppress(flightlog.FlightlogError):
                    self.store.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------------------

    def summaries(self) -> list[TraceSummary]:
        return [summary_of(merged_view(t.fragments)) for t in self.traces.values()]

    def stamps(self) -> list[dt.datetime]:
        return [cast(dt.datetime, t.fragments[0].timestamp) for t in self.traces.values()]

    def logged(self, flush: bool) -> None:
        """After a write: in group and none durability reads may lag until a flush."""
        if self.open_store.durability != "sync":
            self.pending = True
        if flush:
            self.flush()

    def settle(self) -> None:
        if self.pending:
            self.flush()

    def plan(
        self, batch: list[tuple[Trace, Payload]], many: bool
    ) -> tuple[dict[str, ModelTrace], list[str]]:
        """The traces after storing ``batch`` (all or nothing; minted traces are added once
        their ids are known), and the error paths if SPEC §4 refuses an update of it (from
        ``log_many`` they start with the trace's position, as its validation errors do)."""
        after = dict(self.traces)
        for i, (fragment, payload) in enumerate(batch):
            trace_id = fragment.trace_id
            if isinstance(trace_id, UnsetType):
                continue
            known = after.get(trace_id)
            sent = encode(payload)
            if known is not None and sent in known.sent:
                continue
            refused = refusal(after, trace_id, fragment)
            if refused:
                prefix = f"[{i}]." if many else ""
                return self.traces, [prefix + path for path in refused]
            known = ModelTrace() if known is None else known.copy()
            known.fragments.append(as_stored(fragment, trace_id))
            known.sent[sent] = payload
            after[trace_id] = known
        return after, []

    def log(self, records: list[Trace], as_dicts: bool, many: bool, flush: bool) -> None:
        """Logs ``records`` (in one ``log_many``, or with ``log`` one by one), as Trace
        structs or as plain dicts, and updates the model as SPEC §4 says, expecting a
        refusal from ``log()`` or, if the writer refuses, from the next flush."""
        batch = [(r, msgspec.to_builtins(r) if as_dicts else r) for r in records]
        for call in [batch] if many else [[item] for item in batch]:
            after, refused = self.plan(call, many)
            payloads = [payload for _, payload in call]
            try:
                ids = (
                    self.open_store.log_many(payloads)
                    if many
                    else [self.open_store.log(payloads[0])]
                )
            except ValidationError as err:
                assert refused, f"refused for no reason: {err.errors}"
                assert [e["path"] for e in err.errors] == refused
                continue
            if refused:
                assert self.open_store.durability != "sync", "sync mode refuses in log()"
                self.owed = self.owed or refused  # a flush reports the first refusal
                self.pending = True
                continue
            for (fragment, _), trace_id in zip(call, ids, strict=True):
                assert is_hex(trace_id, 32)
                if fragment.trace_id is UNSET:
                    assert trace_id not in after, "a minted id is new"
                    after[trace_id] = ModelTrace([as_stored(fragment, trace_id)])
                else:
                    assert trace_id == fragment.trace_id
            self.traces = after
            self.gone = [g for g in self.gone if g not in after]
            self.logged(flush=False)
        if flush:
            self.flush()

    def new_trace(self, data: st.DataObject) -> Trace:
        """A first fragment, under a minted id or a named one not stored yet."""
        ids: list[str | UnsetType] = [UNSET, *[t for t in NAMED if t not in self.traces]]
        trace_id = data.draw(st.sampled_from(ids))
        agent = data.draw(st.sampled_from(AGENTS))
        return data.draw(fragments(trace_id, agent, [UNSET, *STATUSES], first=True))

    def update_of(self, data: st.DataObject, trace_id: str) -> Trace:
        """A later fragment of a stored trace that SPEC §4 accepts."""
        merged = merged_view(self.traces[trace_id].fragments)
        done = merged.status in ("succeeded", "failed")
        statuses = [UNSET, "succeeded", "failed"] if done else [UNSET, *STATUSES]
        return data.draw(fragments(trace_id, merged.agent_name, statuses, first=False))

    # --- rules --------------------------------------------------------------------------------

    @initialize(durability=st.sampled_from(DURABILITIES))
    def open(self, durability: Durability) -> None:
        self.store = flightlog.open(self.path, durability=durability)

    @rule(data=st.data(), as_dict=st.booleans(), flush=st.booleans())
    def log_new_trace(self, data: st.DataObject, as_dict: bool, flush: bool) -> None:
        self.log([self.new_trace(data)], as_dict, many=False, flush=flush)

    @rule(data=st.data(), as_dict=st.booleans(), flush=st.booleans())
    def update_a_trace(self, data: st.DataObject, as_dict: bool, flush: bool) -> None:
        if not self.traces:
            return
        trace_id = data.draw(st.sampled_from(sorted(self.traces)))
        self.log([self.update_of(data, trace_id)], as_dict, many=False, flush=flush)

    @rule(data=st.data(), as_dict=st.booleans())
    def log_a_trace_stamped_by_the_store(self, data: st.DataObject, as_dict: bool) -> None:
        """A first fragment without a timestamp: the store stamps it with the time of
        ``log()``, and its spans start then (read back after a flush, then modelled)."""
        drawn = self.new_trace(data)
        fragment = msgspec.structs.replace(
            drawn,
            timestamp=UNSET,
            ended_at=UNSET,
            spans=[
                msgspec.structs.replace(span, start_time=UNSET, end_time=UNSET)
                for span in drawn.spans
            ],
        )
        payload = msgspec.to_builtins(fragment) if as_dict else fragment
        before = dt.datetime.now(dt.timezone.utc)
        trace_id = self.open_store.log(payload)
        after = dt.datetime.now(dt.timezone.utc)
        assert trace_id not in self.traces
        self.logged(flush=True)
        stamp = self.open_store.get(trace_id).timestamp
        assert isinstance(stamp, dt.datetime)
        assert before <= stamp <= after
        stored = as_stored(msgspec.structs.replace(fragment, timestamp=stamp), trace_id)
        sent = {} if fragment.trace_id is UNSET else {encode(payload): payload}
        self.traces[trace_id] = ModelTrace([stored], sent)
        self.gone = [g for g in self.gone if g != trace_id]

    @rule(data=st.data(), flush=st.booleans())
    def resend_a_fragment(self, data: st.DataObject, flush: bool) -> None:
        """Logs again exactly what was logged before under a named id: nothing changes, not
        even for a ``running`` fragment of a trace that finished since."""
        sent = [(tid, p) for tid, t in sorted(self.traces.items()) for p in t.sent.values()]
        if not sent:
            return
        _, payload = data.draw(st.sampled_from(sent))
        self.open_store.log(payload)
        self.logged(flush)

    @rule(data=st.data(), flush=st.booleans(), as_dicts=st.booleans())
    def log_many(self, data: st.DataObject, flush: bool, as_dicts: bool) -> None:
        """New traces and updates in one call (an update may follow another of the same
        trace, or a new trace may take a named id another one in the call took; SPEC §4
        then decides); sometimes with a trace the core refuses: nothing is stored."""
        records: list[Trace] = []
        for _ in range(data.draw(st.integers(1, 6))):
            if bool(self.traces) and data.draw(st.booleans()):
                records.append(
                    self.update_of(data, data.draw(st.sampled_from(sorted(self.traces))))
                )
            else:
                records.append(self.new_trace(data))
        if data.draw(st.integers(0, 4)) > 0:
            self.log(records, as_dicts, many=True, flush=flush)
            return
        at = data.draw(st.integers(0, len(records)))
        records.insert(at, msgspec.structs.replace(records[at - 1], latency_ms=-1.0))
        with pytest.raises(ValidationError) as caught:
            self.open_store.log_many(records)
        assert [e["path"] for e in caught.value.errors] == [f"[{at}].latency_ms"]

    @rule(data=st.data(), flush=st.booleans(), many=st.booleans())
    def refused_update(self, data: st.DataObject, flush: bool, many: bool) -> None:
        """An update SPEC §4 refuses (another agent, or a finished trace running again),
        logged alone or as a ``log_many`` of one."""
        if not self.traces:
            return
        trace_id = data.draw(st.sampled_from(sorted(self.traces)))
        update = self.update_of(data, trace_id)
        merged = merged_view(self.traces[trace_id].fragments)
        if merged.status in ("succeeded", "failed") and data.draw(st.booleans()):
            update = msgspec.structs.replace(update, status="running")
        else:
            other = data.draw(st.sampled_from([a for a in AGENTS if a != merged.agent_name]))
            update = msgspec.structs.replace(update, agent_name=other)
        self.log([update], as_dicts=False, many=many, flush=flush)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        trace_id = data.draw(st.sampled_from(sorted(self.traces) + self.gone))
        assert self.open_store.delete(trace_id) == (trace_id in self.traces)
        if self.traces.pop(trace_id, None) is not None:
            self.gone.append(trace_id)
        with pytest.raises(TraceNotFound, match=trace_id):
            self.open_store.get(trace_id)

    @rule(data=st.data(), log_first=st.booleans())
    def delete_where(self, data: st.DataObject, log_first: bool) -> None:
        """Deletes by filter, perhaps right after logging traces it may match (not flushed:
        ``delete_where`` must see them as ``delete`` does)."""
        filters = data.draw(filter_sets(self.stamps()))
        if log_first:
            fresh = [self.new_trace(data) for _ in range(data.draw(st.integers(1, 3)))]
            self.log(fresh, as_dicts=False, many=True, flush=False)
        if not filters:
            with pytest.raises(ValidationError, match="at least one filter"):
                self.open_store.delete_where()
            return
        hit = [s.trace_id for s in self.summaries() if matches(s, filters)]
        assert self.open_store.delete_where(**filters) == len(hit), filters
        for trace_id in hit:
            del self.traces[trace_id]
        self.gone += hit

    @rule(data=st.data())
    def query(self, data: st.DataObject) -> None:
        self.settle()
        filters = data.draw(filter_sets(self.stamps()))
        order_by = data.draw(st.sampled_from(ORDERS))
        descending = data.draw(st.booleans())
        limit = data.draw(st.integers(1, 7))
        items = walk(self.open_store, limit, order_by=order_by, descending=descending, **filters)
        matching = [s for s in self.summaries() if matches(s, filters)]
        assert items == in_order(matching, order_by, descending)

    @rule(data=st.data(), group_by=st.sampled_from([None, *GROUP_BY]))
    def count_and_stats(self, data: st.DataObject, group_by: Any) -> None:
        self.settle()
        filters = data.draw(filter_sets(self.stamps()))
        matching = [s for s in self.summaries() if matches(s, filters)]
        assert self.open_store.count(**filters) == len(matching)
        assert_stats_equal(
            self.open_store.stats(**filters, group_by=group_by), model_stats(matching, group_by)
        )

    @rule(data=st.data())
    def get_what_is_not_stored(self, data: st.DataObject) -> None:
        self.settle()
        trace_id = data.draw(st.sampled_from(self.gone))
        with pytest.raises(TraceNotFound, match=trace_id):
            self.open_store.get(trace_id)

    @rule()
    def flush(self) -> None:
        if self.owed:
            with pytest.raises(ValidationError) as caught:
                self.open_store.flush()
            assert [e["path"] for e in caught.value.errors] == self.owed
            self.owed = []
        self.open_store.flush()
        self.pending = False

    @rule(durability=st.sampled_from(DURABILITIES), overlap=st.booleans())
    def reopen(self, durability: Durability, overlap: bool) -> None:
        """Closes the store (which flushes) and opens it again, perhaps in another mode, or
        first opens a second handle (sharing the environment) and then closes the first."""
        old = self.open_store
        if overlap:
            self.store = flightlog.open(self.path, durability=durability)
        if self.owed:
            with pytest.raises(ValidationError) as caught:
                old.close()
            assert [e["path"] for e in caught.value.errors] == self.owed
            self.owed = []
        else:
            old.close()
        assert old.closed
        if not overlap:
            self.store = flightlog.open(self.path, durability=durability)
            self.pending = False

    # --- the invariant ------------------------------------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        """Whatever the reads see (every step in sync mode, else once flushed): each trace
        as ``get()`` returns it, the summaries ``query()`` lists in order, count and stats,
        and a clean ``check()`` over exactly the model's traces and fragments."""
        if self.pending or self.store is None:
            return
        store = self.open_store
        expected = {tid: merged_view(t.fragments) for tid, t in self.traces.items()}
        for trace_id, trace in expected.items():
            assert store.get(trace_id) == trace
        summaries = [summary_of(trace) for trace in expected.values()]
        assert walk(store, 1000) == in_order(summaries, "timestamp", descending=True)
        assert store.count() == len(summaries)
        assert_stats_equal(store.stats(), model_stats(summaries))
        report = store.check()
        fragments = sum(len(t.fragments) for t in self.traces.values())
        assert (report.ok, report.traces, report.records) == (True, len(summaries), fragments), (
            report.problems
        )


TestStoreEqualsModel = StoreMachine.TestCase

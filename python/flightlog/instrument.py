"""Instrumentation: traces and spans recorded by running code, carried in ``contextvars``.

``with store.trace(agent_name=..., input=...) as t:`` logs a ``running`` fragment at once (a
process that dies inside the block leaves that evidence), and at exit one final fragment under
the same trace id with the output, latency, status (``succeeded``, or ``failed`` with the
exception's type and message in ``metadata["error"]``), token usage, tool calls and every
span. ``t.span(name, kind=...)`` opens a span whose parent is the span current in this
context. Spans are kept in memory until the trace ends: a span costs no write of its own.

Context lives in two ``ContextVar``s, so nested calls, asyncio tasks (which copy the context
when created) and threads started with ``contextvars.copy_context().run`` see the right
current trace and span. A generator or async generator decorated with :func:`traced` runs
each step in its own context, so spans it opens never leak into its consumer.

**Extension point: :class:`Capture`.** While a ``Capture(store, run_id=...)`` is entered in a
context, every trace logged through *that* store in that context (by :meth:`Store.trace`,
:meth:`Store.log` or :meth:`Store.log_many`) gets ``run_id`` when it names none, and its id
is collected; :meth:`Capture.usage` then sums the tokens and cost of the collected traces as
stored. The pytest plugin enters one per test so that agent code under test is tied to the
test run and its cost shows on the test's trace. A Capture can be entered and exited by hand
(``capture.__enter__()`` in one hook, ``capture.__exit__(None, None, None)`` in a later one)
as long as both happen in the same context; so can a trace.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import msgspec

from flightlog import _core
from flightlog.errors import NoDefaultStore, TraceNotActive, ValidationError
from flightlog.records import UNSET, SpanKind, SpanStatusCode, Trace

if TYPE_CHECKING:
    from flightlog.store import Store

__all__ = [
    "ActiveSpan",
    "ActiveTrace",
    "Capture",
    "CapturedUsage",
    "current_span",
    "current_trace",
    "default_store",
    "set_default_store",
    "trace",
    "traced",
]

_current_trace: contextvars.ContextVar[ActiveTrace | None] = contextvars.ContextVar(
    "flightlog_current_trace", default=None
)
_current_span: contextvars.ContextVar[ActiveSpan | None] = contextvars.ContextVar(
    "flightlog_current_span", default=None
)
capturing: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "flightlog_capture", default=None
)

_SPAN_KINDS: Final = frozenset(SpanKind.__args__)  # type: ignore[attr-defined]
_STATUS_CODES: Final = frozenset(SpanStatusCode.__args__)  # type: ignore[attr-defined]
# Set by the trace itself when it ends; a caller giving them at entry is a mistake.
_RESERVED_FIELDS: Final = ("status", "latency_ms", "ended_at", "token_usage", "cost_usd")
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_MAX_NAME: Final = 1024
_MAX_VALUE_DEPTH: Final = 48  # under the core's default max_depth of 64 with room for the path

_NEW, _ACTIVE, _ENDED = 0, 1, 2
_perf_counter = time.perf_counter
_new_span_id = _core.new_span_id


# --- the current trace and span ----------------------------------------------------------------


def current_trace() -> ActiveTrace | None:
    """The innermost trace whose ``with`` block is running in this context, or ``None``."""
    return _current_trace.get()


def current_span() -> ActiveSpan | None:
    """The innermost span whose ``with`` block is running in this context, or ``None``."""
    return _current_span.get()


# --- the default store -------------------------------------------------------------------------

_default_store: Store | None = None
_default_lock = threading.Lock()


def set_default_store(store: Store | None) -> None:
    """Sets the store that :func:`trace` and :func:`traced` use (``None`` unsets it).

    Raises:
        ValidationError: ``store`` is not a :class:`Store` or ``None``.
    """
    from flightlog.store import Store

    if store is not None and not isinstance(store, Store):
        raise _invalid("store", f"expected a flightlog.Store or None, got {type(store).__name__}")
    global _default_store
    with _default_lock:
        _default_store = store


def default_store() -> Store:
    """The store set by :func:`set_default_store`.

    When none was set and ``$FLIGHTLOG_PATH`` names a directory, that store is opened on
    first use (with the default options) and becomes the default store.

    Raises:
        NoDefaultStore: No store was set and ``$FLIGHTLOG_PATH`` is not set.
    """
    global _default_store
    found = _default_store
    if found is not None:
        return found
    with _default_lock:
        if _default_store is None:
            path = os.environ.get("FLIGHTLOG_PATH")
            if not path:
                raise NoDefaultStore(
                    "no default store: call flightlog.set_default_store(store) first, "
                    "or set $FLIGHTLOG_PATH to a store directory"
                )
            from flightlog.store import open as open_store

            _default_store = open_store(path)
        return _default_store


def trace(agent_name: str, **fields: Any) -> ActiveTrace:
    """Starts a trace in the default store; see :meth:`Store.trace`.

    Raises:
        NoDefaultStore: No default store is set (see :func:`default_store`).
    """
    return default_store().trace(agent_name, **fields)


# --- traces ------------------------------------------------------------------------------------


class ActiveTrace:
    """A trace being recorded; get one from :meth:`Store.trace` and use it in a ``with``
    block (entering it logs the ``running`` fragment, leaving it the final one).

    Spans, tool calls and usage may be added from any thread or task while the block runs;
    afterwards every method raises :class:`TraceNotActive`.
    """

    __slots__ = (
        "_agent_name",
        "_clock_offset",
        "_completion_tokens",
        "_cost_usd",
        "_error",
        "_fields",
        "_lock",
        "_metadata",
        "_output",
        "_perf0",
        "_previous",
        "_prompt_tokens",
        "_spans",
        "_state",
        "_store",
        "_tool_calls",
        "_trace_id",
        "_wall0",
    )

    def __init__(self, store: Store, agent_name: str, fields: dict[str, Any]) -> None:
        for name in _RESERVED_FIELDS:
            if name in fields:
                raise _invalid(name, _RESERVED_MESSAGES.get(name, "is set when the trace ends"))
        trace_id = fields.pop("trace_id", None)
        if trace_id is not None and not isinstance(trace_id, str):
            raise _invalid("trace_id", f"expected a string, got {type(trace_id).__name__}")
        output = fields.pop("output", None)
        if output is not None and not isinstance(output, str):
            raise _invalid("output", f"expected a string, got {type(output).__name__}")
        self._store = store
        self._agent_name = agent_name
        self._trace_id: str = trace_id or _core.new_trace_id()
        self._fields = fields
        self._output: str | None = output
        self._spans: list[dict[str, Any]] = []
        self._tool_calls: list[dict[str, Any]] = []
        self._prompt_tokens: int | None = None
        self._completion_tokens: int | None = None
        self._cost_usd: float | None = None
        self._metadata: dict[str, Any] = {}
        self._error: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._state = _NEW
        self._wall0 = 0.0
        self._perf0 = 0.0
        self._clock_offset = 0.0
        self._previous: tuple[ActiveTrace | None, ActiveSpan | None] = (None, None)

    @property
    def trace_id(self) -> str:
        """The trace id (32 lowercase hex), the same for every fragment of this trace."""
        return self._trace_id

    @property
    def agent_name(self) -> str:
        """The agent this trace belongs to."""
        return self._agent_name

    @property
    def store(self) -> Store:
        """The store this trace is logged into."""
        return self._store

    @property
    def output(self) -> str | None:
        """The trace's output, written with the final fragment; ``None`` until set."""
        return self._output

    @output.setter
    def output(self, value: str) -> None:
        self._check_active("set the output of")
        if not isinstance(value, str):
            raise _invalid("output", f"expected a string, got {type(value).__name__}")
        self._output = value

    def span(self, name: str, /, kind: SpanKind = "INTERNAL", **attributes: Any) -> ActiveSpan:
        """A span of this trace, to use in a ``with`` block.

        Its parent is the span of this trace current in this context when the block is
        entered; its start and end times are taken there. An exception leaving the block sets
        ``status_code="ERROR"`` and adds an ``exception`` event, then propagates.

        Args:
            name: What the span does, e.g. ``"chat gpt-4o"`` (1..1024 characters).
            kind: ``"INTERNAL"`` (default), ``"LLM"``, ``"TOOL"``, ``"AGENT"``,
                ``"RETRIEVER"``, ... (see :class:`flightlog.Span`).
            **attributes: JSON-compatible values; names with dots can be passed as
                ``**{"gen_ai.request.model": "gpt-4o"}``. On ``LLM`` spans,
                ``gen_ai.usage.input_tokens`` / ``output_tokens`` / ``cost`` count towards
                the trace's usage when :meth:`usage` was never called.

        Raises:
            ValidationError: A bad name, kind or attribute; nothing was recorded.
            TraceNotActive: The trace is not running.
        """
        if self._state != _ACTIVE:
            self._check_active("add a span to")
        return ActiveSpan(self, name, kind, attributes)

    def tool_call(
        self,
        tool_name: str,
        *,
        input: Any = UNSET,
        output: Any = UNSET,
        latency_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        """Records a tool invocation (a :class:`flightlog.ToolCall`).

        Args:
            tool_name: The tool's name (1..256 characters).
            input: Any JSON-compatible value.
            output: Any JSON-compatible value.
            latency_ms: How long it took, ``>= 0``.
            error: The error it reported; makes the trace count as having errors.

        Raises:
            ValidationError: A field has a bad value; nothing was recorded.
            TraceNotActive: The trace is not running.
        """
        self._check_active("add a tool call to")
        call: dict[str, Any] = {"tool_name": _checked_name("tool_name", tool_name, 256)}
        if input is not UNSET:
            call["input"] = _json_value("input", input, 0)
        if output is not UNSET:
            call["output"] = _json_value("output", output, 0)
        if latency_ms is not None:
            call["latency_ms"] = _non_negative("latency_ms", latency_ms, float)
        if error is not None:
            if not isinstance(error, str):
                raise _invalid("error", f"expected a string, got {type(error).__name__}")
            call["error"] = error
        self._tool_calls.append(call)

    def usage(
        self,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Adds token counts and cost to the trace's totals (they accumulate over calls).

        Once called, the trace's ``token_usage`` and ``cost_usd`` are these totals, not the
        sum of its LLM spans' ``gen_ai.usage.*`` attributes.

        Raises:
            ValidationError: A count is not an int ``>= 0`` or the cost not a finite number
                ``>= 0``; nothing was added.
            TraceNotActive: The trace is not running.
        """
        self._check_active("add usage to")
        prompt = None if prompt_tokens is None else _non_negative("prompt_tokens", prompt_tokens)
        completion = (
            None
            if completion_tokens is None
            else _non_negative("completion_tokens", completion_tokens)
        )
        cost = None if cost_usd is None else _non_negative("cost_usd", cost_usd, float)
        with self._lock:
            if prompt is not None:
                self._prompt_tokens = (self._prompt_tokens or 0) + prompt
            if completion is not None:
                self._completion_tokens = (self._completion_tokens or 0) + completion
            if cost is not None:
                self._cost_usd = (self._cost_usd or 0.0) + cost

    def set_metadata(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Adds metadata, written with the final fragment and merged key by key into what
        the trace was started with (a later value replaces an earlier one).

        Raises:
            ValidationError: A value is not JSON-compatible; ``.errors`` names
                ``metadata.<key>``. Nothing was added.
            TraceNotActive: The trace is not running.
        """
        self._check_active("set metadata on")
        if values is not None:
            if type(values) is not dict and not isinstance(values, Mapping):
                raise _invalid("metadata", f"expected a dict, got {type(values).__name__}")
            more = {**values, **more}
        _checked_in_place("metadata", more)
        with self._lock:
            self._metadata.update(more)

    def set_error(self, type: str, message: str) -> None:
        """Marks the trace ``failed`` when it ends, with ``metadata["error"] = {"type",
        "message"}``, for a failure that is not an exception leaving the block (a test
        reported as failed, a refusal the agent handled). An exception leaving the block
        still takes precedence.

        Raises:
            ValidationError: ``type`` or ``message`` is not a string.
            TraceNotActive: The trace is not running.
        """
        self._check_active("set the error of")
        _checked_name("type", type, 1024)
        if not isinstance(message, str):
            raise _invalid("message", f"expected a string, got {message.__class__.__name__}")
        _check_text("message", message)
        self._error = {"type": type, "message": message}

    def __enter__(self) -> ActiveTrace:
        if self._state != _NEW:
            raise TraceNotActive(f"trace {self._trace_id} was already entered: start a new one")
        self._wall0 = time.time()
        self._perf0 = time.perf_counter()
        # Span times are the monotonic clock shifted to wall-clock epoch seconds: one
        # addition per reading, and durations never go negative when the wall clock moves.
        self._clock_offset = self._wall0 - self._perf0
        record = {
            **self._fields,
            "trace_id": self._trace_id,
            "agent_name": self._agent_name,
            "status": "running",
        }
        if "timestamp" not in record:
            record["timestamp"] = self._wall0
        if self._output is not None:
            record["output"] = self._output
        self._store.log(record)
        self._state = _ACTIVE
        self._previous = (_current_trace.get(), _current_span.get())
        _current_trace.set(self)
        _current_span.set(None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != _ACTIVE:
            raise TraceNotActive(f"trace {self._trace_id} is not running: it cannot end")
        ended = time.perf_counter()
        # From here on, a span ending in another thread logs its own fragment (see
        # ActiveSpan.__exit__): the list below is final.
        self._state = _ENDED
        previous_trace, previous_span = self._previous
        _current_trace.set(previous_trace)
        _current_span.set(previous_span)
        error = _error_of(exc) if exc is not None else self._error
        record: dict[str, Any] = {
            "trace_id": self._trace_id,
            "agent_name": self._agent_name,
            "status": "succeeded" if error is None else "failed",
            "latency_ms": (ended - self._perf0) * 1000.0,
            "ended_at": self._wall0 + (ended - self._perf0),
        }
        if self._output is not None:
            record["output"] = self._output
        if self._spans:
            record["spans"] = self._spans
        if self._tool_calls:
            record["tool_calls"] = self._tool_calls
        tokens = self._token_usage()
        if tokens:
            record["token_usage"] = tokens
        if self._cost_usd is not None:
            record["cost_usd"] = self._cost_usd
        if error is not None:
            self._metadata["error"] = error
        if self._metadata:
            record["metadata"] = self._metadata
        try:
            self._store.log(record)
        except ValidationError as refused:
            # Whatever slipped past the checks on the way in (a store with a smaller
            # max_depth, redaction="reject", ...) must not leave the trace running forever.
            self._store.log(_refused_fragment(record, error, refused))
            if exc is None:
                raise

    def _token_usage(self) -> dict[str, int]:
        tokens = {}
        if self._prompt_tokens is not None:
            tokens["prompt_tokens"] = self._prompt_tokens
        if self._completion_tokens is not None:
            tokens["completion_tokens"] = self._completion_tokens
        return tokens

    def _now(self) -> float:
        """Wall-clock epoch seconds, advancing with the monotonic clock from the trace's
        start."""
        return _perf_counter() + self._clock_offset

    def _check_active(self, doing: str) -> None:
        if self._state != _ACTIVE:
            when = "has not started" if self._state == _NEW else "has ended"
            raise TraceNotActive(
                f"cannot {doing} trace {self._trace_id}: it {when} (use it inside its with block)"
            )

    def __repr__(self) -> str:
        state = ("new", "running", "ended")[self._state]
        return f"<flightlog.ActiveTrace {self._trace_id} agent={self._agent_name!r} {state}>"


_RESERVED_MESSAGES: Final = {
    "status": "is set when the trace ends (succeeded, or failed on an exception)",
    "latency_ms": "is measured by the trace",
    "ended_at": "is measured by the trace",
    "token_usage": "is reported with t.usage(prompt_tokens=..., completion_tokens=...)",
    "cost_usd": "is reported with t.usage(cost_usd=...)",
}


def _refused_fragment(
    record: dict[str, Any], error: dict[str, str] | None, refused: ValidationError
) -> dict[str, Any]:
    """A final fragment that records only that the trace ended and why its own final
    fragment was refused."""
    if error is None:
        error = _error_of(refused)
    return {
        "trace_id": record["trace_id"],
        "agent_name": record["agent_name"],
        "status": "failed",
        "latency_ms": record["latency_ms"],
        "ended_at": record["ended_at"],
        "metadata": {"error": error, "final_fragment_refused": str(refused)},
    }


def _error_of(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return {"type": name, "message": str(exc)}


# --- spans -------------------------------------------------------------------------------------


class ActiveSpan:
    """A span of an :class:`ActiveTrace`; get one from :meth:`ActiveTrace.span` and use it in
    a ``with`` block. After the block ends, every method raises :class:`TraceNotActive`."""

    __slots__ = ("_parent", "_previous", "_record", "_state", "_trace")

    def __init__(
        self, trace: ActiveTrace, name: str, kind: str, attributes: dict[str, Any]
    ) -> None:
        # The usual name (a short ASCII string) and kind cost a few comparisons here; anything
        # else takes the full checks.
        if type(name) is not str or not 0 < len(name) <= _MAX_NAME or not name.isascii():
            _checked_name("name", name, _MAX_NAME)
        record: dict[str, Any] = {"span_id": _new_span_id(), "name": name}
        if kind != "INTERNAL":
            if kind not in _SPAN_KINDS:
                raise _invalid(
                    "kind", f"expected one of {', '.join(sorted(_SPAN_KINDS))}, got {kind!r}"
                )
            record["kind"] = kind
        if attributes:
            record["attributes"] = _checked_in_place("attributes", attributes)
        self._trace = trace
        self._record = record
        self._parent: ActiveSpan | None = None
        self._previous: ActiveSpan | None = None
        self._state = _NEW

    @property
    def span_id(self) -> str:
        """The span id (16 lowercase hex)."""
        return cast(str, self._record["span_id"])

    @property
    def parent_span_id(self) -> str | None:
        """The parent span's id, or ``None`` for a top-level span (known once entered)."""
        return None if self._parent is None else self._parent.span_id

    @property
    def name(self) -> str:
        """The span's name."""
        return cast(str, self._record["name"])

    @property
    def trace(self) -> ActiveTrace:
        """The trace this span belongs to."""
        return self._trace

    def set(self, attributes: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Sets attributes (a later value replaces an earlier one of the same name).

        Args:
            attributes: A dict of attributes, for names that are not identifiers
                (``{"gen_ai.usage.input_tokens": 12}``).
            **more: More attributes as keywords.

        Raises:
            ValidationError: A value is not JSON-compatible; ``.errors`` names
                ``attributes.<name>``. Nothing was set.
            TraceNotActive: The span has ended.
        """
        if self._state == _ENDED or self._trace._state != _ACTIVE:
            self._check_open("set attributes on")
        if attributes is not None:
            if type(attributes) is not dict and not isinstance(attributes, Mapping):
                raise _invalid("attributes", f"expected a dict, got {type(attributes).__name__}")
            more = {**attributes, **more}
        _checked_in_place("attributes", more)  # ``more`` is ours: **kwargs or the copy
        existing = self._record.get("attributes")
        if existing is None:
            self._record["attributes"] = more
        else:
            existing.update(more)

    def add_event(self, name: str, /, **attributes: Any) -> None:
        """Adds a timestamped event (e.g. ``"retry"``) with JSON-compatible attributes.

        Raises:
            ValidationError: A bad name or attribute; nothing was added.
            TraceNotActive: The span is not running.
        """
        if self._state != _ACTIVE:
            self._check_open("add an event to")
            raise TraceNotActive(f"cannot add an event to span {self.name!r}: it has not started")
        event: dict[str, Any] = {
            "name": _checked_name("name", name, _MAX_NAME),
            "timestamp": self._trace._now(),
        }
        if attributes:
            event["attributes"] = _checked_in_place("attributes", attributes)
        self._record.setdefault("events", []).append(event)

    def set_status(self, code: SpanStatusCode, message: str | None = None) -> None:
        """Sets the status: ``"OK"``, ``"ERROR"`` or ``"UNSET"``, with an optional message.

        Raises:
            ValidationError: An unknown code or a message that is not a string.
            TraceNotActive: The span has ended.
        """
        self._check_open("set the status of")
        if code not in _STATUS_CODES:
            raise _invalid("status_code", f"expected 'OK', 'ERROR' or 'UNSET', got {code!r}")
        if message is not None and not isinstance(message, str):
            raise _invalid("status_message", f"expected a string, got {type(message).__name__}")
        self._record["status_code"] = code
        if message is not None:
            self._record["status_message"] = message

    def __enter__(self) -> ActiveSpan:
        trace = self._trace
        if self._state != _NEW:
            raise TraceNotActive(f"span {self.name!r} was already entered: open a new one")
        if trace._state != _ACTIVE:
            trace._check_active("add a span to")
        current = _current_span.get()
        self._previous = current
        record = self._record
        if current is not None and current._trace is trace:
            self._parent = current
            record["parent_span_id"] = current._record["span_id"]
        self._state = _ACTIVE
        trace._spans.append(record)
        _current_span.set(self)
        record["start_time"] = _perf_counter() + trace._clock_offset
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != _ACTIVE:
            raise TraceNotActive(f"span {self.name!r} is not running: it cannot end")
        trace = self._trace
        record = self._record
        end = _perf_counter() + trace._clock_offset
        if exc is not None:
            record["status_code"] = "ERROR"
            record["status_message"] = f"{type(exc).__name__}: {exc}"
            error = _error_of(exc)
            record.setdefault("events", []).append(
                {
                    "name": "exception",
                    "timestamp": end,
                    "attributes": {
                        "exception.type": error["type"],
                        "exception.message": error["message"],
                    },
                }
            )
        record["end_time"] = end
        self._state = _ENDED
        _current_span.set(self._previous)
        if trace._state == _ENDED:
            self._log_late()

    def _log_late(self) -> None:
        """Logs this span after its trace ended (it outlived the block, e.g. in a thread),
        with its ancestors: a parent must be in the same fragment. Re-sent ancestors are
        merged by span id, so nothing is duplicated."""
        chain = []
        span: ActiveSpan | None = self
        while span is not None:
            chain.append(span._record)
            span = span._parent
        trace = self._trace
        trace._store.log(
            {"trace_id": trace._trace_id, "agent_name": trace._agent_name, "spans": chain}
        )

    def _check_open(self, doing: str) -> None:
        if self._state == _ENDED:
            raise TraceNotActive(f"cannot {doing} span {self.name!r}: it has ended")
        self._trace._check_active(doing)

    def __repr__(self) -> str:
        state = ("new", "running", "ended")[self._state]
        return f"<flightlog.ActiveSpan {self.span_id} {self.name!r} {state}>"


# --- the decorator -----------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def traced(
    agent_name: str | None = None,
    *,
    name: str | None = None,
    kind: SpanKind = "AGENT",
    store: Store | None = None,
    capture_io: bool = True,
) -> Callable[[F], F]:
    """Traces every call of the decorated function, sync or async, generator or not.

    A call made while a trace is current in its context becomes a span of that trace (named
    ``name``, default the function's qualified name, of kind ``kind``); any other call
    starts a new trace in ``store`` (default: :func:`default_store`) for ``agent_name``
    (default: the function's qualified name). An exception marks the span ``ERROR`` or the
    trace ``failed``, and propagates.

    A generator's trace or span starts at its first step and ends when it is exhausted or
    closed; each step runs in the generator's own context, so spans it opens never become
    the parent of its consumer's spans.

    Args:
        agent_name: The agent of the traces this function starts.
        name: The span name when the call is part of a current trace.
        kind: The span kind when the call is part of a current trace.
        store: The store for new traces; ``None`` means the default store at call time.
        capture_io: Record the arguments as ``input`` and the return value as ``output``
            (JSON, values JSON cannot hold as their ``repr``); on a span as the
            ``input.value`` / ``output.value`` attributes. Generators record no output.

    Raises:
        ValidationError: A bad ``agent_name``, ``name`` or ``kind`` (when decorating).
    """
    if agent_name is not None:
        _checked_name("agent_name", agent_name, 256)
    if name is not None:
        _checked_name("name", name, _MAX_NAME)
    if kind not in _SPAN_KINDS:
        raise _invalid("kind", f"expected one of {', '.join(sorted(_SPAN_KINDS))}, got {kind!r}")

    def decorate(fn: F) -> F:
        opener = _Opener(fn, agent_name, name, kind, store, capture_io)
        if inspect.isasyncgenfunction(fn):
            return cast(F, _wrap_async_generator(fn, opener))
        if inspect.isgeneratorfunction(fn):
            return cast(F, _wrap_generator(fn, opener))
        if inspect.iscoroutinefunction(fn):
            return cast(F, _wrap_coroutine(fn, opener))
        return cast(F, _wrap_function(fn, opener))

    return decorate


class _Opener:
    """Starts the trace or span of one call of a decorated function."""

    __slots__ = (
        "_agent_name",
        "_capture_io",
        "_fn",
        "_kind",
        "_name",
        "_positional",
        "_signature",
        "_store",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        agent_name: str | None,
        name: str | None,
        kind: str,
        store: Store | None,
        capture_io: bool,
    ) -> None:
        self._fn = fn
        self._agent_name = agent_name or fn.__qualname__[:256]
        self._name = name or fn.__qualname__[:_MAX_NAME]
        self._kind = kind
        self._store = store
        self._capture_io = capture_io
        self._signature: inspect.Signature | None = None
        # The parameter names when every parameter is plain positional-or-keyword: then the
        # arguments pair up with a zip, without the cost of Signature.bind.
        self._positional: tuple[str, ...] | None = None

    def open(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActiveTrace | ActiveSpan:
        """Enters and returns the span or trace of this call."""
        current = _current_trace.get()
        described = self._describe_arguments(args, kwargs) if self._capture_io else None
        scope: ActiveTrace | ActiveSpan
        if current is not None and current._state == _ACTIVE:
            attributes = {} if described is None else {"input.value": described}
            scope = current.span(self._name, self._kind, **attributes)  # type: ignore[arg-type]
        else:
            store = self._store if self._store is not None else default_store()
            fields = {} if described is None else {"input": described}
            scope = store.trace(self._agent_name, **fields)
        return scope.__enter__()

    def record_result(self, scope: ActiveTrace | ActiveSpan, result: Any) -> None:
        if not self._capture_io:
            return
        text = _describe(result)
        if isinstance(scope, ActiveTrace):
            if scope.output is None:
                scope.output = text
        else:
            scope.set({"output.value": text})

    def _describe_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self._signature is None:
            self._signature = inspect.signature(self._fn)
            parameters = self._signature.parameters.values()
            if all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters):
                self._positional = tuple(p.name for p in parameters)
        names = self._positional
        if names is not None and len(args) <= len(names):
            arguments = dict(zip(names, args, strict=False))  # shorter: defaults
            if kwargs:
                arguments.update(kwargs)
        else:
            try:
                arguments = dict(self._signature.bind(*args, **kwargs).arguments)
            except TypeError:
                return _describe({"args": args, "kwargs": kwargs})
        arguments.pop("self", None)
        arguments.pop("cls", None)
        return _describe(arguments)


def _describe(value: Any) -> str:
    """``value`` as text: itself when a string, else JSON with ``repr`` for what JSON lacks."""
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value, enc_hook=repr).decode()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return repr(value)


def _close(scope: ActiveTrace | ActiveSpan, exc: BaseException | None) -> None:
    if exc is None:
        scope.__exit__(None, None, None)
    else:
        scope.__exit__(type(exc), exc, exc.__traceback__)


def _wrap_function(fn: Callable[..., Any], opener: _Opener) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        scope = opener.open(args, kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _close(scope, exc)
            raise
        opener.record_result(scope, result)
        _close(scope, None)
        return result

    return call


def _wrap_coroutine(fn: Callable[..., Awaitable[Any]], opener: _Opener) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        scope = opener.open(args, kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _close(scope, exc)
            raise
        opener.record_result(scope, result)
        _close(scope, None)
        return result

    return call


def _wrap_generator(
    fn: Callable[..., Generator[Any, Any, Any]], opener: _Opener
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # The generator's own context: what it sets between yields stays there.
        context = contextvars.copy_context()
        scope = context.run(opener.open, args, kwargs)
        inner = fn(*args, **kwargs)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is None:
                    item = context.run(inner.send, sent)
                else:
                    item = context.run(inner.throw, thrown)
            except StopIteration as stop:
                context.run(_close, scope, None)
                return stop.value
            except BaseException as exc:
                context.run(_close, scope, exc)
                raise
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                # The consumer stopped early: a normal end, not a failure.
                try:
                    context.run(inner.close)
                finally:
                    context.run(_close, scope, None)
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return call


def _wrap_async_generator(
    fn: Callable[..., AsyncIterator[Any]], opener: _Opener
) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        context = contextvars.copy_context()
        scope = context.run(opener.open, args, kwargs)
        inner = cast(Any, fn(*args, **kwargs))
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                step = inner.asend(sent) if thrown is None else inner.athrow(thrown)
                item = await _InContext(context, step)
            except StopAsyncIteration:
                context.run(_close, scope, None)
                return
            except BaseException as exc:
                context.run(_close, scope, exc)
                raise
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                try:
                    await _InContext(context, inner.aclose())
                finally:
                    context.run(_close, scope, None)
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return call


class _InContext:
    """Awaits ``awaitable`` with each of its steps run in ``context`` (a task would copy the
    context, and a plain ``await`` runs in the awaiting task's context)."""

    __slots__ = ("_awaitable", "_context")

    def __init__(self, context: contextvars.Context, awaitable: Awaitable[Any]) -> None:
        self._context = context
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self._awaitable.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is None:
                    waiting = self._context.run(steps.send, sent)
                else:
                    waiting = self._context.run(steps.throw, thrown)
            except StopIteration as stop:
                return stop.value
            thrown = None
            try:
                sent = yield waiting
            except BaseException as exc:
                thrown, sent = exc, None


# --- the capture hook --------------------------------------------------------------------------


class CapturedUsage(msgspec.Struct, kw_only=True):
    """What the traces collected by a :class:`Capture` used, summed as stored."""

    traces: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float


class Capture:
    """Ties the traces logged through ``store`` in this context to ``run_id`` and collects
    their ids (see the module docstring). Use it as a context manager.

    Traces that name their own ``run_id`` keep it but are still collected. Other stores,
    other contexts and threads started without a copy of this context are not affected.
    """

    __slots__ = ("_lock", "_previous", "_trace_ids", "run_id", "store")

    def __init__(self, store: Store, *, run_id: str) -> None:
        if not isinstance(run_id, str) or not 1 <= len(run_id) <= 256:
            raise _invalid("run_id", "expected a string of 1..256 characters")
        self.store = store
        self.run_id = run_id
        self._trace_ids: dict[str, None] = {}
        self._lock = threading.Lock()
        self._previous: Capture | None = None

    @property
    def trace_ids(self) -> list[str]:
        """The ids of the traces logged through the store while captured, first seen first."""
        with self._lock:
            return list(self._trace_ids)

    def claim(self, record: object) -> object:
        """``record`` with this capture's ``run_id`` when it names none (a Trace or a dict;
        anything else is left for the core to refuse)."""
        if isinstance(record, Trace):
            if record.run_id is UNSET:
                return msgspec.structs.replace(record, run_id=self.run_id)
        elif isinstance(record, Mapping) and record.get("run_id") is None:
            return {**record, "run_id": self.run_id}
        return record

    def collect(self, trace_id: str) -> None:
        """Remembers a trace logged while captured."""
        with self._lock:
            self._trace_ids[trace_id] = None

    def usage(self) -> CapturedUsage:
        """Flushes the store and sums the tokens and cost of the collected traces as they
        are stored now (their merged view: a trace's ``token_usage`` / ``cost_usd`` when
        reported, else the sum over its LLM spans' ``gen_ai.usage.*`` attributes, as the
        store's summaries count them).

        Raises:
            StorageError: The store could not flush.
        """
        self.store.flush()
        prompt = completion = total = 0
        cost = 0.0
        found = 0
        for trace_id in self.trace_ids:
            summary = _summary(self.store, trace_id)
            if summary is None:
                continue
            found += 1
            p, c, t, usd = summary
            prompt, completion, total, cost = prompt + p, completion + c, total + t, cost + usd
        return CapturedUsage(
            traces=found,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cost_usd=cost,
        )

    def __enter__(self) -> Capture:
        self._previous = capturing.get()
        capturing.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        capturing.set(self._previous)


def _summary(store: Store, trace_id: str) -> tuple[int, int, int, float] | None:
    """(prompt, completion, total tokens, cost) of a stored trace, following the store's
    rule for summaries (docs/format.md): trace-level values when reported, else the sums
    over LLM spans' ``gen_ai.usage.*`` attributes."""
    from flightlog.errors import TraceNotFound

    try:
        found = store.get(trace_id)
    except TraceNotFound:
        return None  # deleted since
    llm = [s.attributes for s in found.spans if s.kind == "LLM"]
    usage = found.token_usage
    if usage is not UNSET:
        prompt = _int(usage.prompt_tokens)
        completion = _int(usage.completion_tokens)
        total = _int(usage.total_tokens)
    else:
        prompt = _sum(llm, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
        completion = _sum(llm, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
        total = _sum(llm, "gen_ai.usage.total_tokens") or prompt + completion
    if found.cost_usd is not UNSET:
        cost = float(found.cost_usd)
    else:
        cost = float(_sum(llm, "gen_ai.usage.cost", "gen_ai.usage.cost_usd"))
    return prompt, completion, total, cost


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _sum(attribute_maps: list[dict[str, Any]], *names: str) -> Any:
    total: Any = 0
    for attributes in attribute_maps:
        for key in names:
            value = attributes.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total += value
                break
    return total


# --- checking what callers pass ------------------------------------------------------------------


def _invalid(path: str, message: str) -> ValidationError:
    return ValidationError(f"{path}: {message}", [{"path": path, "message": message}])


def _checked_name(path: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise _invalid(path, f"expected a string, got {type(value).__name__}")
    if not 1 <= len(value) <= limit:
        raise _invalid(path, f"must be 1..{limit} characters, got {len(value)}")
    _check_text(path, value)
    return value


def _non_negative(path: str, value: object, kind: type = int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        expected = "a number" if kind is float else "an int"
        raise _invalid(path, f"expected {expected} >= 0, got {type(value).__name__}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise _invalid(path, f"must be a finite number, got {value}")
    if value < 0 or (kind is int and value > _INT_MAX):
        raise _invalid(path, f"must be >= 0, got {value}")
    return value


def _check_text(path: str, text: str) -> None:
    # Lone surrogates cannot be encoded as UTF-8; catch them here rather than when the
    # whole trace is encoded at its end.
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _invalid(path, "must be valid UTF-8 (it holds a lone surrogate)") from None


def _checked_in_place(path: str, attributes: dict[Any, Any]) -> dict[str, Any]:
    """``attributes`` (a dict the caller owns, e.g. ``**kwargs``) after checking each value,
    with values msgspec knows in another form (tuples, UUIDs, ...) replaced by their JSON
    form. Plain scalars, the usual case, cost one type comparison or two."""
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:
            if not value.isascii():
                _check_text(f"{path}.{key}", value)
        elif kind is int:
            if not _INT_MIN <= value <= _INT_MAX:
                raise _invalid(f"{path}.{key}", "must fit in 64 bits (-2**63 .. 2**64-1)")
        elif kind is float:
            if value - value != 0.0:  # inf - inf and nan - nan are nan
                raise _invalid(f"{path}.{key}", f"must be a finite number, got {value}")
        elif kind is not bool and value is not None:
            if type(key) is not str:
                raise _invalid(path, f"map keys must be strings, got {type(key).__name__}")
            # Replacing the value of an existing key does not disturb the iteration.
            attributes[key] = _json_value(f"{path}.{key}", value, 1)
        if type(key) is not str:
            raise _invalid(path, f"map keys must be strings, got {type(key).__name__}")
    return attributes


def _json_value(path: str, value: Any, depth: int) -> Any:
    """``value`` in the JSON form the store keeps (tuples and sets as lists, UUIDs, dates and
    decimals as strings, dataclasses as dicts), or a ValidationError naming ``path``."""
    if depth > _MAX_VALUE_DEPTH:
        raise _invalid(path, f"nested more than {_MAX_VALUE_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_text(path, value)
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _invalid(path, "must fit in 64 bits (-2**63 .. 2**64-1)")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(path, f"must be a finite number, got {value}")
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise _invalid(path, f"expected a JSON-compatible value, got {type(value).__name__}")
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(path, f"map keys must be strings, got {type(key).__name__}")
            out[key] = _json_value(f"{path}.{key}", item, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = value if isinstance(value, (list, tuple)) else list(value)
        return [_json_value(f"{path}[{i}]", item, depth + 1) for i, item in enumerate(items)]
    try:
        converted = msgspec.to_builtins(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _invalid(
            path, f"expected a JSON-compatible value, got {type(value).__name__}"
        ) from exc
    if isinstance(converted, (bytes, bytearray)):
        raise _invalid(path, f"expected a JSON-compatible value, got {type(value).__name__}")
    return _json_value(path, converted, depth)

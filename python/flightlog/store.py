"""The public Store: encode records with msgspec, hand the bytes to the Rust core, decode.

The core validates on the caller's thread (with the GIL released), then queues the canonical
record to a writer thread that appends it to LMDB in group commits. See ``docs/`` for the
durability modes and the on-disk format.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

import msgspec

from flightlog import _core, instrument
from flightlog.decision import Decision
from flightlog.encoding import encode, type_error
from flightlog.errors import DecisionClosed, StorageError, ValidationError
from flightlog.merge import merge_fragments
from flightlog.records import (
    AutomationMode,
    CheckReport,
    DecisionStatus,
    DecisionTrace,
    LazyDecoder,
    Page,
    Stats,
    Trace,
    TraceStatus,
    TraceSummary,
    check_report_decoder,
    decision_page_decoder,
    decision_trace_decoder,
    page_decoder,
    stats_decoder,
    trace_decoder,
)

if TYPE_CHECKING:
    from pathlib import Path

    from typing_extensions import Unpack

__all__ = ["Durability", "Filters", "GroupBy", "OrderBy", "Redaction", "Store", "open"]

Durability = Literal["group", "sync", "none"]
Redaction = Literal["redact", "reject", "off"]
OrderBy = Literal["timestamp", "latency_ms", "cost_usd"]
GroupBy = Literal["agent_name", "framework", "status", "run_id", "request_id", "session_id"]
Instant = dt.datetime | str | float
_T = TypeVar("_T")


class Filters(TypedDict, total=False):
    """The filters of :meth:`Store.query`, :meth:`Store.count`, :meth:`Store.stats` and
    :meth:`Store.delete_where`. All given filters must hold; a list means any of its values;
    ``None`` means the filter is not applied.

    ``since`` (inclusive) and ``until`` (exclusive) take a ``datetime`` (naive means UTC),
    an ISO-8601 string or Unix epoch seconds. The cost and latency bounds are inclusive and
    never match a trace that did not report the value.
    """

    agent_name: str | Sequence[str] | None
    framework: str | Sequence[str] | None
    run_id: str | Sequence[str] | None
    request_id: str | Sequence[str] | None
    session_id: str | Sequence[str] | None
    status: TraceStatus | Sequence[TraceStatus] | None
    has_errors: bool | None
    since: Instant | None
    until: Instant | None
    min_cost_usd: float | None
    max_cost_usd: float | None
    min_latency_ms: float | None
    max_latency_ms: float | None
    tag: str | Sequence[str] | None


DEFAULT_PATH = ".flightlog"

_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


class Store:
    """An open flightlog store. Create it with :func:`flightlog.open`.

    Safe to share between threads. Usable as a context manager: leaving the block flushes
    and closes it.
    """

    __slots__ = ("__weakref__", "_core", "_durability", "_path", "_readonly")

    def __init__(self, core: _core.Store, path: str, durability: Durability, readonly: bool):
        self._core = core
        self._path = path
        self._durability = durability
        self._readonly = readonly
        _open_stores.add(self)

    def log(self, trace: Trace | Mapping[str, Any] | None = None, /, **fields: Any) -> str:
        """Validates a trace and queues it for writing.

        Args:
            trace: A :class:`Trace` or a dict of its fields. Omit it to pass fields as keywords.
            **fields: Trace fields, when ``trace`` is omitted.

        Returns:
            The trace id (32 lowercase hex), minted unless the trace names one. Logging again
            with the same id adds a fragment to that trace (see :meth:`get`).

        Raises:
            ValidationError: The trace was refused; ``.errors`` lists ``{path, message}``.
                Nothing of it was stored.
            SecretDetected: The store was opened with ``redaction="reject"`` and the trace
                holds a secret; ``.errors`` lists ``{path, message, kind}``. Nothing of it
                was stored.
            StorageError: The store is read-only or the last write failed.
            StoreClosed: The store was closed.
        """
        if trace is None:
            record: object = fields
        elif fields:
            raise TypeError("log() takes a trace or keyword fields, not both")
        else:
            record = trace
        capture = instrument.capturing.get()
        if capture is None or capture.store is not self:
            return self._core.log(encode(record))
        trace_id = self._core.log(encode(capture.claim(record)))
        capture.collect(trace_id)
        return trace_id

    def log_many(self, traces: Iterable[Trace | Mapping[str, Any]]) -> list[str]:
        """Validates several traces in one pass and queues them in one hand-off.

        All or nothing: if any trace is refused, none is stored and the error paths start
        with the trace's position, e.g. ``[3].spans[0].name``.

        Returns:
            The trace ids, in order.

        Raises:
            ValidationError: Some trace was refused; nothing was stored.
            SecretDetected: ``redaction="reject"`` found a secret in some trace; nothing
                was stored.
        """
        records = list(traces)
        capture = instrument.capturing.get()
        if capture is None or capture.store is not self:
            return self._core.log_many(encode(records))
        trace_ids = self._core.log_many(encode([capture.claim(r) for r in records]))
        for trace_id in trace_ids:
            capture.collect(trace_id)
        return trace_ids

    def trace(self, agent_name: str, **fields: Any) -> instrument.ActiveTrace:
        """Starts recording a trace; use it in a ``with`` block.

        Entering the block logs a ``running`` fragment (so a process that dies inside it
        leaves evidence, durable as this store's durability makes it); leaving it logs the
        final fragment under the same trace id: ``output`` (set ``t.output``), latency,
        ``ended_at``, every span, tool call and usage, and status ``succeeded``, or
        ``failed`` with ``metadata["error"] = {"type", "message"}`` when an exception left
        the block (it propagates). See :class:`flightlog.ActiveTrace`.

        Args:
            agent_name: The agent (1..256 characters).
            **fields: Other trace fields for the ``running`` fragment: ``input``,
                ``framework``, ``run_id``, ``request_id``, ``session_id``, ``metadata``,
                ``tags``, ``trace_id`` (to update a trace you name; minted otherwise), ...
                ``status``, ``latency_ms``, ``ended_at``, ``token_usage`` and ``cost_usd``
                are set by the trace itself (use ``t.usage(...)`` for usage).

        Returns:
            An :class:`flightlog.ActiveTrace`, not yet started.

        Raises:
            ValidationError: A field set by the trace itself was given, or (on entering the
                block) the core refused a field; nothing was stored.
        """
        return instrument.ActiveTrace(self, agent_name, fields)

    def flush(self, timeout: float | None = None) -> None:
        """Waits until everything logged so far is durable.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            TimeoutError: The timeout passed first (the data stays queued).
            StorageError: A queued write failed since the last flush (e.g. ``StorageFull``).
        """
        self._core.flush(timeout)

    def get(self, trace_id: str) -> Trace:
        """Reads a trace, merging its fragments when it was logged more than once.

        Reads see what the writer has committed: in ``group`` mode a trace logged a moment
        ago may not be visible yet; call :meth:`flush` first to be sure.

        Raises:
            ValidationError: ``trace_id`` is not 32 lowercase hex characters.
            TraceNotFound: No such trace is stored.
            StorageError: The trace's stored bytes are damaged.
        """
        fragments = self._core.fragments(_checked_trace_id(trace_id))
        try:
            if len(fragments) == 1:
                return trace_decoder.decode(fragments[0])
            return merge_fragments([trace_decoder.decode(f) for f in fragments])
        except (msgspec.DecodeError, UnicodeDecodeError) as err:
            # The core stores only records it validated: bytes that do not decode now were
            # damaged on disk (LMDB keeps no checksums).
            raise StorageError(
                f"trace {trace_id} is corrupt: a stored fragment does not decode ({err}); "
                "`flightlog check` lists the damage"
            ) from err

    def query(
        self,
        *,
        order_by: OrderBy = "timestamp",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
        **filters: Unpack[Filters],
    ) -> Page[TraceSummary]:
        """Lists the traces matching the filters, one page at a time.

        Each item is the merged view of a trace's fragments: a trace logged ``running`` and
        then ``failed`` is found by ``status="failed"``, not by ``status="running"``. Reads
        see committed data: call :meth:`flush` first to include what was just logged.

        Args:
            order_by: ``"timestamp"``, ``"latency_ms"`` or ``"cost_usd"``. Traces that did
                not report the value come after those that did, in either direction.
            descending: Largest (newest) first; ``False`` for smallest first.
            limit: Most items on the page, 1 to 1000.
            cursor: The ``next_cursor`` of the previous page, with the same filters, order
                and direction. Pages stay consistent while other traces are being logged:
                every trace that matched when paging began is listed exactly once.
            **filters: See :class:`Filters`, e.g. ``agent_name="support-bot"``,
                ``status=["failed", "running"]``, ``since=datetime(2025, 6, 1)``.

        Returns:
            A :class:`Page` of :class:`TraceSummary`; ``next_cursor`` is ``None`` on the last
            page.

        Raises:
            ValidationError: An unknown filter, a filter value of the wrong type, a bad
                ``order_by``, ``limit`` or ``cursor``; ``.errors`` names each.
            StorageError: A stored summary is damaged.
            StoreClosed: The store was closed.
        """
        page = self._core.query(encode(filters), order_by, descending, limit, cursor)
        return _decode_stored(page_decoder, page, "the summaries of this page")

    def count(self, **filters: Unpack[Filters]) -> int:
        """Counts the traces matching the filters (see :class:`Filters`).

        Raises:
            ValidationError: An unknown filter or a filter value of the wrong type.
            StoreClosed: The store was closed.
        """
        return self._core.count(encode(filters))

    def stats(self, *, group_by: GroupBy | None = None, **filters: Unpack[Filters]) -> Stats:
        """Aggregates the traces matching the filters: counts, error rate, tokens, cost,
        latency percentiles, traces per hour and the busiest agents.

        Args:
            group_by: Also aggregate per value of this field (``"agent_name"``,
                ``"framework"``, ``"status"``, ``"run_id"``, ``"request_id"`` or
                ``"session_id"``) into ``Stats.groups``.
            **filters: See :class:`Filters`.

        Returns:
            The :class:`Stats` of the matching traces.

        Raises:
            ValidationError: An unknown filter, a filter value of the wrong type or a bad
                ``group_by``.
            StoreClosed: The store was closed.
        """
        return stats_decoder.decode(self._core.stats(encode(filters), group_by))

    def delete(self, trace_id: str) -> bool:
        """Deletes a trace: all its fragments, its summary and its index entries.

        Returns once the deletion is committed. :meth:`get` then raises ``TraceNotFound``.
        The freed pages are reused by later writes, but the deleted bytes stay in the file
        until they are overwritten: :meth:`compact` writes a copy without them.

        Returns:
            ``True`` if the trace existed, ``False`` if there was nothing to delete.

        Raises:
            ValidationError: ``trace_id`` is not 32 lowercase hex characters.
            StorageError: The store is read-only or the write failed.
            StoreClosed: The store was closed.
        """
        return self._core.delete(_checked_trace_id(trace_id))

    def delete_where(self, **filters: Unpack[Filters]) -> int:
        """Deletes every trace matching the filters, like :meth:`delete`.

        Args:
            **filters: See :class:`Filters`. At least one is required: deleting everything
                by accident is refused.

        Returns:
            How many traces were deleted.

        Raises:
            ValidationError: No filter was given, an unknown filter or a filter value of the
                wrong type. Nothing was deleted.
            StorageError: The store is read-only or the write failed.
            StoreClosed: The store was closed.
        """
        return self._core.delete_where(encode(filters))

    def check(self) -> CheckReport:
        """Verifies the store: every record decodes, every trace has its summary and index
        entries, and every index entry points at a live trace.

        Returns:
            A :class:`CheckReport`; ``ok`` is false when it lists problems.

        Raises:
            StorageError: The store could not be read at all.
            StoreClosed: The store was closed.
        """
        return check_report_decoder.decode(self._core.check())

    def open_decision(
        self,
        agent: str,
        intent: str,
        automation_mode: AutomationMode,
        metadata: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
        run_id: str | None = None,
    ) -> Decision:
        """Opens a decision and records its ``open`` event durably.

        Use the returned handle as a context manager (``with store.open_decision(...) as
        d:``) so that it commits on success and aborts on an exception.

        Args:
            agent: The agent deciding; only this agent may read or extend the decision.
            intent: What the decision is for, e.g. ``"customer.order.create"``.
            automation_mode: ``"propose"``, ``"approve"``, ``"override"`` or
                ``"autonomous"``; fixed for the decision's lifetime.
            metadata: JSON-compatible facts about the decision. Its secrets and those of
                ``intent`` are redacted (or refused) like a trace's.
            trace_id: The trace this decision belongs to (32 lowercase hex).
            run_id: The run this decision belongs to.

        Returns:
            A :class:`Decision` handle.

        Raises:
            ValidationError: A field is missing or malformed; ``.errors`` names it.
            SecretDetected: ``redaction="reject"`` and ``intent`` or ``metadata`` holds a
                secret; nothing was recorded.
            StorageError: The store is read-only or the write failed.
        """
        _check_strings(agent=agent, intent=intent, automation_mode=automation_mode)
        _check_strings(trace_id=trace_id, run_id=run_id, optional=True)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise type_error("metadata", "a dict", metadata)
        decision_id = self._core.open_decision(
            agent,
            intent,
            automation_mode,
            metadata=None if metadata is None else encode(metadata, "metadata"),
            trace_id=trace_id,
            run_id=run_id,
        )
        return Decision(self._core, decision_id, agent)

    def decision(self, decision_id: str, *, agent: str) -> Decision:
        """Re-attaches to an open decision, e.g. one opened by another process.

        Raises:
            ValidationError: ``decision_id`` is empty or malformed.
            DecisionNotFound: No such decision is stored.
            AccessDenied: ``agent`` did not open it.
            DecisionClosed: It is committed or aborted.
        """
        found = self._decision(decision_id, agent, events=False)
        if found.status in ("committed", "aborted"):
            raise DecisionClosed(f"decision {decision_id} is {found.status}: it cannot change")
        return Decision(self._core, decision_id, agent)

    def decision_trace(self, decision_id: str, *, agent: str) -> DecisionTrace:
        """Reads a decision: its envelope and every event, in the order recorded.

        Raises:
            ValidationError: ``decision_id`` is empty or malformed.
            DecisionNotFound: No such decision is stored.
            AccessDenied: ``agent`` did not open it (nothing of it is revealed).
        """
        return self._decision(decision_id, agent, events=True)

    def verify_decision(self, decision_id: str, *, agent: str) -> bool:
        """Recomputes the decision's hash chain from the stored bytes.

        Returns:
            ``True`` when every event's hash matches its bytes and its predecessor, the
            ``open`` event matches the envelope, and the envelope ends the chain.

        Raises:
            ValidationError: ``decision_id`` is empty or malformed.
            DecisionNotFound: No such decision is stored.
            AccessDenied: ``agent`` did not open it.
        """
        _check_strings(decision_id=decision_id, agent=agent)
        return self._core.verify_decision(decision_id, agent)

    def decisions(
        self,
        *,
        agent: str,
        status: DecisionStatus | None = None,
        intent: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[DecisionTrace]:
        """Lists one agent's decisions, newest first, without their events.

        Args:
            agent: Whose decisions; no agent sees another's.
            status: Only decisions with this status.
            intent: Only decisions with this intent.
            since: Only decisions opened at or after this instant (``datetime``, naive
                meaning UTC; ISO-8601 string; or Unix epoch seconds).
            until: Only decisions opened before this instant.
            limit: Most items on the page, 1 to 1000.
            cursor: The ``next_cursor`` of the previous page, with the same filters.

        Raises:
            ValidationError: A filter, ``limit`` or ``cursor`` is malformed.
            StorageError: A stored decision is damaged.
        """
        _check_strings(agent=agent)
        _check_strings(status=status, intent=intent, cursor=cursor, optional=True)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise type_error("limit", "an int", limit)
        raw = self._core.decisions(
            agent,
            status,
            intent,
            None if since is None else encode(since, "since"),
            None if until is None else encode(until, "until"),
            limit,
            cursor,
        )
        return _decode_stored(decision_page_decoder, raw, "the decisions of this page")

    def purge_decisions(self, *, before: Instant) -> int:
        """Removes committed and aborted decisions closed before ``before``. Open decisions
        are never removed; neither :meth:`delete`, :meth:`delete_where` nor retention
        removes any decision.

        Returns:
            How many decisions were removed.

        Raises:
            ValidationError: ``before`` is not a ``datetime``, ISO-8601 string or epoch
                seconds.
        """
        return self._core.purge_decisions(encode(before, "before"))

    def _decision(self, decision_id: str, agent: str, *, events: bool) -> DecisionTrace:
        _check_strings(decision_id=decision_id, agent=agent)
        raw = self._core.decision_trace(decision_id, agent, events=events)
        try:
            return decision_trace_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            # Only bytes changed behind the store's back get here; verify_decision says so.
            raise StorageError(f"decision {decision_id} does not decode: {exc}") from None

    def compact(self, dest: str | os.PathLike[str]) -> Path:
        """Writes a compacted copy of the store (free pages and deleted bytes left out).

        Args:
            dest: The directory to write the copy into; open it with :func:`flightlog.open`.

        Returns:
            ``dest`` as a ``Path``.

        Raises:
            StorageError: The copy could not be written.
            StoreClosed: The store was closed.
        """
        self._core.compact(os.fspath(dest))
        from pathlib import Path  # here, not at import: pathlib is ~10% of `import flightlog`

        return Path(dest)

    def close(self) -> None:
        """Flushes and closes this handle. Further calls raise ``StoreClosed``. Idempotent."""
        _open_stores.discard(self)
        self._core.close()

    @property
    def path(self) -> Path:
        """The store directory."""
        from pathlib import Path  # here, not at import: pathlib is ~10% of `import flightlog`

        return Path(self._path)

    @property
    def durability(self) -> Durability:
        """``"group"``, ``"sync"`` or ``"none"``; see :func:`flightlog.open`."""
        return self._durability

    @property
    def readonly(self) -> bool:
        """Whether this handle refuses writes."""
        return self._readonly

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core.closed

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._durability
        return f"<flightlog.Store {str(self._path)!r} {state}>"


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: Durability = "group",
    readonly: bool = False,
    map_size: int = 1 << 30,
    max_trace_bytes: int = 16 << 20,
    max_depth: int = 64,
    max_spans: int = 100_000,
    retention: dt.timedelta | None = None,
    max_bytes: int | None = None,
    redaction: Redaction = "redact",
    redaction_keys: Sequence[str] | None = None,
    redaction_patterns: Mapping[str, str] | None = None,
) -> Store:
    """Opens (creating it if needed) the store directory at ``path``.

    Opening the same directory twice in one process shares one LMDB environment; a forked
    child reopens it by itself; several processes may log into one store at once.

    Args:
        path: The store directory; defaults to ``$FLIGHTLOG_PATH``, else ``./.flightlog``.
            Created owner-only (0700), its files 0600.
        durability: ``"group"`` (default): ``log()`` returns after validation and the writer
            commits and fsyncs in shared batches within milliseconds; ``flush()`` waits for
            them, and stores flush at close and at interpreter exit. ``"sync"``: ``log()``
            returns once its batch is durable (concurrent callers share a commit).
            ``"none"``: no fsync; survives a process crash but not an OS crash.
        readonly: Open for reading only; the store must exist.
        map_size: Initial LMDB map size in bytes (address space only; it grows when full).
        max_trace_bytes: Largest encoded trace accepted.
        max_depth: Deepest nesting of lists and maps accepted in a trace.
        max_spans: Most spans accepted in one trace.
        retention: Keep traces for this long: while the store is open, the writer deletes
            traces whose timestamp is older, oldest first (at least once a second and after
            commits). ``None`` keeps them forever.
        max_bytes: Keep the stored traces under this many bytes by deleting the oldest
            first, continuously like ``retention``. ``None`` sets no limit.
        redaction: What ``log()`` does with secrets, which it looks for in every free-text
            string of a trace (input, output, tool calls, span and event names, status
            messages, attributes, metadata, at any depth; not in ids, names like
            ``agent_name``, or tags). ``"redact"`` (default): a value under a
            secret-looking key (``password``, ``api_key``, ``x-api-key``, ``clientSecret``,
            ``token``, ``authorization``, ``cookie``, ...) becomes ``"[REDACTED]"``,
            whatever its type; a substring in a known secret format (OpenAI, Anthropic,
            AWS, GitHub, GitLab, Slack, Stripe, Google, Hugging Face and npm keys, JWTs,
            PEM private keys, bearer tokens, passwords in URLs, ``password=...``)
            becomes ``"[REDACTED:<kind>]"``; the trace's ``redactions`` counts the values
            changed. ``"reject"``: ``log()`` raises :class:`SecretDetected` instead and
            stores nothing. ``"off"``: strings are stored as given.
        redaction_keys: More key names whose values are secrets, matched like the
            built-in ones: in any case, as the last words of a key (``"ssn"`` also
            matches ``"user_ssn"`` and ``"userSSN"``).
        redaction_patterns: More secret formats, as ``{kind: regex}`` (Rust ``regex``
            syntax): each match becomes ``"[REDACTED:<kind>]"``, or only the part matched
            by a group named ``secret``. They run on every string, so each costs a regex
            pass over all the text logged.

    Raises:
        ValidationError: An option has a bad value (e.g. a regex that does not compile);
            ``.errors`` names the option.
        StorageError: The directory cannot be created or opened.
    """
    if durability not in ("group", "sync", "none"):
        raise ValidationError(
            f"durability: expected 'group', 'sync' or 'none', got {durability!r}",
            [{"path": "durability", "message": "expected 'group', 'sync' or 'none'"}],
        )
    retention_s = _retention_seconds(retention)
    _check_max_bytes(max_bytes)
    keys, patterns = _redaction_options(redaction, redaction_keys, redaction_patterns)
    if path is None:
        path = os.environ.get("FLIGHTLOG_PATH") or DEFAULT_PATH
    location = os.fspath(path)
    core = _core.Store(
        location,
        durability=durability,
        readonly=readonly,
        map_size=map_size,
        max_trace_bytes=max_trace_bytes,
        max_depth=max_depth,
        max_spans=max_spans,
        retention_s=retention_s,
        max_bytes=max_bytes,
        redaction=redaction,
        redaction_keys=keys,
        redaction_patterns=patterns,
    )
    return Store(core, location, durability, readonly)


def _retention_seconds(retention: object) -> float | None:
    """``retention`` in seconds, after checking it is a positive ``timedelta`` or ``None``."""
    if retention is None:
        return None
    if not isinstance(retention, dt.timedelta) or retention <= dt.timedelta(0):
        raise ValidationError(
            f"retention: expected a positive timedelta or None, got {retention!r}",
            [{"path": "retention", "message": "expected a positive timedelta or None"}],
        )
    return retention.total_seconds()


_MAX_BYTES_LIMIT = 2**64 - 1  # the core counts bytes in a u64


def _check_max_bytes(max_bytes: object) -> None:
    """Refuses a ``max_bytes`` that is not a positive int (below 2**64) or ``None``."""
    if max_bytes is None:
        return
    if (
        not isinstance(max_bytes, int)
        or isinstance(max_bytes, bool)
        or not 0 < max_bytes <= _MAX_BYTES_LIMIT
    ):
        raise ValidationError(
            f"max_bytes: expected a positive int below 2**64 or None, got {max_bytes!r}",
            [{"path": "max_bytes", "message": "expected a positive int below 2**64 or None"}],
        )


def _redaction_options(
    redaction: object, keys: object, patterns: object
) -> tuple[list[str], list[tuple[str, str]]]:
    """The redaction options in the core's shapes, once their types are checked (the core
    checks their values: key names, kinds, regexes)."""
    if redaction not in ("redact", "reject", "off"):
        raise ValidationError(
            f"redaction: expected 'redact', 'reject' or 'off', got {redaction!r}",
            [{"path": "redaction", "message": "expected 'redact', 'reject' or 'off'"}],
        )
    if keys is None:
        keys = []
    # A lone string would be a sequence of one-letter names: surely a mistake.
    if (
        isinstance(keys, str)
        or not isinstance(keys, Sequence)
        or not all(isinstance(key, str) for key in keys)
    ):
        raise ValidationError(
            f"redaction_keys: expected a list of strings or None, got {keys!r}",
            [{"path": "redaction_keys", "message": "expected a list of strings or None"}],
        )
    if patterns is None:
        patterns = {}
    if not isinstance(patterns, Mapping) or not all(
        isinstance(kind, str) and isinstance(regex, str) for kind, regex in patterns.items()
    ):
        message = "expected a dict of kind to regex (strings) or None"
        raise ValidationError(
            f"redaction_patterns: {message}, got {patterns!r}",
            [{"path": "redaction_patterns", "message": message}],
        )
    return list(keys), list(patterns.items())


def _decode_stored(decoder: LazyDecoder[_T], raw: bytes, what: str) -> _T:
    """Decodes what the core read from the store. The core builds it from validated
    records, so only damaged stored bytes (e.g. a timestamp beyond ``datetime``'s range)
    fail here: a ``StorageError``, as for any other damage."""
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as err:
        raise StorageError(
            f"{what} do not decode ({err}): the store is damaged; `flightlog check` "
            "lists what it can find"
        ) from None


def _checked_trace_id(trace_id: object) -> str:
    """Refuses a trace id that is not a string (the core checks its characters)."""
    if not isinstance(trace_id, str):
        raise ValidationError(
            f"trace_id: expected a string of 32 lowercase hex characters, got "
            f"{type(trace_id).__name__}",
            [{"path": "trace_id", "message": "expected a string"}],
        )
    return trace_id


def _check_strings(*, optional: bool = False, **values: object) -> None:
    """Refuses arguments that are not strings (``None`` too, unless ``optional``)."""
    for name, value in values.items():
        if not isinstance(value, str) and not (optional and value is None):
            raise type_error(name, "a string", value)


@atexit.register
def _flush_at_exit() -> None:
    # Group durability promises that what was logged reaches disk when the process exits
    # normally, even without close().
    for store in list(_open_stores):
        with contextlib.suppress(Exception):  # nothing can be raised to anyone at exit
            store.flush()

"""The decision handle: records the events of one open decision (SPEC §6).

Every event is validated on the caller's thread, then the Rust core's writer checks it
against the decision's status and appends it to the hash chain in one synced transaction:
when a method returns, its event is durable.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, Literal

from flightlog import _core
from flightlog.encoding import encode, type_error
from flightlog.errors import DecisionClosed, InvalidTransition
from flightlog.records import (
    DecisionEvent,
    DecisionStatus,
    decision_event_decoder,
    decision_trace_decoder,
)

__all__ = ["Decision"]


class Decision:
    """An open decision of one agent; get one from :meth:`Store.open_decision` or
    :meth:`Store.decision`.

    Usable as a context manager: leaving the block commits the decision, or aborts it
    (with the exception's type name as the reason) when the block raised, so no decision is
    left open by accident. A handle is safe to share between threads; events from several
    threads (or processes) are chained in the order the store records them.
    """

    __slots__ = ("_agent", "_core", "_decision_id")

    def __init__(self, core: _core.Store, decision_id: str, agent: str) -> None:
        self._core = core
        self._decision_id = decision_id
        self._agent = agent

    @property
    def decision_id(self) -> str:
        """``dec_`` followed by 26 time-ordered Crockford base32 characters."""
        return self._decision_id

    @property
    def agent(self) -> str:
        """The agent that opened the decision (the only one that may access it)."""
        return self._agent

    @property
    def status(self) -> DecisionStatus:
        """The decision's status as stored now: ``open``, ``needs_approval``, ``approved``,
        ``rejected``, ``committed`` or ``aborted``."""
        raw = self._core.decision_trace(self._decision_id, self._agent, events=False)
        return decision_trace_decoder.decode(raw).status

    def read(self, *, product: str, purpose: str, data_ref: str | None = None) -> DecisionEvent:
        """Records that the agent read ``product`` for ``purpose``.

        Args:
            product: What was read, e.g. ``"pg_customers_v1"``.
            purpose: Why, e.g. ``"order_validation"``.
            data_ref: A reference to the data read (not the data itself).

        Returns:
            The recorded event.

        Raises:
            ValidationError: A field is missing or malformed; nothing was recorded.
            SecretDetected: ``redaction="reject"`` and a field holds a secret.
            InvalidTransition: The decision's status does not allow it (after a rejection).
            DecisionClosed: The decision is committed or aborted.
        """
        return self._record("read", product=product, purpose=purpose, data_ref=data_ref)

    def write(
        self,
        *,
        product: str,
        purpose: str,
        mutation_summary: Any = None,
        idempotency_key: str | None = None,
    ) -> DecisionEvent:
        """Records a write to ``product``.

        Args:
            product: What was written, e.g. ``"pg_orders_v1"``.
            purpose: Why, e.g. ``"order_creation"``.
            mutation_summary: A JSON-compatible summary of the change; its secrets are
                redacted (or refused) like a trace's, before the event is hashed.
            idempotency_key: Recording a write with a key this decision has seen before
                records nothing and returns the earlier event.

        Returns:
            The recorded event (or the earlier one with the same ``idempotency_key``).

        Raises:
            ValidationError: A field is missing or malformed; nothing was recorded.
            InvalidTransition: The decision needs approval, or its approval was rejected.
            DecisionClosed: The decision is committed or aborted.
        """
        return self._record(
            "write",
            product=product,
            purpose=purpose,
            mutation_summary=_encoded("mutation_summary", mutation_summary),
            idempotency_key=idempotency_key,
        )

    def evaluate(
        self,
        *,
        policy_id: str,
        outcome: Literal["allow", "deny", "requires_exception"],
        rationale: str | None = None,
    ) -> DecisionEvent:
        """Records the outcome of evaluating a policy.

        Raises:
            ValidationError: ``outcome`` is not ``allow``, ``deny`` or
                ``requires_exception``, or another field is malformed.
            InvalidTransition: The decision's approval was rejected.
            DecisionClosed: The decision is committed or aborted.
        """
        return self._record("evaluate", policy_id=policy_id, outcome=outcome, rationale=rationale)

    def request_approval(
        self, *, by: str | None = None, reason: str | None = None
    ) -> DecisionEvent:
        """Moves the decision to ``needs_approval``: writes (and commit) are refused until
        :meth:`resolve_approval` approves.

        Args:
            by: Who is asked to approve.
            reason: Why approval is needed.

        Raises:
            InvalidTransition: Approval is already pending, or was rejected.
            DecisionClosed: The decision is committed or aborted.
        """
        return self._record("approval_requested", by=by, reason=reason)

    def resolve_approval(
        self, *, approved: bool, by: str | None = None, reason: str | None = None
    ) -> DecisionEvent:
        """Resolves the pending approval: ``approved`` re-opens the decision for writes;
        a rejection leaves only ``close(action="abort")``.

        Raises:
            InvalidTransition: No approval is pending.
            DecisionClosed: The decision is committed or aborted.
        """
        if not isinstance(approved, bool):
            raise type_error("approved", "a bool", approved)
        return self._record("approval_resolved", approved=approved, by=by, reason=reason)

    def add_context(self, context: Any = None, *, summary: str | None = None) -> DecisionEvent:
        """Records context the decision relied on: a JSON-compatible value, a summary, or both.

        Raises:
            ValidationError: Neither was given, or one is malformed.
            InvalidTransition: The decision's approval was rejected.
            DecisionClosed: The decision is committed or aborted.
        """
        return self._record("context", context=_encoded("context", context), summary=summary)

    def close(
        self, action: Literal["commit", "abort"] = "commit", reason: str | None = None
    ) -> DecisionEvent:
        """Commits or aborts the decision; it is immutable afterwards.

        Raises:
            ValidationError: ``action`` is not ``"commit"`` or ``"abort"``.
            InvalidTransition: Committing while approval is pending or after a rejection.
            DecisionClosed: The decision was closed already.
        """
        return self._record("close", action=action, reason=reason)

    def _record(self, kind: str, **fields: Any) -> DecisionEvent:
        for name, value in fields.items():
            if name not in _ENCODED and value is not None and not isinstance(value, str):
                raise type_error(name, "a string", value)
        given = {name: value for name, value in fields.items() if value is not None}
        raw = self._core.decision_event(self._decision_id, self._agent, kind, **given)
        return decision_event_decoder.decode(raw)

    def __enter__(self) -> Decision:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            # Closed inside the block already: nothing to abort.
            with contextlib.suppress(DecisionClosed):
                self.close("abort", reason=exc_type.__name__)
            return
        try:
            self.close("commit")
        except DecisionClosed:
            pass
        except InvalidTransition:
            # Approval pending or rejected: the decision cannot commit, so it must not
            # stay open either.
            self.close("abort", reason="InvalidTransition")
            raise

    def __repr__(self) -> str:
        return f"<flightlog.Decision {self._decision_id} agent={self._agent!r}>"


# Fields passed to the core as msgpack (or, for ``approved``, checked where it is given).
_ENCODED = frozenset({"mutation_summary", "context", "approved"})


def _encoded(name: str, value: Any) -> bytes | None:
    """``value`` as msgpack, or ``None`` when absent."""
    return None if value is None else encode(value, root=name)

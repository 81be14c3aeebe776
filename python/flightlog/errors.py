"""The exception hierarchy. The Rust core raises these classes directly."""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "DecisionClosed",
    "DecisionNotFound",
    "FlightlogError",
    "InvalidTransition",
    "NoDefaultStore",
    "SecretDetected",
    "StorageError",
    "StorageFull",
    "StoreClosed",
    "TraceNotActive",
    "TraceNotFound",
    "ValidationError",
]


class FlightlogError(Exception):
    """Base class of every error flightlog raises on purpose."""


class ValidationError(FlightlogError, ValueError):
    """A record or argument was refused; nothing of it was stored.

    Attributes:
        errors: One ``{"path": ..., "message": ...}`` dict per problem, e.g.
            ``{"path": "spans[2].start_time", "message": "expected a timestamp, got bool"}``.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, str]] = list(errors or [])


class SecretDetected(ValidationError):
    """``redaction="reject"`` found secrets in a trace; nothing of it was stored.

    The message and ``errors`` name where and what kind, never the secret itself: one
    ``{"path": ..., "message": ..., "kind": ...}`` dict per secret and kind, e.g.
    ``{"path": "spans[1].attributes.api_key", "message": "is under a secret-looking key
    name", "kind": "key_name"}`` or ``{"path": "input", "message": "holds a secret
    (openai_api_key)", "kind": "openai_api_key"}``.
    """


class _KeyMessage(KeyError):
    # KeyError's str() is the repr of its argument; show the plain message instead.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TraceNotFound(FlightlogError, _KeyMessage):
    """No trace with this id is stored (it was never logged, or was deleted)."""


class DecisionNotFound(FlightlogError, _KeyMessage):
    """No decision with this id is stored."""


class AccessDenied(FlightlogError, PermissionError):
    """A decision was asked for by an agent other than the one that opened it."""


class DecisionClosed(FlightlogError):
    """The decision is committed or aborted; it cannot change any more."""


class InvalidTransition(FlightlogError):
    """The decision's status does not allow this event now."""


class StorageError(FlightlogError, OSError):
    """The storage layer failed (I/O error, corrupt bytes, incompatible store)."""


class StorageFull(StorageError):
    """The disk or the file-size limit refused a write. Earlier data is intact."""


class StoreClosed(FlightlogError):
    """The store was closed; open it again to use it."""


class TraceNotActive(FlightlogError):
    """A trace or span was used outside its ``with`` block: before it started, or after it
    ended. Nothing was recorded."""


class NoDefaultStore(FlightlogError, LookupError):
    """``flightlog.trace()`` or ``@flightlog.traced`` needed the default store, but none is set
    (call :func:`flightlog.set_default_store`, or set ``$FLIGHTLOG_PATH``)."""

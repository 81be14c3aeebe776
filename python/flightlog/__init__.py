"""flightlog: the flight recorder for AI agents, an embedded in-process trace store."""

from flightlog._core import new_span_id, new_trace_id, trace_id_for
from flightlog.errors import (
    AccessDenied,
    DecisionClosed,
    DecisionNotFound,
    FlightlogError,
    InvalidTransition,
    SecretDetected,
    StorageError,
    StorageFull,
    StoreClosed,
    TraceNotFound,
    ValidationError,
)
from flightlog.records import (
    UNSET,
    Event,
    Span,
    SpanEvent,
    TokenUsage,
    ToolCall,
    Trace,
    UnsetType,
)
from flightlog.store import Store, open

__all__ = [
    "UNSET",
    "AccessDenied",
    "DecisionClosed",
    "DecisionNotFound",
    "Event",
    "FlightlogError",
    "InvalidTransition",
    "SecretDetected",
    "Span",
    "SpanEvent",
    "StorageError",
    "StorageFull",
    "Store",
    "StoreClosed",
    "TokenUsage",
    "ToolCall",
    "Trace",
    "TraceNotFound",
    "UnsetType",
    "ValidationError",
    "new_span_id",
    "new_trace_id",
    "open",
    "trace_id_for",
]

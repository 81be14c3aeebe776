"""flightlog: the flight recorder for AI agents, an embedded in-process trace store.

The public names are imported on first use (PEP 562): ``import flightlog`` alone loads
neither the compiled core nor msgspec, so the pytest plugin, which every pytest run of every
user imports, costs nothing until it is enabled.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flightlog._core import new_span_id, new_trace_id, trace_id_for
    from flightlog.decision import Decision
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
        CheckReport,
        DecisionEvent,
        DecisionTrace,
        Event,
        Page,
        Span,
        SpanEvent,
        Stats,
        TokenUsage,
        ToolCall,
        Trace,
        TraceSummary,
        UnsetType,
    )
    from flightlog.store import Filters, Store, open

# Public name -> the module defining it.
_EXPORTS = {
    "new_span_id": "flightlog._core",
    "new_trace_id": "flightlog._core",
    "trace_id_for": "flightlog._core",
    "Decision": "flightlog.decision",
    "AccessDenied": "flightlog.errors",
    "DecisionClosed": "flightlog.errors",
    "DecisionNotFound": "flightlog.errors",
    "FlightlogError": "flightlog.errors",
    "InvalidTransition": "flightlog.errors",
    "SecretDetected": "flightlog.errors",
    "StorageError": "flightlog.errors",
    "StorageFull": "flightlog.errors",
    "StoreClosed": "flightlog.errors",
    "TraceNotFound": "flightlog.errors",
    "ValidationError": "flightlog.errors",
    "UNSET": "flightlog.records",
    "CheckReport": "flightlog.records",
    "DecisionEvent": "flightlog.records",
    "DecisionTrace": "flightlog.records",
    "Event": "flightlog.records",
    "Page": "flightlog.records",
    "Span": "flightlog.records",
    "SpanEvent": "flightlog.records",
    "Stats": "flightlog.records",
    "TokenUsage": "flightlog.records",
    "ToolCall": "flightlog.records",
    "Trace": "flightlog.records",
    "TraceSummary": "flightlog.records",
    "UnsetType": "flightlog.records",
    "Filters": "flightlog.store",
    "Store": "flightlog.store",
    "open": "flightlog.store",
}

__all__ = [
    "UNSET",
    "AccessDenied",
    "CheckReport",
    "Decision",
    "DecisionClosed",
    "DecisionEvent",
    "DecisionNotFound",
    "DecisionTrace",
    "Event",
    "Filters",
    "FlightlogError",
    "InvalidTransition",
    "Page",
    "SecretDetected",
    "Span",
    "SpanEvent",
    "Stats",
    "StorageError",
    "StorageFull",
    "Store",
    "StoreClosed",
    "TokenUsage",
    "ToolCall",
    "Trace",
    "TraceNotFound",
    "TraceSummary",
    "UnsetType",
    "ValidationError",
    "new_span_id",
    "new_trace_id",
    "open",
    "trace_id_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flightlog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

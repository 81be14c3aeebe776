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
        NoDefaultStore,
        SecretDetected,
        StorageError,
        StorageFull,
        StoreClosed,
        TraceNotActive,
        TraceNotFound,
        ValidationError,
    )
    from flightlog.instrument import (
        ActiveSpan,
        ActiveTrace,
        current_span,
        current_trace,
        default_store,
        set_default_store,
        trace,
        traced,
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
    "NoDefaultStore": "flightlog.errors",
    "SecretDetected": "flightlog.errors",
    "StorageError": "flightlog.errors",
    "StorageFull": "flightlog.errors",
    "StoreClosed": "flightlog.errors",
    "TraceNotActive": "flightlog.errors",
    "TraceNotFound": "flightlog.errors",
    "ValidationError": "flightlog.errors",
    "ActiveSpan": "flightlog.instrument",
    "ActiveTrace": "flightlog.instrument",
    "current_span": "flightlog.instrument",
    "current_trace": "flightlog.instrument",
    "default_store": "flightlog.instrument",
    "set_default_store": "flightlog.instrument",
    "trace": "flightlog.instrument",
    "traced": "flightlog.instrument",
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
    "ActiveSpan",
    "ActiveTrace",
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
    "NoDefaultStore",
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
    "TraceNotActive",
    "TraceNotFound",
    "TraceSummary",
    "UnsetType",
    "ValidationError",
    "current_span",
    "current_trace",
    "default_store",
    "new_span_id",
    "new_trace_id",
    "open",
    "set_default_store",
    "trace",
    "trace_id_for",
    "traced",
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

"""The merged view of a trace logged in several fragments (ingest or update).

Logging with a ``trace_id`` that already exists appends a fragment; nothing is rewritten in
place. Reading merges the fragments, oldest first:

- scalars: the newest value that was set wins, except ``timestamp`` (when the trace
  started: the first fragment's) and ``redactions`` (summed over fragments);
- ``spans`` and ``events``: union keyed by ``span_id`` / ``event_id``; a re-sent id replaces
  the earlier version in place, so re-sending is idempotent;
- ``tool_calls``: appended; ``metadata``: merged key by key; ``tags``: union in order.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flightlog.records import UNSET, Event, Span, Trace

_KEEP_FIRST = frozenset({"trace_id", "agent_name", "timestamp"})


def merge_fragments(fragments: list[Trace]) -> Trace:
    """Folds fragments (oldest first) into one Trace per the rules above."""
    merged = fragments[0]
    for fragment in fragments[1:]:
        merged = _merge_two(merged, fragment)
    return merged


def _merge_two(old: Trace, new: Trace) -> Trace:
    changes: dict[str, Any] = {}
    for name in Trace.__struct_fields__:
        before, after = getattr(old, name), getattr(new, name)
        if name in _KEEP_FIRST or after is UNSET:
            continue
        if name == "redactions":
            changes[name] = (0 if before is UNSET else before) + after
        elif name == "spans":
            changes[name] = _union(before, after, _span_key)
        elif name == "events":
            changes[name] = _union(before, after, _event_key)
        elif name == "tool_calls":
            changes[name] = [*before, *after]
        elif name == "metadata":
            changes[name] = {**before, **after}
        elif name == "tags":
            changes[name] = list(dict.fromkeys([*before, *after]))
        else:
            changes[name] = after
    return msgspec.structs.replace(old, **changes)


def _span_key(span: Span) -> object:
    return span.span_id


def _event_key(event: Event) -> object:
    return event.event_id


def _union(before: list[Any], after: list[Any], key: Any) -> list[Any]:
    by_id = {key(item): item for item in before}
    by_id.update((key(item), item) for item in after)
    return list(by_id.values())

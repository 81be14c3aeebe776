"""Encoding what callers pass to the core, and the errors that name what was refused.

msgspec encodes records and values in one call; only when it refuses one does
:func:`encode` walk the value to name the path of what it could not encode.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from flightlog.errors import ValidationError
from flightlog.records import encoder


def type_error(name: str, expected: str, value: object) -> ValidationError:
    """A ``ValidationError`` for an argument of the wrong type."""
    message = f"expected {expected}, got {type(value).__name__}"
    return ValidationError(f"{name}: {message}", [{"path": name, "message": message}])


def encode(record: object, root: str = "") -> bytes:
    """``record`` as msgpack; what msgspec refuses is a ``ValidationError`` naming its path
    (under ``root``)."""
    try:
        return encoder.encode(record)
    except (
        TypeError,
        OverflowError,
        RecursionError,
        UnicodeEncodeError,
        msgspec.EncodeError,
    ) as exc:
        path, problem = _find_unencodable(record)
        if root:
            path = f"{root}.{path}" if path else root
        raise ValidationError(
            f"{path or '<root>'}: {problem or exc}",
            [{"path": path, "message": problem or f"expected a JSON-compatible value: {exc}"}],
        ) from None


_MAX_WALK_DEPTH = 256


def _find_unencodable(record: object) -> tuple[str, str]:
    """Locates what msgspec refused, walking breadth-first without recursion.

    Only runs on the error path. Returns the path and, when the walk itself explains the
    problem (nesting too deep), a message; otherwise the message is msgspec's.
    """
    pending: list[tuple[str, object, int]] = [("", record, 0)]
    while pending:
        path, value, depth = pending.pop(0)
        if depth > _MAX_WALK_DEPTH:
            return path, f"nested more than {_MAX_WALK_DEPTH} levels deep"
        children = _children(path, value)
        if children is None:
            try:
                encoder.encode(value)
            except (TypeError, OverflowError, UnicodeEncodeError, msgspec.EncodeError):
                return path, ""
            continue
        pending.extend((child_path, child, depth + 1) for child_path, child in children)
    return "", ""


def _children(path: str, value: object) -> list[tuple[str, object]] | None:
    """The (path, value) items of a container, or None for a leaf."""
    prefix = f"{path}." if path else ""
    if isinstance(value, msgspec.Struct):
        return [
            (prefix + name, getattr(value, name))
            for name in value.__struct_fields__
            if getattr(value, name) is not msgspec.UNSET
        ]
    if isinstance(value, Mapping):
        return [(prefix + str(key), item) for key, item in value.items()]
    if isinstance(value, (list, tuple)):
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    return None

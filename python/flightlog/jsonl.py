"""Traces as JSON Lines: one merged trace per line, for ``flightlog export`` / ``import``.

A line is the JSON form of a :class:`~flightlog.Trace` as :meth:`Store.get` returns it
(fields never reported are left out, times are RFC 3339), so any tool that reads JSON can
read an export, and an export read back into an empty store gives the same traces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, NamedTuple

import msgspec

from flightlog.errors import TraceNotFound, ValidationError
from flightlog.records import Trace
from flightlog.store import Store

__all__ = ["ImportCounts", "export_traces", "import_traces"]

# Traces read or written per store call: one query page, one log_many hand-off.
CHUNK = 1000

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Trace)

Progress = Callable[[int], None]


def export_traces(
    store: Store, out: IO[bytes], progress: Progress | None = None, **filters: Any
) -> int:
    """Writes every trace matching ``filters`` to ``out``, oldest first, one per line.

    Args:
        store: The store to read.
        out: A binary file to write the lines to.
        progress: Called with the number of traces written so far after each chunk.
        **filters: The filters of :meth:`Store.query`.

    Returns:
        How many traces were written. A trace deleted while the export runs is left out.

    Raises:
        ValidationError: A filter was refused.
    """
    written = 0
    for ids in _matching_ids(store, filters):
        lines = []
        for trace_id in ids:
            try:
                lines.append(_encoder.encode(store.get(trace_id)))
            except TraceNotFound:
                continue
        if lines:
            out.write(b"\n".join(lines) + b"\n")
        written += len(lines)
        if progress is not None:
            progress(written)
    return written


def _matching_ids(store: Store, filters: dict[str, Any]) -> Iterator[list[str]]:
    """The ids of the matching traces, a page at a time, oldest first."""
    cursor = None
    while True:
        page = store.query(**filters, descending=False, limit=CHUNK, cursor=cursor)
        yield [summary.trace_id for summary in page.items]
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


class ImportCounts(NamedTuple):
    """What :func:`import_traces` did."""

    logged: int
    """Traces logged into the store."""
    skipped: int
    """Traces left out because the store already had them."""


def import_traces(
    store: Store, lines: Iterable[bytes], progress: Progress | None = None
) -> ImportCounts:
    """Logs the traces of a JSON Lines export into ``store``, skipping those it has.

    Every trace must carry its ``trace_id`` (exports do). A trace already in the store is
    skipped rather than logged again, which would add its tool calls and events a second
    time; so an interrupted import can simply be run again. Blank lines are ignored.

    Args:
        store: The store to write.
        lines: The lines of the export (a binary file iterates as such).
        progress: Called with the number of lines read so far after each chunk.

    Returns:
        How many traces were logged and how many skipped.

    Raises:
        ValidationError: A line is not a valid trace; its ``.errors`` paths start with
            ``line N``. The chunks of :data:`CHUNK` traces before it were imported; the one
            holding it and everything after were not.
    """
    imported = read = traces = 0
    chunk: list[tuple[int, Trace]] = []
    for read, line in enumerate(lines, start=1):
        if line.strip():
            chunk.append((read, _trace(read, line)))
            traces += 1
        if len(chunk) == CHUNK:
            imported += _log_new(store, chunk)
            chunk = []
            if progress is not None:
                progress(read)
    imported += _log_new(store, chunk)
    if progress is not None:
        progress(read)
    return ImportCounts(imported, traces - imported)


def _trace(number: int, line: bytes) -> Trace:
    """One line as a trace; a ``ValidationError`` naming the line otherwise."""
    where = f"line {number}"
    try:
        trace = _decoder.decode(line)
    except msgspec.ValidationError as exc:
        # msgspec names the path as "... - at `$.spans[0].name`": keep it, under the line.
        message, _, at = str(exc).partition(" - at `$")
        raise _line_error(f"{where}{at.rstrip('`')}", message) from None
    except msgspec.DecodeError as exc:
        raise _line_error(where, f"expected a JSON object: {exc}") from None
    if not isinstance(trace.trace_id, str):
        raise _line_error(f"{where}.trace_id", "missing (every exported trace has one)")
    return trace


def _line_error(path: str, message: str) -> ValidationError:
    return ValidationError(f"{path}: {message}", [{"path": path, "message": message}])


_POSITION = re.compile(r"\[(\d+)\]")


def _log_new(store: Store, chunk: list[tuple[int, Trace]]) -> int:
    """Logs the traces of ``chunk`` that ``store`` does not have, in one hand-off."""
    new = [(number, trace) for number, trace in chunk if not _has(store, trace)]
    if not new:
        return 0
    try:
        store.log_many([trace for _, trace in new])
    except ValidationError as exc:
        # log_many's paths start with the position in the batch: name the line instead.
        def line_of(match: re.Match[str]) -> str:
            return f"line {new[int(match[1])][0]}"

        errors = [{**e, "path": _POSITION.sub(line_of, e["path"], count=1)} for e in exc.errors]
        message = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise type(exc)(message, errors) from None
    return len(new)


def _has(store: Store, trace: Trace) -> bool:
    try:
        store.get(str(trace.trace_id))
    except TraceNotFound:
        return False
    return True

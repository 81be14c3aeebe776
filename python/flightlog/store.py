"""The public Store: encode records with msgspec, hand the bytes to the Rust core, decode.

The core validates on the caller's thread (with the GIL released), then queues the canonical
record to a writer thread that appends it to LMDB in group commits. See ``docs/`` for the
durability modes and the on-disk format.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import msgspec

from flightlog import _core
from flightlog.errors import ValidationError
from flightlog.merge import merge_fragments
from flightlog.records import Trace, encoder, trace_decoder

__all__ = ["Durability", "Store", "open"]

Durability = Literal["group", "sync", "none"]

DEFAULT_PATH = ".flightlog"

_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


class Store:
    """An open flightlog store. Create it with :func:`flightlog.open`.

    Safe to share between threads. Usable as a context manager: leaving the block flushes
    and closes it.
    """

    __slots__ = ("__weakref__", "_core", "_durability", "_path", "_readonly")

    def __init__(self, core: _core.Store, path: Path, durability: Durability, readonly: bool):
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
            StorageError: The store is read-only or the last write failed.
            StoreClosed: The store was closed.
        """
        if trace is None:
            record: object = fields
        elif fields:
            raise TypeError("log() takes a trace or keyword fields, not both")
        else:
            record = trace
        return self._core.log(_encode(record))

    def log_many(self, traces: Iterable[Trace | Mapping[str, Any]]) -> list[str]:
        """Validates several traces in one pass and queues them in one hand-off.

        All or nothing: if any trace is refused, none is stored and the error paths start
        with the trace's position, e.g. ``[3].spans[0].name``.

        Returns:
            The trace ids, in order.

        Raises:
            ValidationError: Some trace was refused; nothing was stored.
        """
        return self._core.log_many(_encode(list(traces)))

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
        """
        if not isinstance(trace_id, str):
            raise ValidationError(
                f"trace_id: expected a string of 32 lowercase hex characters, got "
                f"{type(trace_id).__name__}",
                [{"path": "trace_id", "message": "expected a string"}],
            )
        fragments = self._core.fragments(trace_id)
        if len(fragments) == 1:
            return trace_decoder.decode(fragments[0])
        return merge_fragments([trace_decoder.decode(f) for f in fragments])

    def close(self) -> None:
        """Flushes and closes this handle. Further calls raise ``StoreClosed``. Idempotent."""
        _open_stores.discard(self)
        self._core.close()

    @property
    def path(self) -> Path:
        """The store directory."""
        return self._path

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

    Raises:
        ValidationError: An option has a bad value.
        StorageError: The directory cannot be created or opened.
    """
    if durability not in ("group", "sync", "none"):
        raise ValidationError(
            f"durability: expected 'group', 'sync' or 'none', got {durability!r}",
            [{"path": "durability", "message": "expected 'group', 'sync' or 'none'"}],
        )
    if path is None:
        path = os.environ.get("FLIGHTLOG_PATH") or DEFAULT_PATH
    location = Path(path)
    core = _core.Store(
        os.fspath(location),
        durability=durability,
        readonly=readonly,
        map_size=map_size,
        max_trace_bytes=max_trace_bytes,
        max_depth=max_depth,
        max_spans=max_spans,
    )
    return Store(core, location, durability, readonly)


def _encode(record: object) -> bytes:
    try:
        return encoder.encode(record)
    except (TypeError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        path, problem = _find_unencodable(record)
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
            except (TypeError, OverflowError, msgspec.EncodeError):
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


@atexit.register
def _flush_at_exit() -> None:
    # Group durability promises that what was logged reaches disk when the process exits
    # normally, even without close().
    for store in list(_open_stores):
        with contextlib.suppress(Exception):  # nothing can be raised to anyone at exit
            store.flush()

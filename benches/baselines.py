"""How the baselines store a trace: SQLite laid out like Iris, and py-lmdb + msgspec.

Shared by ``bench_ingest.py`` (one thread, per trace and batched) and ``bench_threads.py``
(several threads, per trace). Timing is the callers' business.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import lmdb
import msgspec
from flightlog.records import Trace, encoder

# --- SQLite, laid out like Iris --------------------------------------------------------------

# Iris (iris-eval/mcp-server, an MCP server that logs and evaluates agent traces in SQLite)
# creates these tables and indexes in its first migration: one row per trace with JSON text
# columns, one row per span, foreign keys on. Its later releases add tenant-scoped and
# covering indexes, which would only make inserts slower.
IRIS_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
  trace_id TEXT PRIMARY KEY,
  agent_name TEXT NOT NULL,
  framework TEXT,
  input TEXT,
  output TEXT,
  tool_calls TEXT,
  latency_ms REAL,
  token_usage TEXT,
  cost_usd REAL,
  metadata TEXT,
  timestamp TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_traces_agent_name ON traces(agent_name);
CREATE INDEX IF NOT EXISTS idx_traces_timestamp ON traces(timestamp);
CREATE INDEX IF NOT EXISTS idx_traces_framework ON traces(framework);
CREATE TABLE IF NOT EXISTS spans (
  span_id TEXT PRIMARY KEY,
  trace_id TEXT NOT NULL REFERENCES traces(trace_id) ON DELETE CASCADE,
  parent_span_id TEXT,
  name TEXT NOT NULL,
  kind TEXT NOT NULL DEFAULT 'INTERNAL',
  status_code TEXT NOT NULL DEFAULT 'UNSET',
  status_message TEXT,
  start_time TEXT NOT NULL,
  end_time TEXT,
  attributes TEXT,
  events TEXT
);
CREATE INDEX IF NOT EXISTS idx_spans_trace_id ON spans(trace_id);
CREATE INDEX IF NOT EXISTS idx_spans_parent ON spans(parent_span_id);
"""
_INSERT_TRACE = (
    "INSERT INTO traces (trace_id, agent_name, framework, input, output, tool_calls, "
    "latency_ms, token_usage, cost_usd, metadata, timestamp) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_SPAN = (
    "INSERT INTO spans (span_id, trace_id, parent_span_id, name, kind, status_code, "
    "status_message, start_time, end_time, attributes, events) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
SQLITE_FILE = "traces.db"


def sqlite_connect(directory: Path, synchronous: str) -> sqlite3.Connection:
    """A connection to ``directory/traces.db`` (created with Iris's schema if new), in WAL
    mode with the given ``synchronous`` level, in autocommit mode (transactions are explicit).
    """
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        directory / SQLITE_FILE, isolation_level=None, check_same_thread=False, timeout=60
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(IRIS_SCHEMA)
    return db


def sqlite_insert(db: sqlite3.Connection, trace_id: str, t: Trace, span_suffix: str = "") -> None:
    """One trace's rows, as Iris's ``insertTrace`` writes them; the caller owns the
    transaction. Span ids are a primary key across traces: a caller writing the same trace
    again gives a new ``span_suffix`` to its span ids."""
    json = msgspec.json.encode
    start = _time(t.timestamp)
    db.execute(
        _INSERT_TRACE,
        (
            trace_id,
            t.agent_name,
            _opt(t.framework),
            _opt(t.input),
            _opt(t.output),
            json(t.tool_calls),
            _opt(t.latency_ms),
            json(t.token_usage) if t.token_usage is not msgspec.UNSET else None,
            _opt(t.cost_usd),
            json(t.metadata),
            start,
        ),
    )
    db.executemany(
        _INSERT_SPAN,
        [
            (
                f"{s.span_id}{span_suffix}",
                trace_id,
                f"{s.parent_span_id}{span_suffix}" if s.parent_span_id else None,
                s.name,
                s.kind if s.kind is not msgspec.UNSET else "INTERNAL",
                s.status_code if s.status_code is not msgspec.UNSET else "UNSET",
                _opt(s.status_message),
                _time(s.start_time) or start,
                _time(s.end_time),
                json(s.attributes),
                json(s.events),
            )
            for s in t.spans
        ],
    )


def _opt(value: object) -> object:
    return None if value is msgspec.UNSET else value


def _time(value: object) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None


def random_trace_id(rng: random.Random) -> str:
    """A random trace id as Iris's callers send them: 32 hex characters."""
    return f"{rng.getrandbits(128):032x}"


# --- py-lmdb + msgspec -----------------------------------------------------------------------

LMDB_MAP_SIZE = 1 << 38  # address space only; the file grows as written


class PyLmdb:
    """A store a careful Python programmer would write on py-lmdb: each trace msgpack-encoded
    under an 8-byte sequence key, plus two index entries (a time-ordered trace id -> key, and
    agent + start time + key). No validation, no defaults, no compression.

    Safe to share between threads: LMDB serializes write transactions (py-lmdb waits for the
    write lock with the GIL released).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = lmdb.open(str(path), map_size=LMDB_MAP_SIZE, max_dbs=3)
        self.records = self.env.open_db(b"records")
        self.by_id = self.env.open_db(b"by_id")
        self.by_agent = self.env.open_db(b"by_agent_time")
        self._seq = 0

    def write(self, traces: list[Trace], rng: random.Random) -> None:
        """Stores ``traces`` in one write transaction, committed with an fsync."""
        encode = encoder.encode
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(self.records)
            # Read the last key inside the transaction: other threads may have appended.
            seq = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
            for trace in traces:
                seq += 1
                key = seq.to_bytes(8, "big")
                # A time-ordered 16-byte id, like flightlog's (UUIDv7 layout).
                trace_id = (time.time_ns() // 1_000_000).to_bytes(6, "big") + rng.randbytes(10)
                stamp: Any = trace.timestamp
                micros = int(stamp.timestamp() * 1e6) if isinstance(stamp, dt.datetime) else 0
                txn.put(key, encode(trace), db=self.records, append=True)
                txn.put(trace_id, key, db=self.by_id)
                agent_key = trace.agent_name.encode() + b"\0" + micros.to_bytes(8, "big") + key
                txn.put(agent_key, b"", db=self.by_agent)

    def close(self) -> None:
        self.env.close()

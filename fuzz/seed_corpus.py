"""Writes the seed files of the fuzz corpus (tests/corpus/<target>/seed-*) from real data.

Payloads are encoded the way ``flightlog.Store`` encodes them; stored values and keys are
read with the ``lmdb`` package from a store this script fills. Needs the extension built
(``pip install -e ".[dev]"``). Run from the repository root::

    python fuzz/seed_corpus.py

Files are rewritten in place; inputs the fuzzer found (named by their SHA-1) are left alone.
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import flightlog
import lmdb
import zstandard
from flightlog.encoding import encode
from flightlog.records import Span, ToolCall, Trace
from flightlog.sample import BASE_TIME, many_spans_trace, sample_traces, sized_trace

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"

# The same bytes as `_core::fuzz::DICTIONARY` (rust/fuzz.rs): the dictionary, with id 1,
# that the stored_record target decodes codec-2 values with.
DICTIONARY = (
    b"agent_name trace_id timestamp spans span_id parent_span_id name "
    b"kind LLM TOOL AGENT status_code UNSET OK ERROR start_time end_time duration_ms attributes "
    b"gen_ai.usage.input_tokens gen_ai.usage.output_tokens tool_calls tool_name input output "
    b"latency_ms cost_usd token_usage prompt_tokens completion_tokens total_tokens events event_id "
    b"type metadata status succeeded failed tags redactions"
)
DICTIONARY_ID = 1

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT, CHILD = "00f067aa0ba902b7", "b7ad6b7169203331"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def payloads() -> dict[str, Any]:
    """Traces as callers send them: typed and as dicts, valid and not, single and batched."""
    at = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)
    rich = {
        "agent_name": "support-bot",
        "trace_id": TRACE_ID,
        "framework": "langgraph",
        "run_id": "run-7",
        "request_id": "req-1",
        "session_id": "sess-1",
        "input": f"my key is {GITHUB_TOKEN}",
        "output": "done",
        "timestamp": "2025-06-02T12:00:00.123456+02:00",
        "ended_at": 1748865601.5,
        "status": "failed",
        "latency_ms": 812,
        "cost_usd": 0.0031,
        "token_usage": {"prompt_tokens": 1200, "completion_tokens": 30},
        "tags": ["prod", "v2", "é" * 70],
        "metadata": {"customer": {"tier": "gold", "ids": [1, -2, 3.5, None, True]}, "t": at},
        "tool_calls": [
            {"tool_name": "lookup", "input": {"q": "x"}, "output": [1], "latency_ms": 3.0},
            {"tool_name": "refund", "error": "timeout"},
        ],
        "spans": [
            {
                "span_id": ROOT,
                "name": "agent",
                "kind": "agent",
                "start_time": at,
                "end_time": "2025-06-02T12:00:01Z",
                "events": [{"name": "retry", "attributes": {"n": 1}}],
            },
            {
                "span_id": CHILD,
                "parent_span_id": ROOT,
                "name": "chat gpt-4o",
                "kind": "LLM",
                "status_code": "ERROR",
                "status_message": "rate limited",
                "attributes": {
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 20,
                    "gen_ai.usage.cost": 0.002,
                    "api_key": "sk-hidden",
                },
            },
        ],
        "events": [
            {"type": "model.call", "status": "succeeded", "parent_id": ROOT, "metadata": {"m": 1}},
            {"type": "policy.decision", "metadata": {"summary": {"outcome": "allow"}}},
            {"type": "custom.checkpoint", "event_id": "e1", "at": 1748865600},
        ],
    }
    cycle = {
        "agent_name": "a",
        "spans": [
            {"span_id": ROOT, "parent_span_id": CHILD},
            {"span_id": CHILD, "parent_span_id": ROOT},
        ],
    }
    typed = Trace(
        agent_name="typed",
        spans=[Span(name="a", span_id=ROOT, end_time=at)],
        tool_calls=[ToolCall(tool_name="t", input={"k": "v"})],
        timestamp=at,
    )
    found: dict[str, Any] = {
        "minimal": {"agent_name": "a"},
        "rich": rich,
        "typed": typed,
        "update-running": {"agent_name": "support-bot", "trace_id": TRACE_ID, "status": "running"},
        "span-cycle": cycle,
        "duplicate-spans": {"agent_name": "a", "spans": [{"span_id": ROOT}, {"span_id": ROOT}]},
        "wrong-types": {"agent_name": 7, "latency_ms": -1, "tags": "x", "spans": {}},
        "bad-timestamps": {"agent_name": "a", "timestamp": "2023-02-29", "ended_at": 1e300},
        "deep-metadata": {"agent_name": "a", "metadata": _nested(12)},
        "batch": [rich, {"agent_name": "b", "output": "x" * 300}, typed],
        "batch-with-error": [{"agent_name": "a"}, {"agent_name": ""}],
        "1kb": sized_trace(random.Random(1), 1000),
        "many-spans": many_spans_trace(random.Random(2), spans=40, span_bytes=40),
    }
    for i, trace in enumerate(sample_traces(6, seed=3)):
        found[f"sample-{i}"] = trace
    return found


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def query_args() -> dict[str, bytes]:
    """Filters, instants and cursors as `Store.query`, `count`, `stats` pass them."""
    filters: dict[str, dict[str, Any]] = {
        "empty": {},
        "agent": {"agent_name": "support-bot"},
        "agents": {"agent_name": ["support-bot", "billing-bot"], "status": ["failed", "running"]},
        "ids": {"run_id": "run-1", "session_id": "s", "framework": "langgraph"},
        "tag": {"tag": ["prod", "é" * 70]},
        "errors": {"has_errors": True, "min_cost_usd": 0, "max_latency_ms": 500.5},
        "window": {"since": BASE_TIME, "until": "9999-12-31T23:59:59Z"},
        "epoch": {"since": -62135596800, "until": 1.5e9, "min_latency_ms": 1},
        "bad": {"status": "done", "since": "yesterday", "bogus": 1, "tag": []},
        "none": {"agent_name": None, "since": None},
    }
    found = {name: encode(value) for name, value in filters.items()}
    found["instant"] = encode(BASE_TIME)
    found["instant-iso"] = encode("0001-01-01T00:00:00")
    with tempfile.TemporaryDirectory() as tmp:
        store = flightlog.open(Path(tmp) / "store")
        for i in range(4):
            store.log({"agent_name": "a", "latency_ms": float(i), "cost_usd": i / 10})
        store.flush()
        for order_by in ("timestamp", "latency_ms", "cost_usd"):
            page = store.query(order_by=order_by, limit=1)
            assert page.next_cursor is not None
            found[f"cursor-{order_by}"] = page.next_cursor.encode()
        store.close()
    return found


def stored(sent: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Values of `records` (stored_record) and of the other databases and keys
    (stored_value) from a store holding compressed, dictionary-compressed and merged
    traces and a decision."""
    records: dict[str, bytes] = {}
    values: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        store = flightlog.open(path)
        # The writer trains a dictionary on the first 256 traces, in a thread; the batches
        # after it finished store and recompress records with it.
        store.log_many(sample_traces(300, seed=5))
        for trace in sample_traces(20, seed=6):
            store.flush()
            time.sleep(0.05)
            store.log(trace)
        store.log(sent["rich"])
        store.log(sent["update-running"] | {"status": "failed", "output": "again"})
        store.log(sent["typed"])
        with store.open_decision(
            "support-bot", "customer.refund", "approve", metadata={"order": 7}, run_id="r"
        ) as decision:
            decision.read(product="orders", purpose="check", data_ref="order/7")
            decision.add_context({"refund": 7, "items": ["a", "b"]}, summary="refund 7")
            decision.request_approval(by="ops", reason="over limit")
            decision.resolve_approval(approved=True, by="ops")
        store.flush()
        store.close()
        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16)
        with env.begin() as txn:

            def first(db: str, n: int) -> list[tuple[bytes, bytes]]:
                cursor = txn.cursor(env.open_db(db.encode(), txn=txn, create=False))
                return [(bytes(k), bytes(v)) for k, v in list(cursor)[:n]]

            dicts = {key: bytes(raw) for key, raw in first("dicts", 10)}
            by_codec: dict[int, list[bytes]] = {}
            canonical = []
            for _, value in first("records", 400):
                by_codec.setdefault(value[1], []).append(value)
                canonical.append(_decode(value, dicts))
            for codec, found in by_codec.items():
                for i, value in enumerate(found[:3] + found[-2:]):
                    records[f"codec{codec}-{i}"] = value
            # The first three traces and the last four, the hand-written ones among them.
            for i, record in enumerate(canonical[:3] + canonical[-4:]):
                records[f"ours-{i}-raw"] = _header(0, len(record)) + record
                compressed = zstandard.ZstdCompressor(level=1).compress(record)
                records[f"ours-{i}-zstd"] = _header(1, len(record)) + compressed
                records[f"ours-{i}-dict"] = _dictionary_value(record)
            cursor = txn.cursor(env.open_db(b"records", txn=txn, create=False))
            cursor.first()
            values["records-key-first"] = bytes(cursor.key())
            cursor.last()
            values["records-key-last"] = bytes(cursor.key())
            for db in ("summaries", "merges", "decisions", "decision_events"):
                for i, (_, value) in enumerate(first(db, 3)):
                    values[f"{db}-{i}"] = value
            for i, (key, _) in enumerate(first("by_time", 2) + first("index", 3)):
                values[f"key-{i}"] = key
            for raw in list(dicts.values())[:1]:
                # A trained dictionary's header and entropy tables; the whole 64 KiB would
                # make every fuzz input that long.
                values["dict-head"] = raw[:2048]
        env.close()
    return records, values


def _decode(value: bytes, dicts: dict[bytes, bytes]) -> bytes:
    """A `records` value's canonical bytes (docs/format.md, "records")."""
    codec, length = value[1], struct.unpack_from("<I", value, 2)[0]
    if codec == 0:
        return value[6:]
    if codec == 1:
        return zstandard.ZstdDecompressor().decompress(value[6:], max_output_size=length)
    dictionary = zstandard.ZstdCompressionDict(dicts[value[6:10][::-1]])
    return zstandard.ZstdDecompressor(dict_data=dictionary).decompress(
        value[10:], max_output_size=length
    )


def _header(codec: int, length: int) -> bytes:
    return struct.pack("<BBI", 1, codec, length)


def _dictionary_value(canonical: bytes) -> bytes:
    raw = zstandard.ZstdCompressionDict(DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    compressed = zstandard.ZstdCompressor(level=1, dict_data=raw).compress(canonical)
    return _header(2, len(canonical)) + struct.pack("<I", DICTIONARY_ID) + compressed


def write(target: str, files: dict[str, bytes]) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / f"seed-{name}").write_bytes(data)
    print(f"{directory}: {len(files)} seeds")


def main() -> None:
    found = payloads()
    write("canonicalize", {name: encode(value) for name, value in found.items()})
    write("query_args", query_args())
    records, values = stored(found)
    write("stored_record", records)
    write("stored_value", values)


if __name__ == "__main__":
    main()

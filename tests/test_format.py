"""docs/format.md is a contract: a closed store is decoded here with the ``lmdb`` package and
msgspec, following only that page, and must agree with what ``Store.get()`` returns.

zstd-compressed records are decoded with the ``zstandard`` package (a test dependency;
flightlog itself does not need it).
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flightlog
import lmdb
import msgspec
import pytest
import zstandard
from flightlog import Event, Span, SpanEvent, TokenUsage, ToolCall, Trace
from flightlog.sample import standard_trace

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 6, 2, 12, 0, 0, 500000, tzinfo=UTC)  # sub-second: not the 4-byte form
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TID = "0af7651916cd43dd8448eb211c80319c"


def zstd_decompress(frame: bytes, dictionary: bytes | None = None) -> bytes:
    if dictionary is None:
        return zstandard.ZstdDecompressor().decompressobj().decompress(frame)
    with_dict = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary))
    return with_dict.decompressobj().decompress(frame)


@contextmanager
def lmdb_env(path: Path) -> Iterator[Any]:
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        yield env
    finally:
        env.close()


class Record(msgspec.Struct):
    key: bytes
    version: int
    codec: int
    length: int
    payload: bytes
    dictionary_id: int | None = None
    dictionary: bytes | None = None

    def decoded(self) -> bytes:
        """The canonical MessagePack of the fragment, per the header's codec."""
        if self.codec == 0:
            raw = self.payload
        elif self.codec == 1:
            raw = zstd_decompress(self.payload)
        elif self.codec == 2:
            assert self.dictionary is not None, f"dicts has no id {self.dictionary_id}"
            raw = zstd_decompress(self.payload, self.dictionary)
        else:
            raise AssertionError(f"unknown codec {self.codec}")
        assert len(raw) == self.length, "decoded length must match the header"
        return raw


def parse_record(key: bytes, value: bytes, txn: Any = None, dicts: Any = None) -> Record:
    assert len(value) >= 6, "a record value has a 6-byte header"
    record = Record(
        key=key,
        version=value[0],
        codec=value[1],
        length=int.from_bytes(value[2:6], "little"),
        payload=value[6:],
    )
    if record.codec == 2:
        assert len(value) >= 10, "a codec-2 value has a 10-byte header"
        record.dictionary_id = int.from_bytes(value[6:10], "little")
        record.payload = value[10:]
        found = txn.get(record.dictionary_id.to_bytes(4, "big"), db=dicts)
        record.dictionary = None if found is None else bytes(found)
    return record


def read_trace_records(path: Path, trace_id: str) -> list[Record]:
    """The records of one trace, oldest first, found through `fragments` as the page says."""
    with lmdb_env(path) as env:
        meta = env.open_db(b"meta", create=False)
        fragments = env.open_db(b"fragments", dupsort=True, dupfixed=True, create=False)
        records = env.open_db(b"records", create=False)
        dicts = env.open_db(b"dicts", create=False)
        with env.begin() as txn:
            assert txn.get(b"format", db=meta) == b"flightlog/1"
            cursor = txn.cursor(db=fragments)
            assert cursor.set_key(bytes.fromhex(trace_id)), "trace id not in fragments"
            keys = [bytes(k) for k in cursor.iternext_dup()]
            out = []
            for key in keys:
                assert len(key) == 8
                value = txn.get(key, db=records)
                assert value is not None, f"fragments points at a missing record {key.hex()}"
                out.append(parse_record(key, bytes(value), txn, dicts))
            return out


def all_records(path: Path) -> list[Record]:
    with lmdb_env(path) as env:
        records = env.open_db(b"records", create=False)
        dicts = env.open_db(b"dicts", create=False)
        with env.begin() as txn:
            return [parse_record(bytes(k), bytes(v), txn, dicts) for k, v in txn.cursor(db=records)]


def known_trace() -> Trace:
    return Trace(
        agent_name="format-check",
        trace_id=TID,
        framework="plain",
        input="q",
        output="a",
        tool_calls=[ToolCall(tool_name="t", input={"k": [1, None]}, latency_ms=1.0)],
        latency_ms=2.5,
        token_usage=TokenUsage(prompt_tokens=1, completion_tokens=2),
        cost_usd=0.01,
        metadata={"m": {"n": 1}},
        spans=[
            Span(
                name="root",
                span_id="00f067aa0ba902b7",
                kind="LLM",
                start_time=T0,
                end_time=T0 + dt.timedelta(seconds=1),
                events=[SpanEvent(name="e")],
            )
        ],
        events=[Event(type="llm")],
        timestamp=T0,
        status="succeeded",
        tags=["x"],
    )


def test_a_closed_store_decodes_by_the_documented_format(
    store: flightlog.Store, store_path: Path
) -> None:
    trace_id = store.log(known_trace())
    store.flush()
    expected = store.get(trace_id)
    store.close()

    records = read_trace_records(store_path, trace_id)
    assert len(records) == 1
    record = records[0]
    assert record.version == 1
    assert record.codec in (0, 1)
    decoded = msgspec.msgpack.decode(record.decoded(), type=Trace)
    assert decoded == expected


def test_fragment_db_is_dupsort_dupfixed_and_meta_names_the_format(
    store: flightlog.Store, store_path: Path
) -> None:
    store.log(agent_name="a")
    store.close()
    with lmdb_env(store_path) as env:
        fragments = env.open_db(b"fragments", dupsort=True, dupfixed=True, create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            flags = fragments.flags(txn)
            assert flags["dupsort"] and flags["dupfixed"]
            assert txn.get(b"format", db=meta) == b"flightlog/1"


def test_sequence_numbers_start_at_one_and_fragments_list_them_in_ingest_order(
    store: flightlog.Store, store_path: Path
) -> None:
    store.log(agent_name="a", trace_id=TID, input="first")
    store.log(agent_name="a", trace_id=OTHER_TID, input="other")
    store.log(agent_name="a", trace_id=TID, input="second")
    store.log(agent_name="a", trace_id=TID, input="third")
    store.close()

    keys = [r.key for r in all_records(store_path)]
    assert keys == [n.to_bytes(8, "big") for n in (1, 2, 3, 4)]
    records = read_trace_records(store_path, TID)
    assert [int.from_bytes(r.key, "big") for r in records] == [1, 3, 4]
    inputs = [msgspec.msgpack.decode(r.decoded())["input"] for r in records]
    assert inputs == ["first", "second", "third"]


def test_small_records_are_stored_raw_and_large_ones_compressed(
    store: flightlog.Store, store_path: Path
) -> None:
    small = store.log(agent_name="a")
    prose = "the agent called the search tool and the search tool answered " * 40
    large = store.log(agent_name="a", input=prose)
    store.flush()
    expected = store.get(large)
    store.close()

    small_record = read_trace_records(store_path, small)[0]
    assert small_record.length < 128
    assert small_record.codec == 0
    assert small_record.length == len(small_record.payload)

    large_record = read_trace_records(store_path, large)[0]
    assert large_record.codec == 1
    assert len(large_record.payload) < large_record.length
    assert msgspec.msgpack.decode(large_record.decoded(), type=Trace) == expected


def test_canonical_map_keeps_the_callers_key_order_then_appends_defaults(
    store: flightlog.Store, store_path: Path
) -> None:
    given = {"input": "q", "agent_name": "a", "spans": [{"name": "s"}]}
    trace_id = store.log(given)
    store.close()
    canonical = msgspec.msgpack.decode(read_trace_records(store_path, trace_id)[0].decoded())
    keys = list(canonical)
    assert keys[:3] == ["input", "agent_name", "spans"]
    assert set(keys[3:]) == {"trace_id", "timestamp", "redactions"}
    assert canonical["trace_id"] == trace_id
    assert canonical["redactions"] == 0
    span = canonical["spans"][0]
    assert next(iter(span)) == "name"
    assert {"span_id", "kind", "status_code", "start_time"} <= set(span)
    assert (span["kind"], span["status_code"]) == ("INTERNAL", "UNSET")
    assert span["start_time"] == canonical["timestamp"]


def _seconds_nanos(instant: dt.datetime) -> tuple[int, int]:
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def timestamp_8(instant: dt.datetime) -> bytes:
    """MessagePack timestamp 64: 30-bit nanoseconds, then 34-bit seconds."""
    seconds, nanos = _seconds_nanos(instant)
    return b"\xd7\xff" + ((nanos << 34) | seconds).to_bytes(8, "big")


def timestamp_12(instant: dt.datetime) -> bytes:
    """MessagePack timestamp 96: u32 nanoseconds, then i64 seconds."""
    seconds, nanos = _seconds_nanos(instant)
    return b"\xc7\x0c\xff" + nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)


@pytest.mark.parametrize(
    ("instant", "form"),
    [
        (T0, 8),
        (dt.datetime(2514, 5, 30, 1, 53, 3, tzinfo=UTC), 8),  # 2**34 - 1 seconds: the last 8-byte
        (dt.datetime(2514, 5, 30, 1, 53, 4, tzinfo=UTC), 12),
        (dt.datetime(2600, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 12),
        (dt.datetime(1, 1, 1, tzinfo=UTC), 12),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 12),
        (dt.datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC), 12),
    ],
    ids=str,
)
def test_timestamps_use_the_documented_msgpack_extension_forms(
    store: flightlog.Store, store_path: Path, instant: dt.datetime, form: int
) -> None:
    encoding = timestamp_8(instant) if form == 8 else timestamp_12(instant)
    # Sent as an ISO string, so that the core (not msgspec) chooses the encoding.
    trace_id = store.log(agent_name="a", timestamp=instant.isoformat())
    store.close()
    raw = read_trace_records(store_path, trace_id)[0].decoded()
    assert encoding in raw
    assert msgspec.msgpack.decode(raw)["timestamp"] == instant


def test_a_timestamp_sent_in_the_4_byte_form_is_stored_in_the_8_byte_form(
    store: flightlog.Store, store_path: Path
) -> None:
    whole_second = dt.datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
    # msgspec encodes a whole-second instant before 2106 as a timestamp 32 (0xd6 0xff).
    trace_id = store.log(Trace(agent_name="a", timestamp=whole_second))
    store.close()
    raw = read_trace_records(store_path, trace_id)[0].decoded()
    seconds, _ = _seconds_nanos(whole_second)
    assert b"\xa9timestamp\xd7\xff" + seconds.to_bytes(8, "big") in raw
    assert msgspec.msgpack.decode(raw)["timestamp"] == whole_second


def test_a_minted_timestamp_uses_the_8_byte_form(store: flightlog.Store, store_path: Path) -> None:
    trace_id = store.log(agent_name="a")
    store.flush()
    minted = store.get(trace_id).timestamp
    store.close()
    assert isinstance(minted, dt.datetime)
    raw = read_trace_records(store_path, trace_id)[0].decoded()
    marker = b"\xa9timestamp\xd7\xff"  # the key "timestamp", then a timestamp 64
    assert marker in raw
    start = raw.index(marker) + len(marker)
    packed = int.from_bytes(raw[start : start + 8], "big")
    seconds, nanos = packed & (2**34 - 1), packed >> 34
    assert nanos < 10**9
    # The core keeps nanoseconds; Python's datetime holds them rounded to microseconds.
    minted_seconds, minted_nanos = _seconds_nanos(minted)
    assert abs((seconds - minted_seconds) * 10**9 + nanos - minted_nanos) <= 500


def test_a_store_with_another_format_marker_is_refused(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        store.log(agent_name="a")
    env = lmdb.open(str(store_path), max_dbs=16)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.put(b"format", b"flightlog/99", db=meta)
    finally:
        env.close()
    with pytest.raises(flightlog.StorageError, match="flightlog/99"):
        flightlog.open(store_path)
    with pytest.raises(flightlog.StorageError, match="flightlog/99"):
        flightlog.open(store_path, readonly=True)


def test_records_compressed_with_a_trained_dictionary_decode_per_the_page(
    store: flightlog.Store, store_path: Path
) -> None:
    rng = random.Random(5)
    ids = store.log_many(standard_trace(rng) for _ in range(1100))
    store.flush()
    # Training runs in the background; keep logging until records use the dictionary.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids.append(store.log(standard_trace(rng)))
        store.flush()
        if read_trace_records(store_path, ids[-1])[0].codec == 2:
            break
        time.sleep(0.05)
    later = store.log_many(standard_trace(rng) for _ in range(20))
    store.flush()
    expected = {tid: store.get(tid) for tid in later}
    store.close()
    with lmdb_env(store_path) as env:
        dicts = env.open_db(b"dicts", create=False)
        with env.begin() as txn:
            assert [bytes(k) for k, _ in txn.cursor(db=dicts)] == [(1).to_bytes(4, "big")]
    records = {tid: read_trace_records(store_path, tid)[0] for tid in expected}
    assert {r.codec for r in records.values()} == {2}
    for tid, record in records.items():
        assert record.dictionary_id == 1
        assert msgspec.msgpack.decode(record.decoded(), type=Trace) == expected[tid]


def test_records_stored_before_the_dictionary_are_recompressed_with_it(
    store: flightlog.Store, store_path: Path
) -> None:
    rng = random.Random(6)
    early = store.log_many(standard_trace(rng) for _ in range(400))
    store.flush()
    expected = {tid: store.get(tid) for tid in early}
    assert {read_trace_records(store_path, tid)[0].codec for tid in early[:10]} == {1}
    deadline = time.monotonic() + 30
    while True:
        probe = store.log(standard_trace(rng))
        store.flush()
        if read_trace_records(store_path, probe)[0].codec == 2:
            break
        assert time.monotonic() < deadline, "no dictionary was trained"
        time.sleep(0.05)
    for _ in range(4):  # the backlog drains a few hundred records per batch
        store.log(standard_trace(rng))
        store.flush()
    store.close()

    records = {tid: read_trace_records(store_path, tid)[0] for tid in early}
    assert {r.codec for r in records.values()} == {2}
    for tid, record in records.items():
        assert msgspec.msgpack.decode(record.decoded(), type=Trace) == expected[tid]


def parse_token_block(raw: bytes, at: int) -> tuple[dict[str, int], int]:
    flags, at = raw[at], at + 1
    counts = {}
    for bit, name in [(1, "prompt"), (2, "completion"), (3, "total")]:
        if flags >> bit & 1:
            counts[name] = int.from_bytes(raw[at : at + 8], "little")
            at += 8
    return counts, at


def parse_merge_state(raw: bytes) -> dict[str, Any]:
    """A `merges` value, read as docs/format.md lays it out."""
    assert raw[0] == 1, "version"
    flags, at = raw[1], 2
    state: dict[str, Any] = {"tool_errors": bool(flags & 1), "tokens": None, "cost": None}
    if flags >> 1 & 1:
        state["tokens"], at = parse_token_block(raw, at)
    if flags >> 2 & 1:
        (state["cost"],) = struct.unpack_from("<d", raw, at)
        at += 8
    spans = []
    count, at = int.from_bytes(raw[at : at + 4], "little"), at + 4
    for _ in range(count):
        span_id, span_flags = raw[at : at + 8].hex(), raw[at + 8]
        at += 9
        span: dict[str, Any] = {"id": span_id, "error": bool(span_flags & 1)}
        if span_flags >> 5 & 1:
            span["tokens"], at = parse_token_block(raw, at)
        if span_flags >> 4 & 1:
            (span["cost"],) = struct.unpack_from("<d", raw, at)
            at += 8
        spans.append(span)
    state["spans"] = spans
    resends = int.from_bytes(raw[at : at + 4], "little")
    at += 4
    state["resend_keys"] = [raw[at + 16 * i : at + 16 * (i + 1)] for i in range(resends)]
    assert at + 16 * resends == len(raw), "nothing follows the resend keys"
    return state


def test_merge_states_decode_per_the_page(store: flightlog.Store, store_path: Path) -> None:
    usage = {
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.usage.cost": 0.5,
    }
    store.log(
        agent_name="a",
        trace_id=TID,
        spans=[
            Span(name="b", span_id="00000000000000b2", status_code="ERROR"),
            Span(name="a", span_id="00000000000000a1", kind="LLM", attributes=usage),
        ],
    )
    store.log(
        agent_name="a",
        trace_id=TID,
        token_usage=TokenUsage(prompt_tokens=1, completion_tokens=2),
        tool_calls=[ToolCall(tool_name="t", error="boom")],
    )
    store.close()

    with lmdb_env(store_path) as env:
        merges = env.open_db(b"merges", create=False)
        with env.begin(db=merges) as txn:
            entries = {bytes(k): bytes(v) for k, v in txn.cursor(db=merges)}
    assert list(entries) == [bytes.fromhex(TID)]
    state = parse_merge_state(entries[bytes.fromhex(TID)])
    assert state["tool_errors"] and state["cost"] is None
    assert state["tokens"] == {"prompt": 1, "completion": 2, "total": 3}
    assert state["spans"] == [
        {
            "id": "00000000000000a1",
            "error": False,
            "tokens": {"prompt": 7, "completion": 3},
            "cost": 0.5,
        },
        {"id": "00000000000000b2", "error": True},
    ]
    assert len(state["resend_keys"]) == 2 and all(len(k) == 16 for k in state["resend_keys"])

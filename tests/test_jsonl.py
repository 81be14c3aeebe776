"""Exporting traces as JSON Lines and importing them into another store."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from pathlib import Path
from typing import Any

import flightlog
import msgspec
import pytest
from flightlog import Span, Trace
from flightlog.jsonl import CHUNK, export_traces, import_traces
from flightlog.sample import standard_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _fill(path: Path, seed: int, count: int, fragments: int = 0) -> list[str]:
    """``count`` standard traces, the first ``fragments`` of them updated by a second log."""
    rng = random.Random(seed)
    with flightlog.open(path) as store:
        ids = [store.log(standard_trace(rng)) for _ in range(count)]
        store.flush()
        for trace_id in ids[:fragments]:
            agent = store.get(trace_id).agent_name
            store.log(
                trace_id=trace_id,
                agent_name=agent,
                status="failed",
                spans=[Span(name="retry", kind="TOOL", status_code="ERROR")],
            )
    return ids


def _export(path: Path, **filters: Any) -> bytes:
    out = io.BytesIO()
    with flightlog.open(path, readonly=True) as store:
        export_traces(store, out, **filters)
    return out.getvalue()


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), count=st.integers(0, 40), fragments=st.integers(0, 5))
def test_an_export_imported_into_an_empty_store_gives_the_same_traces(
    tmp_path_factory: pytest.TempPathFactory, seed: int, count: int, fragments: int
) -> None:
    base = tmp_path_factory.mktemp("jsonl")
    ids = _fill(base / "a", seed, count, fragments)

    with flightlog.open(base / "b") as copy:
        counts = import_traces(copy, io.BytesIO(_export(base / "a")))
    assert counts == (len(ids), 0)

    with flightlog.open(base / "a", readonly=True) as a, flightlog.open(base / "b") as b:
        assert b.count() == a.count() == len(ids)
        for trace_id in ids:
            assert b.get(trace_id) == a.get(trace_id)


def test_export_writes_one_json_trace_per_line_oldest_first(tmp_path: Path) -> None:
    _fill(tmp_path / "a", seed=1, count=25)
    lines = _export(tmp_path / "a").splitlines()

    traces = [json.loads(line) for line in lines]
    assert len(traces) == 25
    assert all(isinstance(t["trace_id"], str) and t["agent_name"] for t in traces)
    starts = [msgspec.json.decode(line, type=Trace).timestamp for line in lines]
    assert all(isinstance(start, dt.datetime) for start in starts)
    assert [str(s) for s in starts] == sorted(str(s) for s in starts)


def test_export_takes_the_query_filters(tmp_path: Path) -> None:
    _fill(tmp_path / "a", seed=2, count=60)
    with flightlog.open(tmp_path / "a", readonly=True) as store:
        agent = store.query(limit=1).items[0].agent_name
        expected = store.count(agent_name=agent)

    lines = _export(tmp_path / "a", agent_name=agent).splitlines()

    assert 0 < len(lines) == expected < 60
    assert {json.loads(line)["agent_name"] for line in lines} == {agent}


def test_export_pages_through_more_than_one_chunk(tmp_path: Path) -> None:
    ids = _fill(tmp_path / "a", seed=3, count=CHUNK + 7)
    progress: list[int] = []
    with flightlog.open(tmp_path / "a", readonly=True) as store:
        written = export_traces(store, io.BytesIO(), progress.append)

    assert written == len(ids)
    assert progress == [CHUNK, CHUNK + 7]


def test_importing_again_skips_every_trace_the_store_has(tmp_path: Path) -> None:
    ids = _fill(tmp_path / "a", seed=4, count=10, fragments=3)
    export = _export(tmp_path / "a")
    with flightlog.open(tmp_path / "b") as b:
        import_traces(b, io.BytesIO(export))
        b.flush()
        before = [b.get(trace_id) for trace_id in ids]

        assert import_traces(b, io.BytesIO(export)) == (0, 10)
        b.flush()
        assert [b.get(trace_id) for trace_id in ids] == before


def test_a_bad_line_is_refused_naming_the_line_and_field(tmp_path: Path) -> None:
    _fill(tmp_path / "a", seed=5, count=3)
    lines = _export(tmp_path / "a").splitlines()
    broken = json.loads(lines[1])
    broken["spans"][0]["name"] = 7
    lines[1] = json.dumps(broken).encode()

    with flightlog.open(tmp_path / "b") as b:
        with pytest.raises(flightlog.ValidationError) as info:
            import_traces(b, [b"", *lines])
        assert info.value.errors[0]["path"] == "line 3.spans[0].name"
        assert "Expected `str`, got `int`" in info.value.errors[0]["message"]
        b.flush()
        assert b.count() == 0


def test_what_the_core_refuses_is_named_by_line(tmp_path: Path) -> None:
    trace_id = "ab" * 16
    line = json.dumps(
        {
            "trace_id": trace_id,
            "agent_name": "a",
            "spans": [
                {
                    "name": "s",
                    "start_time": "2026-01-02T00:00:00Z",
                    "end_time": "2026-01-01T00:00:00Z",
                }
            ],
        }
    ).encode()

    with flightlog.open(tmp_path / "b") as b:
        with pytest.raises(flightlog.ValidationError) as info:
            import_traces(b, [b"\n", b"\n", line])
        assert info.value.errors[0]["path"] == "line 3.spans[0].end_time"
        b.flush()
        assert b.count() == 0


def test_a_line_without_a_trace_id_is_refused(tmp_path: Path) -> None:
    with flightlog.open(tmp_path / "b") as b, pytest.raises(flightlog.ValidationError) as info:
        import_traces(b, [b'{"agent_name": "a"}'])
    assert info.value.errors == [
        {"path": "line 1.trace_id", "message": "missing (every exported trace has one)"}
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), max_size=4))
def test_any_bytes_are_imported_or_refused_with_a_line_named(
    tmp_path: Path, lines: list[bytes]
) -> None:
    with flightlog.open(tmp_path / "fuzz") as store:
        before = store.count()
        try:
            import_traces(store, lines)
        except flightlog.ValidationError as exc:
            assert exc.errors and all(e["path"].startswith("line ") for e in exc.errors)
            store.flush()
            assert store.count() == before

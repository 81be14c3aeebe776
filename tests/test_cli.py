"""The ``flightlog`` command line, used the way a user would."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import flightlog
import pytest
from flightlog import TokenUsage, Trace
from flightlog.cli import main
from flightlog.sample import sample_traces


def _demo_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["demo", *args, "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One ``flightlog demo PATH --json`` run shared by the tests that only inspect it."""
    path = tmp_path_factory.mktemp("demo") / "store"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", str(path), "--json"]) == 0
    return path, json.loads(out.getvalue())


def _tokens(trace: Trace) -> int:
    usage = trace.token_usage
    assert isinstance(usage, TokenUsage) and isinstance(usage.total_tokens, int)
    return usage.total_tokens


def test_demo_stores_exactly_the_sample_traces_it_reports(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    path, summary = demo
    expected = sample_traces(300)
    ids = summary["trace_ids"]

    assert summary["traces"] == len(ids) == len(set(ids)) == len(expected)
    with flightlog.open(path, readonly=True) as store:
        stored = [store.get(trace_id) for trace_id in ids]
    for got, want in zip(stored, expected, strict=True):
        assert (got.agent_name, got.input, got.output, got.status) == (
            want.agent_name,
            want.input,
            want.output,
            want.status,
        )
        assert [s.span_id for s in got.spans] == [s.span_id for s in want.spans]


def test_demo_summary_is_computed_from_the_traces(demo: tuple[Path, dict[str, Any]]) -> None:
    path, summary = demo
    expected = sample_traces(300)
    failed = sum(t.status == "failed" for t in expected)

    assert summary["path"] == str(path)
    assert summary["agents"] == len({t.agent_name for t in expected})
    assert summary["spans"] == sum(len(t.spans) for t in expected)
    assert summary["tool_calls"] == sum(len(t.tool_calls) for t in expected)
    assert summary["failed"] == failed
    assert summary["error_rate"] == pytest.approx(failed / 300)
    assert summary["total_tokens"] == sum(_tokens(t) for t in expected)
    assert summary["cost_usd"] == pytest.approx(
        sum(t.cost_usd for t in expected if isinstance(t.cost_usd, float))
    )
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p95_ms"]
    assert summary["ingest_traces_per_s"] > 0 and summary["store_bytes"] > 0
    assert summary["shown_trace_id"] in summary["trace_ids"]


def test_demo_shows_a_failed_trace_as_a_span_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out

    assert str(tmp_path / "store") in out
    assert "300" in out and "failed" in out
    assert "AGENT" in out and "TOOL" in out and "LLM" in out
    assert "ERROR" in out and "tokens" in out


def test_demo_without_a_path_uses_a_new_temporary_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    summary = _demo_json(capsys)

    store = Path(summary["path"])
    assert store.parent == tmp_path and (store / "data.mdb").is_file()


def test_demo_without_rich_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # makes `import rich` fail

    assert main(["demo", str(tmp_path / "store")]) == 2
    assert "pip install 'flightlog[cli]'" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_demo_json_does_not_need_rich(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)

    assert _demo_json(capsys, str(tmp_path / "store"))["traces"] == 300


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_python_m_flightlog_demo_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flightlog", "demo", str(tmp_path / "store"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["traces"] == 300

"""The ``flightlog`` command line, used the way a user would."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import flightlog
import lmdb
import msgspec
import pytest
from flightlog import Span, TokenUsage, ToolCall, Trace
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


# --- ls, show, stats, rm, check, compact on a small known store ---------------------------------

T0 = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)


@dataclass
class Known:
    """A closed store of three traces: ``ok`` (oldest), ``failed`` and ``later`` (newest)."""

    path: Path
    ok: str
    failed: str
    later: str


@pytest.fixture
def known(tmp_path: Path) -> Known:
    llm = Span(
        name="chat gpt-4o",
        kind="LLM",
        parent_span_id="00f067aa0ba902b7",
        attributes={
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cost": 0.01,
        },
    )
    traces = [
        Trace(
            agent_name="support-bot",
            timestamp=T0,
            status="succeeded",
            latency_ms=812.5,
            cost_usd=0.01,
            token_usage=TokenUsage(prompt_tokens=1200, completion_tokens=300),
            tags=["prod"],
            spans=[Span(name="answer", kind="AGENT", span_id="00f067aa0ba902b7"), llm],
        ),
        Trace(
            agent_name="planner",
            timestamp=T0 + dt.timedelta(hours=1),
            status="failed",
            spans=[
                Span(
                    name="search",
                    kind="TOOL",
                    status_code="ERROR",
                    status_message="rate limit exceeded",
                )
            ],
            tool_calls=[ToolCall(tool_name="search", error="timeout after 30 s")],
        ),
        Trace(
            agent_name="planner",
            timestamp=T0 + dt.timedelta(hours=2),
            status="succeeded",
            run_id="run-1",
        ),
    ]
    path = tmp_path / "store"
    with flightlog.open(path) as store:
        ok, failed, later = store.log_many(traces)
    return Known(path, ok, failed, later)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Runs the command line in-process: exit status, stdout, stderr."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def ls_ids(capsys: pytest.CaptureFixture[str], known: Known, *args: str) -> list[str]:
    status, out, err = run(capsys, "ls", "--path", str(known.path), "--json", *args)
    assert status == 0, err
    return [item["trace_id"] for item in json.loads(out)]


def stored_ids(known: Known) -> set[str]:
    with flightlog.open(known.path, readonly=True) as store:
        return {s.trace_id for s in store.query()}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["later", "failed", "ok"]),
        (["--agent", "planner"], ["later", "failed"]),
        (["--agent", "planner", "--agent", "support-bot"], ["later", "failed", "ok"]),
        (["--status", "failed"], ["failed"]),
        (["--errors"], ["failed"]),
        (["--no-errors"], ["later", "ok"]),
        (["--tag", "prod"], ["ok"]),
        (["--run-id", "run-1"], ["later"]),
        (["--since", "2025-06-02T13:00:00Z", "--until", "2025-06-02T14:00:00Z"], ["failed"]),
        (["--since", str(int((T0 + dt.timedelta(hours=1)).timestamp()))], ["later", "failed"]),
        (["--limit", "1"], ["later"]),
        (["--agent", "nobody"], []),
    ],
)
def test_ls_json_lists_the_matching_traces_newest_first(
    capsys: pytest.CaptureFixture[str], known: Known, args: list[str], expected: list[str]
) -> None:
    assert ls_ids(capsys, known, *args) == [getattr(known, name) for name in expected]


def test_ls_json_items_are_trace_summaries(
    capsys: pytest.CaptureFixture[str], known: Known
) -> None:
    status, out, _ = run(capsys, "ls", "--path", str(known.path), "--json", "--tag", "prod")

    (item,) = json.loads(out)
    assert status == 0
    assert item["trace_id"] == known.ok and item["agent_name"] == "support-bot"
    assert item["timestamp"] == "2025-06-02T12:00:00Z"
    assert item["token_usage"]["total_tokens"] == 1500 and item["span_count"] == 2


def test_ls_since_accepts_an_age(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    with flightlog.open(known.path) as store:
        recent = store.log(agent_name="planner")

    assert ls_ids(capsys, known, "--since", "2h") == [recent]
    assert ls_ids(capsys, known, "--until", "90m", "--agent", "planner") == [
        known.later,
        known.failed,
    ]


def test_ls_prints_a_table_that_fits_the_terminal(
    capsys: pytest.CaptureFixture[str], known: Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    status, narrow, _ = run(capsys, "ls", "--path", str(known.path))
    monkeypatch.setenv("COLUMNS", "160")
    _, wide, _ = run(capsys, "ls", "--path", str(known.path))

    assert status == 0
    assert "3 traces, newest first" in narrow
    for text in (known.ok, known.failed, known.later, "support-bot", "planner", "failed"):
        assert text in narrow and text in wide
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "812 ms" in wide and "$0.0100" in wide and "1,500" in wide


def test_ls_reads_the_store_named_by_flightlog_path(
    capsys: pytest.CaptureFixture[str], known: Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLIGHTLOG_PATH", str(known.path))

    status, out, _ = run(capsys, "ls", "--json")

    assert status == 0 and len(json.loads(out)) == 3


def test_ls_without_a_store_exits_1_and_creates_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(capsys, "ls", "--path", str(tmp_path / "missing"))

    assert status == 1 and "no store" in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--since", "yesterday"], "since"),
        (["--until", "soon"], "until"),
        (["--limit", "0"], "limit"),
    ],
)
def test_ls_with_a_bad_value_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], known: Known, args: list[str], named: str
) -> None:
    status, out, err = run(capsys, "ls", "--path", str(known.path), *args)

    assert status == 2 and out == ""
    assert f"{named}:" in err


def test_ls_without_rich_exits_2_but_json_still_works(
    capsys: pytest.CaptureFixture[str], known: Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)

    assert run(capsys, "ls", "--path", str(known.path))[0] == 2
    assert len(ls_ids(capsys, known)) == 3


def test_show_draws_the_span_tree_with_errors_in_red(
    capsys: pytest.CaptureFixture[str], known: Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")

    status, out, _ = run(capsys, "show", known.failed, "--path", str(known.path))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)

    assert status == 0
    assert f"trace {known.failed} planner failed" in plain
    assert "TOOL    search" in plain
    assert "ERROR rate limit exceeded" in plain
    assert "tool search failed: timeout after 30 s" in plain
    assert re.search(r"\x1b\[1;31m\s*ERROR rate limit exceeded", out), "the span error is red"


def test_show_lists_durations_tokens_and_cost(
    capsys: pytest.CaptureFixture[str], known: Known
) -> None:
    status, out, _ = run(capsys, "show", known.ok, "--path", str(known.path))

    assert status == 0
    assert "AGENT   answer" in out and "LLM     chat gpt-4o" in out
    assert "1,200 -> 300 tokens" in out and "$0.0100" in out
    assert "812 ms" in out and "1,200 -> 300 (1,500 total)" in out
    assert "2025-06-02 12:00:00.000+00:00" in out and "prod" in out


def test_show_json_is_the_stored_trace(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(capsys, "show", known.failed, "--path", str(known.path), "--json")

    assert status == 0
    with flightlog.open(known.path, readonly=True) as store:
        assert msgspec.json.decode(out, type=Trace) == store.get(known.failed)


@pytest.mark.parametrize(("trace_id", "expected"), [("0" * 31 + "1", 1), ("nothex", 2)])
def test_show_of_an_unknown_or_malformed_id_fails(
    capsys: pytest.CaptureFixture[str], known: Known, trace_id: str, expected: int
) -> None:
    status, out, err = run(capsys, "show", trace_id, "--path", str(known.path))

    assert status == expected and out == ""
    assert trace_id in err


def test_stats_json_counts_and_groups(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(
        capsys, "stats", "--path", str(known.path), "--json", "--group-by", "agent_name"
    )

    stats = json.loads(out)
    assert status == 0
    assert (stats["count"], stats["error_count"], stats["total_tokens"]) == (3, 1, 1500)
    assert stats["latency_p50_ms"] == 812.5 and stats["mean_cost_usd"] == 0.01
    assert stats["top_agents"] == [["planner", 2], ["support-bot", 1]]
    assert {name: group["count"] for name, group in stats["groups"].items()} == {
        "planner": 2,
        "support-bot": 1,
    }
    assert stats["per_hour"] == {
        "2025-06-02T12:00:00Z": 1,
        "2025-06-02T13:00:00Z": 1,
        "2025-06-02T14:00:00Z": 1,
    }


def test_stats_takes_the_filter_options(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(capsys, "stats", "--path", str(known.path), "--json", "--errors")

    assert status == 0 and json.loads(out)["count"] == 1


def test_stats_prints_tables(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(capsys, "stats", "--path", str(known.path), "--group-by", "status")

    assert status == 0
    assert "Matching traces" in out and "1 (33.3%)" in out and "812 / 812 / 812 ms" in out
    assert "Busiest agents" in out and "By status" in out and "succeeded" in out


def test_rm_deletes_the_given_traces(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(capsys, "rm", known.ok, known.failed, "--path", str(known.path))

    assert status == 0 and "deleted 2 traces" in out
    assert stored_ids(known) == {known.later}


def test_rm_of_a_missing_trace_exits_1_and_names_it(
    capsys: pytest.CaptureFixture[str], known: Known
) -> None:
    assert run(capsys, "rm", known.ok, "--path", str(known.path))[0] == 0

    status, out, err = run(capsys, "rm", known.ok, known.later, "--path", str(known.path), "--json")

    assert status == 1 and f"no trace {known.ok}" in err
    assert json.loads(out) == {"deleted": 1, "missing": [known.ok]}
    assert stored_ids(known) == {known.failed}


def test_rm_where_deletes_every_match(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(
        capsys, "rm", "--where", "--agent", "planner", "--path", str(known.path), "--json"
    )

    assert status == 0 and json.loads(out)["deleted"] == 2
    assert stored_ids(known) == {known.ok}


@pytest.mark.parametrize(
    "args",
    [[], ["--where"], ["--agent", "planner"], ["--where", "--agent", "planner", "ID"], ["nothex"]],
    ids=["nothing", "where-without-filters", "filters-without-where", "both", "malformed-id"],
)
def test_rm_refuses_an_unclear_request_and_deletes_nothing(
    capsys: pytest.CaptureFixture[str], known: Known, args: list[str]
) -> None:
    args = [known.ok if arg == "ID" else arg for arg in args]

    status, _, err = run(capsys, "rm", *args, "--path", str(known.path))

    assert status == 2 and err.startswith("flightlog: ")
    assert stored_ids(known) == {known.ok, known.failed, known.later}


def test_check_of_a_sound_store_exits_0(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, out, _ = run(capsys, "check", "--path", str(known.path))
    assert status == 0 and "checked 3 traces, 3 records" in out and out.endswith("ok\n")

    status, out, _ = run(capsys, "check", "--path", str(known.path), "--json")
    report = json.loads(out)
    assert status == 0 and report["ok"] is True and report["problems"] == []
    assert (report["traces"], report["records"]) == (3, 3)


def test_check_of_a_damaged_store_lists_problems_and_exits_1(
    capsys: pytest.CaptureFixture[str], known: Known
) -> None:
    env = lmdb.open(str(known.path), max_dbs=16)
    try:
        summaries = env.open_db(b"summaries", create=False)
        with env.begin(write=True) as txn:
            assert txn.delete(bytes.fromhex(known.failed), db=summaries)
    finally:
        env.close()

    status, out, _ = run(capsys, "check", "--path", str(known.path), "--json")

    report = json.loads(out)
    assert status == 1 and report["ok"] is False
    assert any(known.failed in problem for problem in report["problems"])
    status, out, _ = run(capsys, "check", "--path", str(known.path))
    assert status == 1 and "problem: " in out


def test_compact_writes_a_copy_with_the_same_traces(
    capsys: pytest.CaptureFixture[str], known: Known, tmp_path: Path
) -> None:
    dest = tmp_path / "compacted"

    status, out, _ = run(capsys, "compact", str(dest), "--path", str(known.path), "--json")

    assert status == 0
    assert json.loads(out)["dest"] == str(dest) and json.loads(out)["dest_bytes"] > 0
    with flightlog.open(dest, readonly=True) as copy:
        assert {s.trace_id for s in copy.query()} == stored_ids(known)
        assert copy.check().ok


def test_compact_into_a_non_empty_directory_exits_1(
    capsys: pytest.CaptureFixture[str], known: Known, tmp_path: Path
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")

    status, _, err = run(capsys, "compact", str(tmp_path / "busy"), "--path", str(known.path))

    assert status == 1 and "not empty" in err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_export_then_import_copies_the_traces(
    capsys: pytest.CaptureFixture[str], known: Known, tmp_path: Path
) -> None:
    export = tmp_path / "traces.jsonl"

    status, _, err = run(capsys, "export", "--path", str(known.path), "-o", str(export))
    assert status == 0 and "exported 3 traces" in err
    status, _, err = run(capsys, "import", str(export), "--path", str(tmp_path / "copy"))
    assert status == 0 and "imported 3 traces (0 already present)" in err
    status, out, _ = run(capsys, "import", str(export), "--path", str(tmp_path / "copy"), "--json")
    assert status == 0 and json.loads(out) == {"logged": 0, "skipped": 3}

    copy = flightlog.open(tmp_path / "copy", readonly=True)
    with copy, flightlog.open(known.path, readonly=True) as source:
        for trace_id in (known.ok, known.failed, known.later):
            assert copy.get(trace_id) == source.get(trace_id)


def test_export_writes_stdout_filtered_oldest_first(
    capsys: pytest.CaptureFixture[str], known: Known, tmp_path: Path
) -> None:
    out = io.BytesIO()
    fake_stdout = io.TextIOWrapper(out)
    with contextlib.redirect_stdout(fake_stdout):
        status = main(["export", "--path", str(known.path), "--agent", "planner"])
        fake_stdout.flush()

    assert status == 0
    assert [json.loads(line)["trace_id"] for line in out.getvalue().splitlines()] == [
        known.failed,
        known.later,
    ]


def test_import_of_a_bad_file_exits_2_naming_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trace_id": "' + "ab" * 16 + '", "agent_name": 5}\n')

    status, _, err = run(capsys, "import", str(bad), "--path", str(tmp_path / "b"))

    assert status == 2 and "line 1.agent_name" in err
    with flightlog.open(tmp_path / "b", readonly=True) as store:
        assert store.count() == 0


def test_import_of_a_missing_file_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(capsys, "import", str(tmp_path / "nope.jsonl"), "--path", str(tmp_path))
    assert status == 1 and "cannot read" in err


def test_tail_prints_new_traces_and_their_status_changes(tmp_path: Path) -> None:
    path = tmp_path / "live"
    with flightlog.open(path) as store:
        trace_id = store.log(agent_name="live-bot", input="hi", status="running")
    command = [sys.executable, "-m", "flightlog", "tail", "--path", str(path), "--json"]
    with subprocess.Popen(
        [*command, "-n", "2", "--interval", "0.05"], stdout=subprocess.PIPE, text=True
    ) as tail:
        try:
            assert tail.stdout is not None
            first = _line_within(tail.stdout, seconds=60)
            with flightlog.open(path) as store:
                store.log(trace_id=trace_id, agent_name="live-bot", status="succeeded")
            second = _line_within(tail.stdout, seconds=60)
            assert tail.wait(timeout=60) == 0
        finally:
            tail.kill()

    assert [(line["trace_id"], line["status"]) for line in map(json.loads, [first, second])] == [
        (trace_id, "running"),
        (trace_id, "succeeded"),
    ]


def _line_within(stream: IO[str], seconds: float) -> str:
    """The next line of a child's output; fails the test instead of hanging."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"no output within {seconds} s"
    return stream.readline()


def test_tail_refuses_a_time_window(capsys: pytest.CaptureFixture[str], known: Known) -> None:
    status, _, err = run(capsys, "tail", "--path", str(known.path), "--since", "1h")
    assert status == 2 and "tail follows new traces" in err


@pytest.mark.parametrize("args", [["--interval", "0"], ["--lag", "soon"], ["--lag", "inf"]])
def test_tail_refuses_an_age_that_is_not_positive(
    capsys: pytest.CaptureFixture[str], known: Known, args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["tail", "--path", str(known.path), *args])
    assert exited.value.code == 2
    assert "expected a positive age like 30s or 2m" in capsys.readouterr().err


@pytest.fixture
def decided(tmp_path: Path) -> tuple[Path, str]:
    """A store holding one committed decision of ``order-bot`` and one of ``planner``."""
    path = tmp_path / "decisions"
    with flightlog.open(path) as store:
        with store.open_decision("order-bot", "customer.order.create", "autonomous") as d:
            d.read(product="pg_customers_v1", purpose="order_validation")
            d.evaluate(policy_id="order_validation_v1", outcome="allow")
            d.write(product="pg_orders_v1", purpose="order_creation", mutation_summary={"rows": 1})
        store.open_decision("planner", "plan.trip", "propose")
    return path, d.decision_id


def test_decision_prints_the_envelope_events_in_order_and_the_chain_status(
    capsys: pytest.CaptureFixture[str], decided: tuple[Path, str]
) -> None:
    path, decision_id = decided
    status, out, _ = run(
        capsys, "decision", decision_id, "--agent", "order-bot", "--path", str(path)
    )

    assert status == 0
    assert decision_id in out and "customer.order.create" in out and "committed" in out
    order = [out.index(word) for word in (" open ", " read ", " evaluate ", " write ", " close ")]
    assert order == sorted(order)
    assert 'mutation_summary={"rows": 1}' in out and "outcome=allow" in out
    assert "hash chain intact (5 events)" in out


def test_decision_json_carries_the_trace_and_the_chain_status(
    capsys: pytest.CaptureFixture[str], decided: tuple[Path, str]
) -> None:
    path, decision_id = decided
    args = ("decision", decision_id, "--agent", "order-bot", "--path", str(path), "--json")
    status, out, _ = run(capsys, *args)

    shown = json.loads(out)
    assert status == 0 and shown["chain_intact"] is True
    assert [e["type"] for e in shown["decision"]["events"]][1:4] == ["read", "evaluate", "write"]


def test_decision_of_a_changed_store_reports_a_broken_chain_and_exits_1(
    capsys: pytest.CaptureFixture[str], decided: tuple[Path, str]
) -> None:
    path, decision_id = decided
    env = lmdb.open(str(path), max_dbs=16)
    try:
        events = env.open_db(b"decision_events", create=False)
        with env.begin(write=True, db=events) as txn:
            for key, value in txn.cursor():
                if b"pg_orders_v1" in value:
                    txn.put(key, value.replace(b"pg_orders_v1", b"pg_orders_v2"))
    finally:
        env.close()

    status, out, _ = run(
        capsys, "decision", decision_id, "--agent", "order-bot", "--path", str(path)
    )

    assert status == 1 and "hash chain BROKEN" in out


def test_decision_for_another_agent_is_denied(
    capsys: pytest.CaptureFixture[str], decided: tuple[Path, str]
) -> None:
    path, decision_id = decided
    status, out, err = run(
        capsys, "decision", decision_id, "--agent", "planner", "--path", str(path)
    )

    assert status == 1 and out == ""
    assert "may not access" in err and "customer.order" not in err


def test_decisions_lists_only_the_agents_decisions(
    capsys: pytest.CaptureFixture[str], decided: tuple[Path, str]
) -> None:
    path, decision_id = decided
    status, out, _ = run(capsys, "decisions", "--agent", "order-bot", "--path", str(path), "--json")

    assert status == 0
    assert [d["decision_id"] for d in json.loads(out)] == [decision_id]
    status, out, _ = run(capsys, "decisions", "--agent", "planner", "--path", str(path))
    assert status == 0 and "1 decisions, newest first" in out and "plan.trip" in out
    status, out, _ = run(
        capsys, "decisions", "--agent", "planner", "--status", "committed", "--path", str(path)
    )
    assert status == 0 and "no decisions match" in out

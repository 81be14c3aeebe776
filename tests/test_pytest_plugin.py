"""The pytest plugin (SPEC §7) from a user's side: pytest sessions run with ``pytester`` and
the store they leave behind, read through flightlog's API and ``flightlog tests``.

Most sessions run in this process (fast); the ones that must not share it (import costs, a
process that dies, xdist workers) run in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flightlog
import msgspec
import pytest
from flightlog import Trace
from flightlog.cli import main
from flightlog.testruns import find_run, nodeid_key
from hypothesis import given, settings
from hypothesis import strategies as st

pytest_plugins = ["pytester"]

OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2


class Recorded:
    """What the newest recorded session left in its store."""

    def __init__(self, store: Path) -> None:
        with flightlog.open(store, readonly=True) as opened:
            (run,) = opened.query(agent_name="pytest-run", limit=1)  # the newest
            self.run = opened.get(run.trace_id)
            items = opened.query(agent_name="pytest", run_id=str(run.run_id), limit=1000).items
            self.tests = {str(t.input): t for t in (opened.get(i.trace_id) for i in items)}

    def test(self, name: str) -> Trace:
        """The trace of the one test whose node id ends with ``::name``."""
        (found,) = [t for nodeid, t in self.tests.items() if nodeid.endswith(f"::{name}")]
        return found


def record(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Recorded]:
    """Runs pytest in this process with recording into ``<pytester dir>/store``."""
    store = pytester.path / "store"
    result = pytester.runpytest(f"--flightlog={store}", "-p", "no:cacheprovider", *args)
    return result, Recorded(store)


def record_subprocess(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Recorded]:
    """Like :func:`record`, in a new interpreter."""
    store = pytester.path / "store"
    result = subprocess_run(pytester, f"--flightlog={store}", *args)
    return result, Recorded(store)


def subprocess_run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a new interpreter, without the plugins these sessions do not use (hypothesis
    alone takes a third of a second to import); xdist is loaded when ``-n`` asks for it."""
    plugins = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    if "-n" not in args:
        plugins += ["-p", "no:xdist"]
    return pytester.runpytest_subprocess(*plugins, *args)


def pytest_counts(result: pytest.RunResult) -> dict[str, int]:
    """pytest's own totals, with the run trace's category names."""
    names = {"errors": "error", "warnings": "warnings"}
    return {names.get(k, k): v for k, v in result.parseoutcomes().items()}


OUTCOMES = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

@pytest.fixture
def bad_teardown():
    yield
    raise ValueError("teardown broke")

def test_passes():
    pass

def test_fails():
    assert 1 + 1 == 3, "arithmetic"

def test_setup_errors(broken):
    pass

def test_teardown_errors(bad_teardown):
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known bug", strict=False)
def test_xfails():
    raise KeyError("missing")

@pytest.mark.xfail(reason="fixed already", strict=False)
def test_xpasses():
    pass
"""

# name -> (status, outcome tag, phases with the span status of each)
EXPECTED = {
    "test_passes": ("succeeded", "passed", {"setup": "OK", "call": "OK", "teardown": "OK"}),
    "test_fails": ("failed", "failed", {"setup": "OK", "call": "ERROR", "teardown": "OK"}),
    "test_setup_errors": ("failed", "error", {"setup": "ERROR", "teardown": "OK"}),
    "test_teardown_errors": (
        "failed",
        "error",
        {"setup": "OK", "call": "OK", "teardown": "ERROR"},
    ),
    "test_skipped": ("succeeded", "skipped", {"setup": "OK", "teardown": "OK"}),
    "test_xfails": ("succeeded", "xfailed", {"setup": "OK", "call": "OK", "teardown": "OK"}),
    "test_xpasses": ("succeeded", "xpassed", {"setup": "OK", "call": "OK", "teardown": "OK"}),
}


@pytest.fixture
def outcomes(pytester: pytest.Pytester) -> tuple[pytest.RunResult, Recorded]:
    """One recorded session with a test of every outcome."""
    pytester.makepyfile(test_outcomes=OUTCOMES)
    return record(pytester)


def test_every_outcome_is_one_finished_trace_with_its_phase_spans(
    outcomes: tuple[pytest.RunResult, Recorded],
) -> None:
    _, recorded = outcomes

    assert len(recorded.tests) == len(EXPECTED)
    for name, (status, outcome, phases) in EXPECTED.items():
        trace = recorded.test(name)
        root, *spans = trace.spans
        assert (trace.agent_name, trace.status, trace.tags) == ("pytest", status, [outcome]), name
        assert trace.metadata["outcome"] == outcome
        assert root.name == trace.input and root.attributes == {"pytest.outcome": outcome}
        assert {s.name: s.status_code for s in spans} == phases, name
        assert all(s.parent_span_id == root.span_id for s in spans)
        durations = [s.duration_ms for s in spans]
        assert all(isinstance(d, float) and d >= 0 for d in durations)
        # latency is pytest's own phase durations (the spans' are rounded to microseconds)
        assert trace.latency_ms == pytest.approx(sum(durations), abs=0.01)  # type: ignore[arg-type]


def test_a_failure_records_its_phase_type_and_message(
    outcomes: tuple[pytest.RunResult, Recorded],
) -> None:
    _, recorded = outcomes

    errors = {name: recorded.test(name).metadata.get("error") for name in EXPECTED}
    assert errors["test_fails"] == {
        "phase": "call",
        "type": "AssertionError",
        "message": "arithmetic\nassert (1 + 1) == 3",
    }
    assert errors["test_setup_errors"] == {
        "phase": "setup",
        "type": "RuntimeError",
        "message": "fixture broke",
    }
    assert errors["test_teardown_errors"] == {
        "phase": "teardown",
        "type": "ValueError",
        "message": "teardown broke",
    }
    assert {name for name, error in errors.items() if error} == {
        "test_fails",
        "test_setup_errors",
        "test_teardown_errors",
    }
    call = recorded.test("test_fails").spans[2]
    assert call.status_message == "AssertionError: arithmetic\nassert (1 + 1) == 3"
    (event,) = call.events
    assert event.name == "exception" and event.attributes["exception.type"] == "AssertionError"
    assert "test_outcomes.py:" in event.attributes["exception.stacktrace"]


def test_skip_and_xfail_reasons_are_recorded(outcomes: tuple[pytest.RunResult, Recorded]) -> None:
    _, recorded = outcomes

    assert recorded.test("test_skipped").metadata["reason"] == "not today"
    xfailed = recorded.test("test_xfails")
    assert xfailed.metadata["reason"] == "known bug"
    (event,) = xfailed.spans[2].events  # the expected exception, on a span that is not an error
    assert event.attributes["exception.type"] == "KeyError"


def test_the_run_trace_counts_what_pytest_counts(
    outcomes: tuple[pytest.RunResult, Recorded],
) -> None:
    result, recorded = outcomes
    run = recorded.run

    assert run.metadata["counts"] == pytest_counts(result)
    assert run.metadata["exit_status"] == result.ret == 1
    result.stdout.fnmatch_lines(
        [f"flightlog: recording run {run.run_id} into *store", f"flightlog: run {run.run_id} *"]
    )
    assert (run.agent_name, run.status) == ("pytest-run", "failed")
    assert run.output == (
        "1 failed, 2 passed, 1 skipped, 1 xfailed, 1 xpassed, 2 errors (exit status 1)"
    )
    assert {t.run_id for t in recorded.tests.values()} == {run.run_id}
    assert isinstance(run.latency_ms, float) and run.latency_ms > 0


def test_the_run_trace_describes_the_session(
    outcomes: tuple[pytest.RunResult, Recorded],
) -> None:
    _, recorded = outcomes
    meta = recorded.run.metadata

    assert meta["args"][0].startswith("--flightlog=")
    assert recorded.run.input == "pytest " + " ".join(meta["args"])
    assert {"python", "implementation", "platform", "pytest", "rootdir"} <= meta.keys()
    assert "git" not in meta  # pytester's directory is not a repository


def test_a_test_records_where_it_is_its_markers_and_parameters(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_where="""
        import pytest

        @pytest.mark.slow
        @pytest.mark.parametrize("n, word", [(1, "one"), (2.5, None)])
        def test_numbers(n, word):
            pass
        """
    )
    _, recorded = record(pytester)

    trace = recorded.test("test_numbers[1-one]")
    assert trace.input == trace.request_id == "test_where.py::test_numbers[1-one]"
    meta = trace.metadata
    assert (meta["file"], meta["line"], meta["function"]) == (
        "test_where.py",
        3,  # pytest's location of a decorated function: its first decorator
        "test_numbers[1-one]",
    )
    assert meta["markers"] == ["parametrize", "slow"]
    assert meta["params"] == {"n": 1, "word": "one"}
    assert recorded.test("test_numbers[2.5-None]").metadata["params"] == {"n": 2.5, "word": None}
    assert "worker" not in meta


def test_secrets_in_errors_and_parameters_are_redacted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_secret=f"""
        import pytest

        @pytest.mark.parametrize("key", ["{OPENAI_KEY}"])
        def test_leaks(key):
            raise RuntimeError("bad key " + key)
        """
    )
    _, recorded = record(pytester)
    store = pytester.path / "store"

    (trace,) = recorded.tests.values()
    assert trace.metadata["error"]["message"] == "bad key [REDACTED:openai_api_key]"
    assert trace.request_id == "test_secret.py::test_leaks[[REDACTED:openai_api_key]]"
    assert trace.metadata["params"] == {"key": "[REDACTED:openai_api_key]"}
    assert trace.metadata["param_id"] == "[REDACTED:openai_api_key]"
    assert all(OPENAI_KEY.encode() not in f.read_bytes() for f in store.iterdir())


def test_parameters_of_any_type_are_recorded_without_breaking_the_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_odd="""
        import math
        import pytest

        class BrokenRepr:
            def __repr__(self):
                raise RuntimeError("no repr")

        class BrokenStr(Exception):
            def __str__(self):
                raise RuntimeError("no str")

        def test_raises_what_cannot_be_shown():
            raise BrokenStr()

        @pytest.mark.parametrize(
            "value",
            [math.nan, math.inf, b"\\x00\\xff", BrokenRepr(), "x" * 10_000, {"a": [1]}, "\\ud800"],
        )
        def test_value(value):
            pass
        """
    )
    result, recorded = record(pytester)

    result.assert_outcomes(passed=7, failed=1)
    failed = recorded.test("test_raises_what_cannot_be_shown")
    assert failed.metadata["error"] == {
        "phase": "call",
        "type": "BrokenStr",
        "message": "<BrokenStr>",
    }
    params = [t.metadata["params"]["value"] for t in recorded.tests.values() if t is not failed]
    assert sorted(map(str, params)) == sorted(
        [
            "nan",
            "inf",
            "b'\\x00\\xff'",
            "<BrokenRepr>",
            "x" * 199 + "…",
            "{'a': [1]}",
            "\\ud800",  # a lone surrogate is not UTF-8: kept as its escape
        ]
    )
    assert recorded.run.metadata["counts"] == {"passed": 7, "failed": 1}


def test_a_test_is_stored_as_running_while_it_runs(pytester: pytest.Pytester) -> None:
    store = pytester.path / "store"
    pytester.makepyfile(
        test_inside=f"""
        import flightlog

        def test_sees_itself(request):
            with flightlog.open({str(store)!r}, readonly=True) as store:
                (me,) = store.query(agent_name="pytest", status="running").items
                trace = store.get(me.trace_id)
            assert trace.input == request.node.nodeid
            assert [s.name for s in trace.spans] == [request.node.nodeid, "setup"]
        """
    )
    result, recorded = record(pytester)

    result.assert_outcomes(passed=1)
    assert recorded.test("test_sees_itself").status == "succeeded"


def test_a_session_that_dies_inside_a_test_leaves_it_running(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_dies="""
        import os

        def test_before():
            pass

        def test_dies():
            os._exit(3)
        """
    )
    result, recorded = record_subprocess(pytester)

    assert result.ret == 3
    assert recorded.run.status == "running"
    assert recorded.test("test_before").status == "succeeded"
    died = recorded.test("test_dies")
    assert died.status == "running" and died.tags == []
    assert [s.name for s in died.spans] == ["test_dies.py::test_dies", "setup"]
    assert died.request_id == "test_dies.py::test_dies"


XDIST_TESTS = """
import os
import pytest

@pytest.mark.parametrize("n", range(20))
def test_many(n):
    assert n % 7 != 5

@pytest.mark.parametrize("n", range(3))
def test_skips(n):
    pytest.skip("later")

def test_kills_its_worker():
    os._exit(1)
"""


def test_xdist_workers_record_every_test_and_counts_match_pytest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_spread=XDIST_TESTS)
    result, recorded = record_subprocess(pytester, "-n", "2")

    assert recorded.run.metadata["counts"] == pytest_counts(result)
    assert recorded.run.metadata["counts"] == {"passed": 17, "failed": 4, "skipped": 3}
    assert recorded.run.metadata["workers"] == 2
    finished = [t for t in recorded.tests.values() if t.status != "running"]
    assert len(finished) == 23 and len(recorded.tests) == 24
    workers = {t.metadata["worker"] for t in recorded.tests.values()}
    assert {"gw0", "gw1"} <= workers  # and gw2 when the killed worker's stand-in ran tests
    assert all(worker.startswith("gw") for worker in workers)
    assert {t.run_id for t in recorded.tests.values()} == {recorded.run.run_id}
    died = recorded.test("test_kills_its_worker")
    assert died.status == "running" and [s.name for s in died.spans][1:] == ["setup"]


@pytest.mark.parametrize(
    ("args", "loaded"),
    [((), False), (("--flightlog=store",), True)],
    ids=["off", "on"],
)
def test_the_plugin_loads_the_store_only_when_enabled(
    pytester: pytest.Pytester, args: tuple[str, ...], loaded: bool
) -> None:
    pytester.makepyfile(
        test_modules=f"""
        import sys

        def test_modules():
            assert "flightlog.pytest_plugin" in sys.modules
            assert ("flightlog._core" in sys.modules) is {loaded}
            assert ("msgspec" in sys.modules) is {loaded}
        """
    )
    result = subprocess_run(pytester, *args)

    result.assert_outcomes(passed=1)
    assert (pytester.path / "store").exists() is loaded
    assert not (pytester.path / ".flightlog").exists()


def test_ini_options_enable_recording_into_a_path_relative_to_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nflightlog = true\nflightlog_path = records/flight\n")
    pytester.makepyfile(test_one="def test_one(): pass")
    monkeypatch.chdir(pytester.mkdir("elsewhere"))

    result = pytester.runpytest(pytester.path, "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    recorded = Recorded(pytester.path / "records" / "flight")
    assert recorded.test("test_one").status == "succeeded"


def test_without_a_path_it_records_into_flightlog_path(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLIGHTLOG_PATH", str(pytester.path / "from-env"))
    pytester.makepyfile(test_one="def test_one(): pass")

    pytester.runpytest("--flightlog", "-p", "no:cacheprovider").assert_outcomes(passed=1)

    assert Recorded(pytester.path / "from-env").test("test_one").status == "succeeded"


def test_a_store_that_cannot_be_opened_is_a_usage_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "file").write_text("not a directory")
    pytester.makepyfile(test_one="def test_one(): pass")

    result = pytester.runpytest("--flightlog=file/store", "-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*flightlog: cannot open the store at *file/store*"])


@pytest.mark.usefixtures("no_default_store")
def test_a_failure_to_record_is_reported_and_does_not_change_the_outcome(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_closes="""
        import flightlog

        def test_closes_the_default_store():
            flightlog.default_store().close()  # the plugin's own store, as none was set

        def test_after():
            pass
        """
    )
    result = pytester.runpytest("--flightlog=store", "-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["flightlog: * records could not be written; the first: StoreClosed: *"]
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs a git binary")
def test_the_run_records_the_git_commit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one(): pass")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q", "-b", "trunk"], ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run([*git, *command], cwd=pytester.path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=pytester.path, capture_output=True, text=True
    ).stdout.strip()

    _, recorded = record(pytester)

    assert recorded.run.metadata["git"] == {"commit": head, "branch": "trunk"}


def test_without_a_git_binary_the_commit_is_left_out(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_one="def test_one(): pass")
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))

    result, recorded = record(pytester)

    result.assert_outcomes(passed=1)
    assert "git" not in recorded.run.metadata and recorded.run.status == "succeeded"


# --- agent code under test: flightlog_trace and the default store ------------------------------

AGENT = """
import flightlog

def answer(question, prompt, completion, cost):
    with flightlog.trace(agent_name="support-bot", input=question) as t:
        with t.span("chat", kind="LLM"):
            pass
        t.usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost)
        t.output = "ok"
    return t.trace_id
"""


@pytest.fixture
def no_default_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No default store configured, as in a fresh test process (the one this session may
    have is restored afterwards)."""
    monkeypatch.delenv("FLIGHTLOG_PATH", raising=False)
    try:
        previous: flightlog.Store | None = flightlog.default_store()
    except flightlog.NoDefaultStore:
        previous = None
    flightlog.set_default_store(None)
    yield
    flightlog.set_default_store(previous)


def agent_traces(store: Path) -> dict[str, Trace]:
    """The non-pytest traces of a store, by trace id."""
    with flightlog.open(store, readonly=True) as opened:
        items = opened.query(agent_name="support-bot", limit=1000).items
        return {item.trace_id: opened.get(item.trace_id) for item in items}


@pytest.mark.usefixtures("no_default_store")
def test_traces_logged_during_a_test_carry_its_run_and_add_up_on_its_trace(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        agent=AGENT,
        test_agent="""
        from agent import answer

        def test_asks_twice():
            answer("a", 100, 20, 0.002)
            answer("b", 50, 10, 0.001)

        def test_asks_nothing():
            pass
        """,
    )
    result, recorded = record(pytester)

    result.assert_outcomes(passed=2)
    logged = agent_traces(pytester.path / "store")
    assert len(logged) == 2
    assert {t.run_id for t in logged.values()} == {recorded.run.run_id}
    asks = recorded.test("test_asks_twice")
    assert asks.token_usage == flightlog.TokenUsage(
        prompt_tokens=150, completion_tokens=30, total_tokens=180
    )
    assert asks.cost_usd == pytest.approx(0.003)
    assert sorted(asks.metadata["agent_traces"]) == sorted(logged)
    nothing = recorded.test("test_asks_nothing")
    assert nothing.token_usage is flightlog.UNSET and "agent_traces" not in nothing.metadata
    assert recorded.run.token_usage == asks.token_usage
    with pytest.raises(flightlog.NoDefaultStore):
        flightlog.default_store()  # the plugin's store was the default for the session only


@pytest.mark.usefixtures("no_default_store")
def test_a_default_store_the_test_suite_sets_is_followed(pytester: pytest.Pytester) -> None:
    own = pytester.path / "own"
    pytester.makepyfile(agent=AGENT)
    pytester.makeconftest(
        f"""
        import flightlog
        import pytest

        @pytest.fixture(autouse=True)
        def own_store():
            with flightlog.open({str(own)!r}) as store:
                flightlog.set_default_store(store)
                yield
                flightlog.set_default_store(None)
        """
    )
    pytester.makepyfile(
        test_agent="""
        from agent import answer

        def test_asks():
            answer("a", 7, 3, 0.25)
        """
    )
    _, recorded = record(pytester)

    (logged,) = agent_traces(own).values()
    assert logged.run_id == recorded.run.run_id
    asks = recorded.test("test_asks")
    assert asks.token_usage == flightlog.TokenUsage(
        prompt_tokens=7, completion_tokens=3, total_tokens=10
    )
    assert asks.metadata["agent_traces"] == [logged.trace_id]
    assert agent_traces(pytester.path / "store") == {}


@pytest.mark.usefixtures("no_default_store")
def test_flightlog_trace_records_into_the_tests_own_trace(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        agent=AGENT,
        test_fixture="""
        import flightlog
        from agent import answer

        def test_uses_it(flightlog_trace):
            assert flightlog.current_trace() is flightlog_trace
            with flightlog_trace.span("retrieve", kind="RETRIEVER") as span:
                span.set(hits=3)
            flightlog_trace.tool_call("search", input={"q": "x"}, output=["a"])
            flightlog_trace.usage(prompt_tokens=5, completion_tokens=1, cost_usd=0.5)
            answer("a", 10, 2, 0.25)
            assert False, "fails after all"
        """,
    )
    result, recorded = record(pytester)

    result.assert_outcomes(failed=1)
    trace = recorded.test("test_uses_it")
    assert trace.status == "failed" and trace.tags == ["failed"]
    spans = {s.name: s for s in trace.spans}
    assert set(spans) == {"test_fixture.py::test_uses_it", "setup", "call", "teardown", "retrieve"}
    assert spans["retrieve"].kind == "RETRIEVER" and spans["retrieve"].attributes == {"hits": 3}
    assert [c.tool_name for c in trace.tool_calls] == ["search"]
    assert trace.token_usage == flightlog.TokenUsage(
        prompt_tokens=15, completion_tokens=3, total_tokens=18
    )
    assert trace.cost_usd == pytest.approx(0.75)
    assert trace.metadata["error"]["message"].startswith("fails after all")


def test_flightlog_trace_without_recording_says_how_to_turn_it_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_off="def test_off(flightlog_trace):\n    pass\n")

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*turn recording on with --flightlog*"])


@given(st.text(min_size=1, max_size=600))
def test_node_id_keys_fit_the_store_and_keep_ids_apart(nodeid: str) -> None:
    key = nodeid_key(nodeid)

    assert 1 <= len(key) <= 256
    assert (key == nodeid) is (len(nodeid) <= 256)
    if len(nodeid) > 256:
        assert nodeid_key(nodeid + "x") != key


# JSON values the store accepts (it refuses non-finite floats).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RUN_METADATA = st.dictionaries(
    st.sampled_from(["args", "counts", "exit_status", "git", "python", "platform"]) | st.text(),
    JSON,
    max_size=6,
)


@pytest.fixture(scope="module")
def hand_written_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[flightlog.Store]:
    with flightlog.open(tmp_path_factory.mktemp("runs") / "store", durability="none") as store:
        yield store


@settings(max_examples=40, deadline=None)
@given(metadata=RUN_METADATA, output=st.none() | st.text(max_size=30))
def test_run_traces_of_any_shape_are_read_without_error(
    hand_written_runs: flightlog.Store, metadata: dict[str, Any], output: str | None
) -> None:
    """A store may hold ``pytest-run`` traces written by something else: what does not have
    the plugin's shape is left out, never an error."""
    run_id = flightlog.new_trace_id()
    fields: dict[str, Any] = {"metadata": metadata}
    if output is not None:
        fields["output"] = output
    hand_written_runs.log(agent_name="pytest-run", run_id=run_id, **fields)
    hand_written_runs.flush()

    found = find_run(hand_written_runs, run_id)

    assert found is not None and found.run_id == run_id and found.summary == output
    assert all(isinstance(n, int) for n in found.counts.values())
    assert all(isinstance(a, str) for a in found.args)
    msgspec.json.encode(found)  # what --json prints


# --- flightlog tests ------------------------------------------------------------------------

FLAKY = """
import os
import pytest
from pathlib import Path

RUN = int(Path("run.txt").read_text())

def test_steady():
    pass

def test_flaky():
    assert RUN % 2 == 0, f"odd run {RUN}"

def test_slow():
    import time
    time.sleep(0.02)
"""


def cli_report(capsys: pytest.CaptureFixture[str], store: Path, *args: str) -> dict[str, Any]:
    assert main(["tests", "--path", str(store), "--json", *args]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


@pytest.fixture
def three_runs(pytester: pytest.Pytester) -> Path:
    """Three recorded sessions of the same tests; ``test_flaky`` fails in the second."""
    pytester.makepyfile(test_recorded=FLAKY)
    for run in range(3):
        (pytester.path / "run.txt").write_text(str(run))
        record(pytester)
    return pytester.path / "store"


def test_tests_lists_runs_newest_first_with_pytests_counts(
    three_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = cli_report(capsys, three_runs)

    counts = [run["counts"] for run in report["runs"]]
    assert counts == [{"passed": 3}, {"passed": 2, "failed": 1}, {"passed": 3}]
    assert [run["status"] for run in report["runs"]] == ["succeeded", "failed", "succeeded"]
    assert report["run"] == report["runs"][0]


def test_tests_shows_a_runs_failures_with_messages_and_slowest_tests(
    three_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = cli_report(capsys, three_runs)["runs"][1]["run_id"]

    report = cli_report(capsys, three_runs, "--run", second[:20])

    assert report["run"]["run_id"] == second
    (failure,) = report["failures"]
    assert failure["nodeid"] == "test_recorded.py::test_flaky"
    assert (failure["error_phase"], failure["error_type"]) == ("call", "AssertionError")
    assert failure["error_message"].startswith("odd run 1")
    durations = [t["duration_ms"] for t in report["slowest"]]
    assert durations == sorted(durations, reverse=True) and len(durations) == 3
    slow = {t["nodeid"]: t["duration_ms"] for t in report["slowest"]}["test_recorded.py::test_slow"]
    assert slow >= 20  # it sleeps 20 ms


def test_tests_finds_flaky_tests_across_recent_runs(
    three_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = cli_report(capsys, three_runs)

    assert report["flaky"] == [
        {
            "nodeid": "test_recorded.py::test_flaky",
            "runs": 3,
            "passed": 2,
            "failed": 1,
            "last_outcome": "passed",
        }
    ]
    assert cli_report(capsys, three_runs, "--runs", "1")["flaky"] == []


def test_tests_prints_tables(three_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tests", "--path", str(three_runs), "--runs", "2"]) == 0
    out = capsys.readouterr().out

    assert "pytest runs, newest first" in out
    assert "2 passed, 1 failed" in out and "slowest tests" in out
    assert "flaky tests" in out and "test_recorded.py::test_flaky" in out


def test_tests_on_a_store_without_runs_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flightlog.open(tmp_path / "store").close()

    assert cli_report(capsys, tmp_path / "store") == {
        "runs": [],
        "run": None,
        "failures": [],
        "unfinished": [],
        "slowest": [],
        "costliest": [],
        "flaky": [],
    }
    assert main(["tests", "--path", str(tmp_path / "store")]) == 0
    assert "no pytest runs recorded: run pytest with --flightlog" in capsys.readouterr().out


def test_tests_with_an_unknown_run_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flightlog.open(tmp_path / "store").close()

    assert main(["tests", "--path", str(tmp_path / "store"), "--run", "nope", "--json"]) == 1
    assert "no pytest run nope" in capsys.readouterr().err


@pytest.mark.usefixtures("no_default_store")
def test_tests_shows_tokens_and_cost_per_test(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(
        agent=AGENT,
        test_costs="""
        from agent import answer

        def test_cheap():
            answer("a", 10, 1, 0.01)

        def test_dear():
            answer("b", 1000, 100, 1.5)

        def test_free():
            pass
        """,
    )
    record(pytester)
    capsys.readouterr()  # the session's own output

    report = cli_report(capsys, pytester.path / "store")

    assert [(t["nodeid"], t["total_tokens"], t["cost_usd"]) for t in report["costliest"]] == [
        ("test_costs.py::test_dear", 1100, 1.5),
        ("test_costs.py::test_cheap", 11, 0.01),
    ]
    assert report["run"]["total_tokens"] == 1111
    assert report["run"]["cost_usd"] == pytest.approx(1.51)


def test_tests_lists_tests_whose_process_died(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_dies="import os\n\ndef test_dies():\n    os._exit(3)\n")
    record_subprocess(pytester)
    capsys.readouterr()  # pytester's "running: ..." line

    report = cli_report(capsys, pytester.path / "store")

    assert report["run"]["status"] == "running"
    assert [t["nodeid"] for t in report["unfinished"]] == ["test_dies.py::test_dies"]
    assert report["unfinished"][0]["outcome"] == "running"

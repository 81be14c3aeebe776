"""How the pytest plugin stores a test run, and how ``flightlog tests`` reads it back.

The plugin (``flightlog.pytest_plugin``) writes one trace per pytest session (agent
``pytest-run``) and one per test (agent ``pytest``), all carrying the session's ``run_id``.
A test trace's ``request_id`` is the test's node id (shortened past 256 characters) and its
one tag is its outcome, so that everything ``flightlog tests`` lists per test except error
messages comes from indexed queries over trace summaries. docs/pytest.md shows the records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

from msgspec import Struct

from flightlog.errors import ValidationError
from flightlog.records import UNSET, Trace, TraceSummary
from flightlog.store import Store

__all__ = [
    "FAILING",
    "FRAMEWORK",
    "OUTCOMES",
    "RUN_AGENT",
    "TEST_AGENT",
    "FlakyTest",
    "RunRecord",
    "TestResult",
    "costliest_tests",
    "failed_tests",
    "find_run",
    "flaky_tests",
    "nodeid_key",
    "recent_runs",
    "slowest_tests",
    "unfinished_tests",
]

RUN_AGENT = "pytest-run"
TEST_AGENT = "pytest"
FRAMEWORK = "pytest"
# pytest's outcome categories, in the order of its summary line; a test trace's tag is one.
OUTCOMES = ("failed", "passed", "skipped", "xfailed", "xpassed", "error")
FAILING = frozenset({"failed", "error"})

_MAX_KEY = 256  # the store's limit on request_id
_PAGE = 1000  # the store's largest page


def nodeid_key(nodeid: str) -> str:
    """The ``request_id`` of a test: its node id, or for a node id over 256 characters its
    start and a hash of the whole (so that two long ids never share a key)."""
    if len(nodeid) <= _MAX_KEY:
        return nodeid
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:32]
    return f"{nodeid[: _MAX_KEY - 33]}#{digest}"


class RunRecord(Struct, kw_only=True):
    """One pytest session as its run trace records it.

    ``status`` is ``running`` until the session finishes (and stays so if it crashed);
    ``exit_status`` is pytest's exit code; ``counts`` maps pytest's outcome categories
    (``passed``, ``failed``, ``error``, ...) to how many reports had them, as pytest's
    summary line counts them, and ``summary`` is that line with the exit status. Tokens and
    cost sum the run's tests that reported any.
    """

    run_id: str
    trace_id: str
    started: dt.datetime
    status: str
    summary: str | None = None
    exit_status: int | None = None
    duration_ms: float | None = None
    counts: dict[str, int] = {}
    args: list[str] = []
    git_commit: str | None = None
    git_branch: str | None = None
    python: str | None = None
    platform: str | None = None
    total_tokens: int = 0
    cost_usd: float = 0.0


class TestResult(Struct, kw_only=True):
    """One test of a run: its outcome (``running`` when its process died during it),
    duration, tokens and cost, and for a failure the error.

    ``nodeid`` is the test's ``request_id``: its node id unless that is over 256
    characters (see :func:`nodeid_key`).
    """

    __test__ = False  # not a pytest test class despite its name

    nodeid: str
    trace_id: str
    outcome: str
    started: dt.datetime
    duration_ms: float | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    error_phase: str | None = None
    error_type: str | None = None
    error_message: str | None = None


class FlakyTest(Struct, kw_only=True):
    """A test that both passed and failed (or errored) across the runs looked at."""

    nodeid: str
    runs: int
    passed: int
    failed: int
    last_outcome: str


def recent_runs(store: Store, limit: int = 10) -> list[RunRecord]:
    """The newest ``limit`` runs, newest first."""
    page = store.query(agent_name=RUN_AGENT, limit=limit)
    return [_run_record(store.get(item.trace_id)) for item in page]


def find_run(store: Store, run_id: str) -> RunRecord | None:
    """The run with this ``run_id``, or else the one run among the last 1000 whose id starts
    with it; ``None`` when there is none.

    Raises:
        ValidationError: The prefix matches several runs.
    """
    page = store.query(agent_name=RUN_AGENT, run_id=run_id, limit=1)
    if page.items:
        return _run_record(store.get(page.items[0].trace_id))
    recent = store.query(agent_name=RUN_AGENT, limit=_PAGE)
    matches = {item.run_id: item for item in recent if str(item.run_id).startswith(run_id)}
    if len(matches) > 1:
        raise ValidationError(
            f"run: {run_id!r} is the start of {len(matches)} run ids; give more of it",
            [{"path": "run", "message": "matches several runs"}],
        )
    return _run_record(store.get(next(iter(matches.values())).trace_id)) if matches else None


def slowest_tests(store: Store, run_id: str, limit: int = 10) -> list[TestResult]:
    """The run's ``limit`` slowest finished tests (setup, call and teardown together)."""
    page = store.query(agent_name=TEST_AGENT, run_id=run_id, order_by="latency_ms", limit=limit)
    return [_test_result(item) for item in page if item.latency_ms is not UNSET]


def costliest_tests(store: Store, run_id: str, limit: int = 10) -> list[TestResult]:
    """The run's ``limit`` tests with the highest cost, among those that reported tokens or
    cost (through traces their code logged, or ``flightlog_trace``)."""
    page = store.query(agent_name=TEST_AGENT, run_id=run_id, order_by="cost_usd", limit=limit)
    return [
        _test_result(item)
        for item in page
        if item.cost_usd is not UNSET or item.token_usage is not UNSET
    ]


def failed_tests(store: Store, run_id: str, limit: int = 50) -> list[TestResult]:
    """The run's failed and errored tests, oldest first, with their error."""
    page = store.query(
        agent_name=TEST_AGENT, run_id=run_id, status="failed", descending=False, limit=limit
    )
    return [_with_error(_test_result(item), store.get(item.trace_id)) for item in page]


def unfinished_tests(store: Store, run_id: str, limit: int = 50) -> list[TestResult]:
    """The run's tests still ``running``: their process died during them (or the run is
    still going). ``nodeid`` is the full node id (one that died in setup has no
    ``request_id`` yet)."""
    page = store.query(
        agent_name=TEST_AGENT, run_id=run_id, status="running", descending=False, limit=limit
    )
    results = []
    for item in page:
        result = _test_result(item)
        stored = store.get(item.trace_id).input
        if isinstance(stored, str):
            result.nodeid = stored
        results.append(result)
    return results


def flaky_tests(store: Store, run_ids: list[str]) -> list[FlakyTest]:
    """Tests that both passed and failed across these runs, most failures first."""
    if not run_ids:
        return []
    outcomes: dict[str, list[tuple[dt.datetime, str]]] = {}
    for item in _all(store, agent_name=TEST_AGENT, run_id=run_ids):
        if item.request_id is not UNSET:
            outcomes.setdefault(item.request_id, []).append((item.timestamp, _outcome(item)))
    flaky = []
    for nodeid, seen in outcomes.items():
        passed = sum(outcome == "passed" for _, outcome in seen)
        failed = sum(outcome in FAILING for _, outcome in seen)
        if passed and failed:
            last = max(seen)[1]
            flaky.append(
                FlakyTest(
                    nodeid=nodeid, runs=len(seen), passed=passed, failed=failed, last_outcome=last
                )
            )
    return sorted(flaky, key=lambda f: (-f.failed, f.nodeid))


def _all(store: Store, **filters: Any) -> Iterator[TraceSummary]:
    cursor = None
    while True:
        page = store.query(limit=_PAGE, cursor=cursor, **filters)
        yield from page
        cursor = page.next_cursor
        if cursor is None:
            return


def _outcome(item: TraceSummary) -> str:
    for tag in item.tags:
        if tag in OUTCOMES:
            return tag
    return "running" if item.status == "running" else "unknown"


def _test_result(item: TraceSummary) -> TestResult:
    usage = item.token_usage
    return TestResult(
        nodeid=item.request_id if item.request_id is not UNSET else item.trace_id,
        trace_id=item.trace_id,
        outcome=_outcome(item),
        started=item.timestamp,
        duration_ms=None if item.latency_ms is UNSET else item.latency_ms,
        total_tokens=None if usage is UNSET or usage.total_tokens is UNSET else usage.total_tokens,
        cost_usd=None if item.cost_usd is UNSET else item.cost_usd,
    )


def _with_error(result: TestResult, trace: Trace) -> TestResult:
    error = trace.metadata.get("error")
    if isinstance(error, dict):
        result.error_phase = _text(error.get("phase"))
        result.error_type = _text(error.get("type"))
        result.error_message = _text(error.get("message"))
    return result


def _run_record(trace: Trace) -> RunRecord:
    """A run trace as a :class:`RunRecord`; metadata of unexpected shapes (a trace logged
    under ``pytest-run`` by something else) is left out rather than trusted."""
    meta = trace.metadata
    found = meta.get("git")
    git: dict[str, Any] = found if isinstance(found, dict) else {}
    usage = trace.token_usage
    counts = meta.get("counts")
    args = meta.get("args")
    exit_status = meta.get("exit_status")
    return RunRecord(
        run_id=trace.run_id if trace.run_id is not UNSET else "",
        trace_id=trace.trace_id if trace.trace_id is not UNSET else "",
        started=trace.timestamp if trace.timestamp is not UNSET else dt.datetime.min,
        status=trace.status if trace.status is not UNSET else "running",
        summary=_text(trace.output),
        exit_status=exit_status if type(exit_status) is int else None,
        duration_ms=None if trace.latency_ms is UNSET else trace.latency_ms,
        counts={
            name: count
            for name, count in (counts.items() if isinstance(counts, dict) else [])
            if type(count) is int
        },
        args=[arg for arg in args if isinstance(arg, str)] if isinstance(args, list) else [],
        git_commit=_text(git.get("commit")),
        git_branch=_text(git.get("branch")),
        python=_text(meta.get("python")),
        platform=_text(meta.get("platform")),
        total_tokens=0 if usage is UNSET or usage.total_tokens is UNSET else usage.total_tokens,
        cost_usd=0.0 if trace.cost_usd is UNSET else trace.cost_usd,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None

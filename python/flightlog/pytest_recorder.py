"""Records a pytest session into a flightlog store. ``flightlog.pytest_plugin`` registers a
:class:`Recorder` once recording is enabled; importing this module loads the store.

Where tests run (the only process, or each pytest-xdist worker) each test becomes a trace
logged in three fragments: ``running`` before its setup starts, its setup span once setup is
done, and its outcome after teardown. The first two are committed before the test goes on,
so a process that dies inside a test leaves that test ``running`` with the phases it
finished. The process that reports (the only one, or xdist's controller) writes the run
trace and counts outcomes the way pytest's summary line does. docs/pytest.md has the shapes.

Agent code under test is tied to its test with the instrumentation's :class:`Capture` hook:
each phase of a test runs inside a Capture of the default store (the plugin's own store,
unless the user set one), so the traces that code logs carry the run's ``run_id``, and the
test's final fragment sums their tokens and cost.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shlex
import subprocess
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import flightlog
from flightlog.instrument import (
    ActiveTrace,
    Capture,
    CapturedUsage,
    default_store,
    set_default_store,
)
from flightlog.records import Span, SpanEvent, TokenUsage, Trace
from flightlog.store import Store
from flightlog.testruns import FAILING, FRAMEWORK, OUTCOMES, RUN_AGENT, TEST_AGENT, nodeid_key

__all__ = ["Recorder"]

_MAX_MESSAGE = 2_000  # characters of an error message kept in metadata and span status
_MAX_TRACEBACK = 32_000  # characters of pytest's failure report kept in a span event
_MAX_PARAM = 200  # characters of a parameter's repr
_MAX_SPAN_NAME = 1024  # the store's limit on span names
_GIT_TIMEOUT_S = 5
_MAX_AGENT_TRACES = 100  # ids of the traces a test logged, kept in its metadata


@dataclass
class _Test:
    """A test between the start of its setup and the end of its teardown."""

    trace_id: str
    root_span: Span
    key: str | None = None  # the request_id, once the first fragment is stored
    captures: list[Capture] = field(default_factory=list)  # one per phase
    uses_fixture: bool = False  # flightlog_trace logs into this trace
    reports: dict[str, pytest.TestReport] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)  # when -> pytest's category
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # when -> type, message


class Recorder:
    """The pytest hooks that write a session into a store.

    Args:
        config: The session's pytest config.
        path: The store directory (absolute: xdist workers receive it as is).
        run_id: The session's run id (xdist workers get the controller's); ``None`` mints
            one: the id of the run trace.
        worker: The xdist worker id (``gw0``, ...) in a worker, else ``None``.

    Raises:
        pytest.UsageError: The store cannot be opened.
    """

    def __init__(
        self, config: pytest.Config, path: Path, run_id: str | None, worker: str | None
    ) -> None:
        self._config = config
        self.path = path
        self._run_trace_id = flightlog.new_trace_id()
        self.run_id = run_id or self._run_trace_id
        self._worker = worker
        # Commits without fsync: committing before each test runs must cost microseconds.
        # The run's last fragment is written through a durable handle, whose fsync makes
        # everything before it durable too (see _finish_run).
        try:
            self._store = flightlog.open(path, durability="none")
        except flightlog.FlightlogError as exc:
            raise pytest.UsageError(f"flightlog: cannot open the store at {path}: {exc}") from exc
        self._tests: dict[str, _Test] = {}
        self._counts: Counter[str] = Counter()
        self._started = _now()
        self._write_errors = 0
        self._first_write_error: str | None = None
        self._owns_default_store = self._adopt_default_store()

    @property
    def reports_run(self) -> bool:
        """Whether this process writes the run trace (it is not an xdist worker)."""
        return self._worker is None

    # --- the run ------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist (controller): hands the run id and store path to each worker."""
        node.workerinput["flightlog_run_id"] = self.run_id
        node.workerinput["flightlog_path"] = str(self.path)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.reports_run:
            return
        args = list(self._config.invocation_params.args)
        metadata: dict[str, Any] = {
            "args": args,
            "rootdir": str(self._config.rootpath),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "pytest": pytest.__version__,
        }
        workers = getattr(self._config.option, "numprocesses", None)
        if isinstance(workers, int) and workers > 0:
            metadata["workers"] = workers
        git = _git(self._config.rootpath)
        if git:
            metadata["git"] = git
        self._write(
            Trace(
                trace_id=self._run_trace_id,
                agent_name=RUN_AGENT,
                framework=FRAMEWORK,
                run_id=self.run_id,
                status="running",
                timestamp=self._started,
                input=shlex.join(["pytest", *args]),
                metadata=metadata,
            ),
            commit=True,
        )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # Counted like pytest's summary line: a failed collection is an error.
        if self.reports_run and report.failed:
            self._counts["error"] += 1
        elif self.reports_run and report.skipped:
            self._counts["skipped"] += 1

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        if self.reports_run:
            self._counts["deselected"] += len(items)

    def pytest_warning_recorded(self) -> None:
        if self.reports_run:
            self._counts["warnings"] += 1

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.reports_run:
            self._finish_run(int(exitstatus))
        else:
            self._commit()

    def pytest_unconfigure(self) -> None:
        if self._owns_default_store:
            set_default_store(None)
        self._store.close()

    def pytest_report_header(self) -> str:
        return f"flightlog: recording run {self.run_id} into {self.path}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.reports_run:
            return
        terminalreporter.write_line(f"flightlog: run {self.run_id} recorded in {self.path}")
        if self._write_errors:
            terminalreporter.write_line(
                f"flightlog: {self._write_errors} records could not be written; the first: "
                f"{self._first_write_error}",
                red=True,
            )

    def _finish_run(self, exitstatus: int) -> None:
        try:
            self._write_run_end(exitstatus)
        except Exception as exc:  # reported in the terminal summary, never raised into pytest
            self._failed(exc)

    def _write_run_end(self, exitstatus: int) -> None:
        ended = _now()
        # The workers' test traces are committed by now (each commits at its session end).
        tests = self._store.stats(agent_name=TEST_AGENT, run_id=self.run_id)
        counts = dict(self._counts)
        fragment = Trace(
            trace_id=self._run_trace_id,
            agent_name=RUN_AGENT,
            run_id=self.run_id,
            status="succeeded" if exitstatus == 0 else "failed",
            ended_at=ended,
            latency_ms=(ended - self._started).total_seconds() * 1000,
            output=_summary_line(counts, exitstatus),
            metadata={"counts": counts, "exit_status": exitstatus},
        )
        if tests.total_tokens:
            fragment.token_usage = TokenUsage(
                prompt_tokens=tests.prompt_tokens,
                completion_tokens=tests.completion_tokens,
                total_tokens=tests.total_tokens,
            )
        if tests.cost_usd:
            fragment.cost_usd = tests.cost_usd
        with flightlog.open(self.path, durability="group") as durable:
            durable.log(fragment)

    # --- each test ----------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        self._start(item)
        try:
            return (yield)
        finally:
            self._tests.pop(item.nodeid, None)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        test = self._tests.get(item.nodeid)
        if test is not None and call.excinfo is not None and (report.failed or _xfailed(report)):
            message = _text(_shown(call.excinfo.value, str), _MAX_MESSAGE)
            test.errors[call.when] = (call.excinfo.typename, message)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        category = self._category(report)
        if self.reports_run and category:
            self._counts[category] += 1
        test = self._tests.get(report.nodeid)
        if test is None:  # xdist's controller: the worker records the test
            return
        test.reports[report.when] = report
        test.categories[report.when] = category
        if report.when == "setup":
            fragment = Trace(
                trace_id=test.trace_id,
                agent_name=TEST_AGENT,
                spans=[test.root_span, self._phase_span(test, report)],
            )
            if test.key is not None:
                fragment.request_id = test.key
            self._write(fragment, commit=True)
        elif report.when == "teardown":
            self._finish_test(test)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from self._captured(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from self._captured(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        return (yield from self._captured(item))

    def running_test_trace(self, item: pytest.Item) -> ActiveTrace:
        """An :class:`ActiveTrace` on the running test's trace, for ``flightlog_trace``:
        spans, tool calls and usage added to it land in the test's trace.

        Raises:
            RuntimeError: ``item`` is not running.
        """
        test = self._tests.get(item.nodeid)
        if test is None:
            raise RuntimeError(f"flightlog: {item.nodeid} is not running")
        test.uses_fixture = True
        return self._store.trace(TEST_AGENT, trace_id=test.trace_id)

    def _captured(self, item: pytest.Item) -> Generator[None, None, None]:
        """Runs one phase of a test inside a Capture of the default store in effect when the
        phase starts (a fixture may set another one)."""
        test = self._tests.get(item.nodeid)
        capture = self._capture() if test is not None else None
        if test is None or capture is None:
            return (yield)
        test.captures.append(capture)
        with capture:
            return (yield)

    def _capture(self) -> Capture | None:
        try:
            return Capture(default_store(), run_id=self.run_id)
        except flightlog.FlightlogError:  # none set, or $FLIGHTLOG_PATH cannot be opened
            return None

    def _adopt_default_store(self) -> bool:
        """Makes the plugin's store the default store when the user configured none (neither
        ``set_default_store`` nor ``$FLIGHTLOG_PATH``), so that agent code under test that
        logs through the default store works and lands beside the tests.

        Returns:
            Whether it did (the default is unset again at the end of the session).
        """
        if os.environ.get("FLIGHTLOG_PATH"):
            return False
        try:
            default_store()
        except flightlog.NoDefaultStore:
            set_default_store(self._store)
            return True
        return False

    def _start(self, item: pytest.Item) -> None:
        started = _now()
        trace_id = flightlog.new_trace_id()
        root = Span(
            span_id=flightlog.new_span_id(),
            name=item.nodeid[:_MAX_SPAN_NAME],
            start_time=started,
        )
        test = _Test(trace_id=trace_id, root_span=root)
        self._tests[item.nodeid] = test
        written = self._write(
            Trace(
                trace_id=trace_id,
                agent_name=TEST_AGENT,
                framework=FRAMEWORK,
                run_id=self.run_id,
                input=item.nodeid,
                status="running",
                timestamp=started,
                metadata=self._test_metadata(item),
                spans=[root],
            ),
            commit=True,
        )
        if written:
            test.key = self._stored_key(trace_id)

    def _stored_key(self, trace_id: str) -> str | None:
        """The test's ``request_id``: its node id as the store keeps it. A parameter id may
        hold a secret (``test_call[sk-...]``) and ids are not redacted, but ``input`` is:
        reading it back (a few µs) keys the test by the redacted node id."""
        try:
            stored = self._store.get(trace_id).input
        except Exception as exc:  # reported at the end of the run, like write failures
            self._failed(exc)
            return None
        return nodeid_key(stored) if isinstance(stored, str) else None

    def _test_metadata(self, item: pytest.Item) -> dict[str, Any]:
        path, line, name = item.location
        metadata: dict[str, Any] = {
            "file": path,
            "function": name,
            "markers": list(dict.fromkeys(mark.name for mark in item.iter_markers())),
        }
        if line is not None:
            metadata["line"] = line + 1
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            metadata["params"] = {key: _param(value) for key, value in callspec.params.items()}
            metadata["param_id"] = callspec.id
        if self._worker is not None:
            metadata["worker"] = self._worker
        return metadata

    def _finish_test(self, test: _Test) -> None:
        reports = test.reports
        outcome = _outcome(test.categories)
        later = [when for when in ("call", "teardown") if when in reports]
        spans = [self._phase_span(test, reports[when]) for when in later]
        ended = max(
            (span.end_time for span in spans if isinstance(span.end_time, dt.datetime)),
            default=_now(),
        )
        failing = outcome in FAILING
        root = Span(
            span_id=test.root_span.span_id,
            name=test.root_span.name,
            start_time=test.root_span.start_time,
            end_time=ended,
            status_code="ERROR" if failing else "OK",
            attributes={"pytest.outcome": outcome},
        )
        metadata: dict[str, Any] = {"outcome": outcome}
        error = _first_error(test, reports)
        if error is not None:
            metadata["error"] = error
        reason = _skip_reason(reports)
        if reason is not None:
            metadata["reason"] = reason
        fragment = Trace(
            trace_id=test.trace_id,
            agent_name=TEST_AGENT,
            status="failed" if failing else "succeeded",
            ended_at=ended,
            latency_ms=sum(report.duration for report in reports.values()) * 1000,
            tags=[outcome],
            metadata=metadata,
            spans=[root, *spans],
        )
        self._add_usage(test, fragment)
        self._write(fragment)

    def _add_usage(self, test: _Test, fragment: Trace) -> None:
        """Sets the fragment's tokens and cost to the sums over the traces the test's code
        logged through the default store, and over what ``flightlog_trace`` recorded into
        the test's own trace; lists the former in ``metadata["agent_traces"]``."""
        by_store: dict[int, tuple[Store, dict[str, None]]] = {}
        for capture in test.captures:
            _, ids = by_store.setdefault(id(capture.store), (capture.store, {}))
            ids.update(dict.fromkeys(capture.trace_ids))
        if test.uses_fixture:
            by_store.setdefault(id(self._store), (self._store, {}))[1][test.trace_id] = None
        prompt = completion = total = 0
        cost = 0.0
        logged: list[str] = []
        try:
            for store, ids in by_store.values():
                if not ids:
                    continue
                usage = self._usage(store, ids)
                prompt += usage.prompt_tokens
                completion += usage.completion_tokens
                total += usage.total_tokens
                cost += usage.cost_usd
                logged += [trace_id for trace_id in ids if trace_id != test.trace_id]
        except Exception as exc:  # reported at the end of the run, like write failures
            self._failed(exc)
            return
        if total:
            fragment.token_usage = TokenUsage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=total
            )
        if cost:
            fragment.cost_usd = cost
        if logged:
            fragment.metadata["agent_traces"] = logged[:_MAX_AGENT_TRACES]

    def _usage(self, store: Store, trace_ids: Iterable[str]) -> CapturedUsage:
        """The summed usage of these traces of ``store``. A test suite often closes its own
        store in a fixture's teardown, before the test's usage is summed: its traces are
        then read through a read-only handle (closing flushed them)."""
        reader = flightlog.open(store.path, readonly=True) if store.closed else store
        try:
            summing = Capture(reader, run_id=self.run_id)
            for trace_id in trace_ids:
                summing.collect(trace_id)
            return summing.usage()
        finally:
            if reader is not store:
                reader.close()

    def _phase_span(self, test: _Test, report: pytest.TestReport) -> Span:
        start = dt.datetime.fromtimestamp(report.start, dt.timezone.utc)
        end = start + dt.timedelta(seconds=report.duration)
        category = test.categories.get(report.when) or "passed"
        span = Span(
            span_id=flightlog.new_span_id(),
            parent_span_id=test.root_span.span_id,
            name=report.when,
            start_time=start,
            end_time=end,
            status_code="ERROR" if report.failed else "OK",
            attributes={"pytest.outcome": category},
        )
        error = test.errors.get(report.when)
        if error is not None:
            kind, message = error
            if report.failed:
                span.status_message = _text(f"{kind}: {message}", _MAX_MESSAGE)
            span.events.append(
                SpanEvent(
                    name="exception",
                    timestamp=end,
                    attributes={
                        "exception.type": kind,
                        "exception.message": message,
                        "exception.stacktrace": _text(report.longreprtext, _MAX_TRACEBACK),
                    },
                )
            )
        return span

    def _category(self, report: pytest.TestReport) -> str:
        """pytest's outcome category of a report (``""`` for a passed setup or teardown),
        from the hook its terminal summary uses, so plugins like xfail are respected."""
        status = self._config.hook.pytest_report_teststatus(report=report, config=self._config)
        category = status[0] if status else ""
        return category if isinstance(category, str) else ""

    # --- writing ------------------------------------------------------------------------

    def _write(self, trace: Trace, *, commit: bool = False) -> bool:
        """Logs a fragment; with ``commit``, waits until it is committed (not fsynced), so
        that it survives this process dying next. Failures are counted and reported at the
        end of the run, never raised into pytest: recording must not break the test run.

        Returns:
            Whether it was logged (and committed, with ``commit``).
        """
        try:
            self._store.log(trace)
            if commit:
                self._store.flush()
        except Exception as exc:  # any failure to record is reported, not raised into pytest
            self._failed(exc)
            return False
        return True

    def _commit(self) -> None:
        try:
            self._store.flush()
        except flightlog.FlightlogError as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self._write_errors += 1
        if self._first_write_error is None:
            self._first_write_error = f"{type(exc).__name__}: {exc}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _outcome(categories: Mapping[str, str]) -> str:
    """A test's one outcome from its phases' categories: a setup that did not pass decides;
    else the call's; a teardown error turns a finished test into an error."""
    setup = categories.get("setup", "")
    outcome = setup if setup else categories.get("call", "") or "passed"
    if categories.get("teardown") == "error" and outcome not in FAILING:
        outcome = "error"
    return outcome


def _first_error(test: _Test, reports: Mapping[str, pytest.TestReport]) -> dict[str, str] | None:
    for when in ("setup", "call", "teardown"):
        report = reports.get(when)
        if report is None or not report.failed:
            continue
        kind, message = test.errors.get(when, ("", ""))
        if not kind:  # failed without an exception pytest could see (e.g. a strict xpass)
            kind, message = "Failed", _text(report.longreprtext, _MAX_MESSAGE)
        return {"phase": when, "type": kind, "message": message}
    return None


def _skip_reason(reports: Mapping[str, pytest.TestReport]) -> str | None:
    for report in reports.values():
        if _xfailed(report):
            return str(getattr(report, "wasxfail", ""))
        if report.skipped and isinstance(report.longrepr, tuple):
            return str(report.longrepr[2]).removeprefix("Skipped: ")
    return None


def _xfailed(report: pytest.TestReport) -> bool:
    return hasattr(report, "wasxfail")


def _param(value: object) -> object:
    """A parameter as JSON: strings, numbers, booleans and None as they are, anything else
    as its (shortened) repr."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _text(value, _MAX_PARAM)
    return _text(_shown(value, repr), _MAX_PARAM)


def _shown(value: object, show: Callable[[object], str]) -> str:
    """``show(value)``, or the type's name in brackets when that raises: a broken
    ``__repr__`` or ``__str__`` in test code must not break the run."""
    try:
        return show(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, lone surrogates (not UTF-8, so refused by the
    store) written as escapes: test code may raise or parametrize with any string."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _summary_line(counts: Mapping[str, int], exitstatus: int) -> str:
    """Like pytest's last line: ``1 failed, 4 passed, 2 errors (exit status 1)``."""
    order = [*OUTCOMES, "deselected", "warnings"]
    names = [name for name in order if counts.get(name)]
    names += sorted(name for name in counts if name not in order and counts[name])
    parts = [f"{counts[name]} {_plural(name, counts[name])}" for name in names]
    return f"{', '.join(parts) or 'no tests ran'} (exit status {exitstatus})"


def _plural(category: str, count: int) -> str:
    """pytest's wording: ``1 error``, ``2 errors``, ``1 warning``; other categories as is."""
    singular = "warning" if category == "warnings" else category
    if count == 1:
        return singular
    return {"error": "errors", "warning": "warnings"}.get(singular, singular)


def _git(rootdir: Path) -> dict[str, str]:
    """The commit (and branch, unless detached) checked out at ``rootdir``; empty outside a
    repository or without a ``git`` binary."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
            cwd=rootdir,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        return {}
    commit, branch = lines
    return {"commit": commit} if branch == "HEAD" else {"commit": commit, "branch": branch}

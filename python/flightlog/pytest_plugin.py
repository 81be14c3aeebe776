"""The pytest plugin: records test runs as flightlog traces (docs/pytest.md).

pytest loads it (entry point ``pytest11``, name ``flightlog``) in every run of every project
where flightlog is installed, so it is off unless asked and costs nothing until then: this
module imports only pytest and the standard library, and it loads the store
(``flightlog.pytest_recorder``) once ``pytest --flightlog[=PATH]`` or the ini option
``flightlog = true`` enables recording. ``-p no:flightlog`` removes it altogether.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flightlog.instrument import ActiveTrace
    from flightlog.pytest_recorder import Recorder

__all__ = ["RECORDER_NAME", "flightlog_trace", "recorder"]

RECORDER_NAME = "flightlog-recorder"
"""The name the enabled :class:`~flightlog.pytest_recorder.Recorder` is registered under."""

_DEFAULT_PATH = ".flightlog"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--flightlog[=PATH]`` and the ini options ``flightlog`` and
    ``flightlog_path``."""
    group = parser.getgroup("flightlog", "record the test run as flightlog traces")
    group.addoption(
        "--flightlog",
        action="store",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="record this run into the flightlog store at PATH (default: the ini option "
        "flightlog_path, else $FLIGHTLOG_PATH, else ./.flightlog). Write --flightlog=PATH: "
        "a separate word after --flightlog is taken as PATH.",
    )
    parser.addini(
        "flightlog", type="bool", default=False, help="record every run, as --flightlog does"
    )
    parser.addini(
        "flightlog_path",
        type="string",
        default="",
        help="the flightlog store to record into, relative to the ini file",
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Registers the recorder when recording is enabled; otherwise does nothing."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: recording iff the controller records
        if "flightlog_run_id" not in workerinput:
            return
        path = Path(workerinput["flightlog_path"])
        run_id = workerinput["flightlog_run_id"]
        worker = str(workerinput["workerid"])
    else:
        found = _store_path(config)
        if found is None:
            return
        path, run_id, worker = found, None, None
    from flightlog.pytest_recorder import Recorder

    recorder = Recorder(config, path, run_id, worker)
    config.pluginmanager.register(recorder, RECORDER_NAME)


@pytest.fixture
def flightlog_trace(request: pytest.FixtureRequest) -> Iterator[ActiveTrace]:
    """The running test's trace, as an :class:`flightlog.ActiveTrace`: spans, tool calls and
    usage that the test or the agent code it calls adds (``flightlog_trace.span(...)``, or
    ``flightlog.current_trace()`` inside that code) are recorded in the test's trace.

    Its spans sit beside the test's ``setup`` / ``call`` / ``teardown`` spans, and its
    tokens and cost count towards the test's (with those of traces logged through the
    default store during the test).

    Raises:
        pytest.fail: Recording is off (``--flightlog`` or ``flightlog = true`` turns it on).
    """
    found = recorder(request.config)
    if found is None:
        pytest.fail(
            "flightlog_trace records into the test's trace: turn recording on with "
            "--flightlog or the ini option flightlog = true",
            pytrace=False,
        )
    with found.running_test_trace(request.node) as trace:
        yield trace


def recorder(config: pytest.Config) -> Recorder | None:
    """The session's recorder, or ``None`` when recording is off."""
    found: Recorder | None = config.pluginmanager.get_plugin(RECORDER_NAME)
    return found


def _store_path(config: pytest.Config) -> Path | None:
    """The absolute store path when recording is enabled, else ``None``. A path on the
    command line is relative to where pytest was started, one in the ini file to that file."""
    option: str | None = config.getoption("flightlog")
    if option:
        return config.invocation_params.dir / option
    ini_path = str(config.getini("flightlog_path"))
    if option is None and not config.getini("flightlog"):
        return None
    if ini_path:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / ini_path
    return config.invocation_params.dir / (os.environ.get("FLIGHTLOG_PATH") or _DEFAULT_PATH)

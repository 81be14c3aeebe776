"""Fault-injection plumbing shared by the crash, process, disk and corruption tests.

A child process runs a script with the same interpreter and reports what it was told over a
pipe (one line per report, each written with a single ``os.write`` so a kill never leaves
half a line), so the parent knows exactly which traces were acknowledged when it killed the
child. ``FLIGHTLOG_LONG=1`` selects the long variants (hundreds of cycles); see
docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import flightlog

LONG = os.environ.get("FLIGHTLOG_LONG") == "1"
CHILD_TIMEOUT = 300  # seconds; a safety net against a hung child, never a measurement

# Every child script starts with this: ``report(line)`` writes one line to the parent.
CHILD_PRELUDE = """
import os, sys
REPORT_FD = int(os.environ["FLIGHTLOG_TEST_REPORT_FD"])
def report(line):
    os.write(REPORT_FD, (line + "\\n").encode())
"""


def scale(short: int, long: int) -> int:
    """``long`` under ``FLIGHTLOG_LONG=1``, else ``short``."""
    return long if LONG else short


@dataclass
class Child:
    """A running child script whose reports are read on a thread as they arrive."""

    process: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    arrived: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False  # the pipe reached end of file: every report is in ``lines``
    error_file: IO[bytes] | None = None  # the child's stderr, until it has exited
    errors: str = ""  # what the child wrote to stderr, once it has exited

    def wait_for(self, line: str, timeout: float = CHILD_TIMEOUT) -> bool:
        """Waits until the child reported ``line``; false if it exited without doing so."""
        with self.arrived:
            return (
                self.arrived.wait_for(lambda: line in self.lines or self.closed, timeout=timeout)
                and line in self.lines
            )

    def finish(self, timeout: float = CHILD_TIMEOUT) -> int:
        """Waits for the child to exit and for every report it wrote; its return code."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # A hung child (and whatever it forked) must not outlive the test.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        if self.reader is not None:
            self.reader.join(timeout=timeout)
        if self.error_file is not None:
            with self.error_file:
                self.error_file.seek(0)
                self.errors = self.error_file.read().decode(errors="replace")
            self.error_file = None
        return code

    def stderr(self) -> str:
        """What the child wrote to stderr: the end of it, for assertion messages."""
        if self.process.returncode is None:
            self.finish()
        return self.errors[-3000:]


def start_child(
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Child:
    """Starts ``script`` (prefixed with :data:`CHILD_PRELUDE`) with a report pipe, under
    ``wrapper`` (a command such as ``strace -f``) if one is given."""
    read_end, write_end = os.pipe()
    child_env = {**os.environ, **(env or {}), "FLIGHTLOG_TEST_REPORT_FD": str(write_end)}
    # stderr goes to a file, not a pipe: a child writing much to it must never block.
    error_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Child.finish
    try:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-c", CHILD_PRELUDE + script, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=error_file,
            pass_fds=(write_end,),
            start_new_session=True,  # its own process group, killed whole on a timeout
            env=child_env,
        )
    finally:
        os.close(write_end)
    child = Child(process, error_file=error_file)

    def read_reports() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                # Only whole lines count: a line is written by one os.write or not at all.
                if line.endswith(b"\n"):
                    with child.arrived:
                        child.lines.append(line.decode()[:-1])
                        child.arrived.notify_all()
        with child.arrived:
            child.closed = True
            child.arrived.notify_all()

    child.reader = threading.Thread(target=read_reports, daemon=True)
    child.reader.start()
    return child


def run_child(
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Child:
    """Runs ``script`` to its end; the finished :class:`Child`."""
    child = start_child(script, *args, env=env, wrapper=wrapper)
    child.finish()
    return child


def assert_check_clean(path: Path) -> None:
    """Opens the store for writing, as an agent restarting after the fault would, and
    asserts ``check`` finds nothing wrong."""
    with flightlog.open(path) as store:
        report = store.check()
        assert report.ok, report.problems

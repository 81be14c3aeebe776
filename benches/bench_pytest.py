"""What the pytest plugin costs a test run: off (installed, not enabled) against not loaded at
all, and recording (``--flightlog``) against off.

    python benches/bench_pytest.py [--tests N] [--runs N] [--quick] [--dir DIR] [--json PATH]

Each figure is the median wall time of ``--runs`` fresh ``python -m pytest`` processes
(default 7) on one file of ``--tests`` empty parametrized tests (default 2,000), the rows
alternating; recording runs write a fresh store each. Empty tests are the worst case: the
per-test cost of recording is all there is besides pytest's own. hypothesis's and xdist's
plugins are left out of every row (``-p no:...``) so that only flightlog's differs.
Recording is also timed on a tenth of the tests, which splits its cost into a fixed part
(loading the core, opening the store, the run trace, the final fsync) and a part per test.

The goal row is SPEC §7's "inactive unless asked": the plugin off must cost pytest's start-up
no more than 10 ms (it imports neither the core nor msgspec until enabled).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import (
    Goal,
    Report,
    duration,
    goals_table,
    load,
    machine,
    median,
    note,
    table,
    workdir,
)

OFF_GOAL_S = 0.010

_TESTS = """
import pytest

@pytest.mark.parametrize("n", range({n}))
def test_empty(n):
    pass
"""
_PLUGINS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:xdist"]
NOT_LOADED = "plugin not loaded (-p no:flightlog)"
OFF = "plugin installed, off (default)"
ON = "recording (--flightlog=PATH)"
OFF_SMALL = "off, a tenth of the tests"
ON_SMALL = "recording, a tenth of the tests"


def _time_once(base: Path, row: str, run: int) -> float:
    small = row in (OFF_SMALL, ON_SMALL)
    args = [sys.executable, "-m", "pytest", "-q", *_PLUGINS]
    args.append("test_small.py" if small else "test_empty.py")
    if row == NOT_LOADED:
        args += ["-p", "no:flightlog"]
    elif row in (ON, ON_SMALL):
        args.append(f"--flightlog={base / f'store-{run}-{small}'}")
    started = time.perf_counter()
    subprocess.run(args, cwd=base, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its table.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    runs = args.runs or (2 if args.quick else 7)
    tests = args.tests or (200 if args.quick else 2_000)
    started = time.perf_counter()
    samples: dict[str, list[float]] = {NOT_LOADED: [], OFF: [], ON: [], OFF_SMALL: [], ON_SMALL: []}
    small = tests // 10
    with workdir(args.dir, "flightlog-bench-pytest-") as base:
        print(machine(base, ("pytest",)) + "\n", flush=True)
        print(f"{runs} runs per row, alternating, {tests:,} empty tests; load {load()}\n")
        (base / "test_empty.py").write_text(_TESTS.format(n=tests))
        (base / "test_small.py").write_text(_TESTS.format(n=small))
        _time_once(base, OFF, -1)  # writes the bytecode caches
        _time_once(base, OFF_SMALL, -1)
        for run in range(runs):
            for row, times in samples.items():
                times.append(_time_once(base, row, run))
            note(f"  run {run + 1}/{runs}")
    wall = {row: median(times) for row, times in samples.items()}
    added, added_small = wall[ON] - wall[OFF], wall[ON_SMALL] - wall[OFF_SMALL]
    per_test = (added - added_small) / (tests - small)
    fixed = added_small - per_test * small
    rows = [
        [
            row,
            duration(wall[row]),
            duration(min(times)),
            f"{wall[row] / wall[OFF_SMALL if row in (OFF_SMALL, ON_SMALL) else OFF]:.2f}x",
        ]
        for row, times in samples.items()
    ]
    print(table(["pytest run", "median", "min", "vs off"], rows, "lrrr"))
    print(
        f"\nrecording adds {duration(added)} to {tests:,} tests and {duration(added_small)} to"
        f" {small:,}: {duration(per_test)} per test and {duration(fixed)} per run"
    )
    off_cost = wall[OFF] - wall[NOT_LOADED]
    report = Report("pytest")
    report.goals = [
        Goal(
            "pytest plugin off: start-up cost",
            max(off_cost, 0.0),
            OFF_GOAL_S,
            "s",
            "lower",
            f"median off - median not loaded, {runs} runs of {tests:,} tests",
        )
    ]
    report.figures = {**wall, "recording per test": per_test, "recording per run": fixed}
    print("\n## Goals\n\n" + goals_table(report.goals) + "\n")
    print(f"whole run: {duration(time.perf_counter() - started)}, load average {load()}")
    report.write(args.json)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=None, help="empty tests (2,000; 200 quick)")
    parser.add_argument("--runs", type=int, default=None, help="runs per row (7; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke test for CI")
    parser.add_argument("--dir", default=None, help="where to write the test file and stores")
    parser.add_argument("--json", default=None, help="also write the goals and figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

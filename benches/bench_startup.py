"""Start-up cost: ``import flightlog`` in a fresh interpreter, beside the modules users would
import instead, and the first ``flightlog.open()``.

    python benches/bench_startup.py [--runs N] [--quick] [--dir DIR] [--json PATH]

Each figure is the median of ``--runs`` fresh ``python -c`` processes (default 15) timing
the statement with ``time.perf_counter`` inside the process, so the interpreter's own
start-up is not counted; the runs of every row alternate. The children run with bytecode
caches written and warm (``PYTHONDONTWRITEBYTECODE`` is dropped and every row runs once
untimed), as an installed package has them: without them each run would time compiling the
sources. ``python -X importtime`` then names the slowest modules ``import flightlog`` loads.

The goal row is the import as a user's ``pip install flightlog`` gets it: only flightlog and
its one dependency, msgspec, importable. It imports ``Store`` and ``Trace``, not just the
package, so that it counts the core, msgspec and the records whether or not the package
defers loading them to first use. A development venv also holds
``typing_extensions`` (mypy's), and msgspec imports it when present, which costs ~25% more;
the row "in this venv" shows that.
"""

from __future__ import annotations

import argparse
import os
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
    percentile,
    table,
    workdir,
)

IMPORT_GOAL_S = 0.030

# Hides every site-packages entry except the two packages a user's install has.
_USER_INSTALL = (
    "import sys; sys.path[:] = [{only!r}] + [p for p in sys.path if 'site-packages' not in p]"
)
GOAL_ROW = "from flightlog import Store, Trace (flightlog + msgspec only)"

# (row, setup run untimed, timed statement); {path} is a fresh directory per run,
# {only} a directory holding just flightlog and msgspec.
ROWS: list[tuple[str, str, str]] = [
    (GOAL_ROW, _USER_INSTALL, "from flightlog import Store, Trace"),
    ("import msgspec (its one dependency), msgspec only", _USER_INSTALL, "import msgspec"),
    ("from flightlog import Store, Trace, in this venv", "", "from flightlog import Store, Trace"),
    ("import sqlite3", "", "import sqlite3"),
    ("import lmdb, msgspec", "", "import lmdb, msgspec"),
    (
        "import opentelemetry.sdk.trace",
        "",
        "import opentelemetry.sdk.trace, opentelemetry.sdk.trace.export",
    ),
    ("import flightlog; flightlog.open(new)", "", "import flightlog; flightlog.open({path!r})"),
    (
        "flightlog.open(new), after the import",
        "import flightlog",
        "flightlog.open({path!r})",
    ),
    (
        "flightlog.open(new).log(trace) + flush(), after the import",
        "import flightlog",
        "s = flightlog.open({path!r}); s.log(agent_name='a', input='hi'); s.flush()",
    ),
]

_PROGRAM = """
import time
{setup}
t0 = time.perf_counter()
{statement}
print(time.perf_counter() - t0)
"""


def _time_once(setup: str, statement: str, path: Path, only: Path) -> float:
    program = _PROGRAM.format(
        setup=setup.format(only=str(only)), statement=statement.format(path=str(path))
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env
    ).stdout
    return float(out.strip().splitlines()[-1])


def _only_flightlog_and_msgspec(base: Path) -> Path:
    """A directory holding links to just the flightlog and msgspec packages."""
    import flightlog
    import msgspec

    only = base / "only"
    only.mkdir()
    for module in (flightlog, msgspec):
        package = Path(module.__file__ or "").parent
        (only / package.name).symlink_to(package, target_is_directory=True)
    return only


def _importtime(top: int) -> list[tuple[str, float, float]]:
    """The modules ``import flightlog`` spends most time in: (module, self s, cumulative s)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from flightlog import Store, Trace"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        modules.append((name.strip(), int(self_us) / 1e6, int(cumulative_us) / 1e6))
    return sorted(modules, key=lambda m: m[1], reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its table.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    runs = args.runs or (3 if args.quick else 15)
    started = time.perf_counter()
    report = Report("startup")
    samples: dict[str, list[float]] = {name: [] for name, _, _ in ROWS}
    with workdir(args.dir, "flightlog-bench-startup-") as base:
        print(machine(base, ("msgspec", "lmdb", "opentelemetry-sdk")) + "\n", flush=True)
        print(f"{runs} fresh processes per row, alternating; load average {load()}\n")
        only = _only_flightlog_and_msgspec(base)
        for i, (_, setup, statement) in enumerate(ROWS):  # writes the bytecode caches
            _time_once(setup, statement, base / f"warm-{i}", only)
        for run in range(runs):
            for i, (name, setup, statement) in enumerate(ROWS):
                samples[name].append(_time_once(setup, statement, base / f"store-{run}-{i}", only))
            note(f"  run {run + 1}/{runs}")
        rows = [
            [
                name,
                duration(median(times)),
                duration(min(times)),
                duration(percentile(times, 0.9)),
            ]
            for name, times in samples.items()
        ]
        print(table(["statement (fresh process)", "median", "min", "p90"], rows))
        slowest = _importtime(8)
    print(
        "\nslowest modules under `import flightlog` (`python -X importtime`, one run, self time"
        " / cumulative):\n"
        + "\n".join(f"  {name:<36} {duration(s):>10} {duration(c):>10}" for name, s, c in slowest)
        + "\n"
    )
    measured = median(samples[GOAL_ROW])
    report.goals = [
        Goal(
            "import flightlog",
            measured,
            IMPORT_GOAL_S,
            "s",
            "lower",
            f"median of {runs} fresh processes; only flightlog + msgspec importable, as a"
            " user's install has",
        )
    ]
    report.figures = {name: median(times) for name, times in samples.items()}
    print("## Goals\n\n" + goals_table(report.goals) + "\n")
    print(f"whole run: {duration(time.perf_counter() - started)}, load average {load()}")
    report.write(args.json)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=None, help="fresh processes per row (15; 3 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="3 runs: a smoke test for CI")
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: the temp directory)"
    )
    parser.add_argument("--json", default=None, help="also write the goals and figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

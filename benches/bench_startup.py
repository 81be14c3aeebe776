"""Start-up cost: ``import flightlog`` in a fresh interpreter, beside the modules users would
import instead, and the first ``flightlog.open()``.

    python benches/bench_startup.py [--runs N] [--quick] [--dir DIR] [--json PATH]

Each figure is the median of ``--runs`` fresh ``python -c`` processes (default 15) timing
the statement with ``time.perf_counter`` inside the process, so the interpreter's own
start-up is not counted; the runs of every row alternate. ``python -X importtime`` then
names the slowest modules ``import flightlog`` loads.
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
    percentile,
    table,
    workdir,
)

IMPORT_GOAL_S = 0.030

# (row, setup run untimed, timed statement); {path} is a fresh directory per run.
ROWS: list[tuple[str, str, str]] = [
    ("import flightlog", "", "import flightlog"),
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


def _time_once(setup: str, statement: str, path: Path) -> float:
    program = _PROGRAM.format(setup=setup, statement=statement.format(path=str(path)))
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def _importtime(top: int) -> list[tuple[str, float, float]]:
    """The modules ``import flightlog`` spends most time in: (module, self s, cumulative s)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import flightlog"],
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
        for run in range(runs):
            for i, (name, setup, statement) in enumerate(ROWS):
                samples[name].append(_time_once(setup, statement, base / f"store-{run}-{i}"))
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
    measured = median(samples["import flightlog"])
    report.goals = [
        Goal(
            "import flightlog",
            measured,
            IMPORT_GOAL_S,
            "s",
            "lower",
            f"median of {runs} fresh processes",
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

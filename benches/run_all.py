"""Runs every benchmark, one after the other, and prints all their tables and then every goal
of the issue with its measured figure in one table.

    python benches/run_all.py [--quick] [--dir DIR] [--sustained N] [--query-traces N,...]
                              [--only NAME ...] [--skip NAME ...] [--out FILE]

Each benchmark runs in its own fresh process (so that memory and import figures are its
own), in this order: startup, ingest, spans, threads, sustained, pytest, query (once per
size in ``--query-traces``). The full run takes hours, most of them the 10M-trace sustained run and
the 1M-trace query stores; ``--quick`` runs every benchmark's smoke test in about a minute.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from common import Goal, Report, duration, goals_table, load, machine, table

HERE = Path(__file__).resolve().parent


@dataclass
class Bench:
    name: str
    script: str
    args: list[str]


def _benches(args: argparse.Namespace) -> list[Bench]:
    common = ["--quick"] if args.quick else []
    if args.dir:
        common += ["--dir", args.dir]
    sustained = [] if args.quick else ["--traces", str(args.sustained)]
    benches = [
        Bench("startup", "bench_startup.py", common),
        Bench("ingest", "bench_ingest.py", common),
        Bench("spans", "bench_spans.py", common),
        Bench("threads", "bench_threads.py", common),
        Bench("sustained", "bench_sustained.py", common + sustained),
        Bench("pytest", "bench_pytest.py", common),
    ]
    sizes = [None] if args.quick else [int(n) for n in args.query_traces.split(",")]
    for size in sizes:
        extra = [] if size is None else ["--traces", str(size)]
        name = "query" if size is None else f"query-{size:,}"
        benches.append(Bench(name, "bench_query.py", common + extra))
    return [
        b
        for b in benches
        if (not args.only or any(b.name.startswith(o) for o in args.only))
        and not any(b.name.startswith(s) for s in args.skip or [])
    ]


def _run(bench: Bench, json_path: Path, out: list[TextIO]) -> tuple[int, float]:
    """Runs one benchmark, copying its report to ``out`` as it comes."""
    command = [sys.executable, str(HERE / bench.script), *bench.args, "--json", str(json_path)]
    _write(out, f"\n# {bench.name}\n\n`python benches/{bench.script} {' '.join(bench.args)}`\n\n")
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as child:
        assert child.stdout is not None
        for line in child.stdout:
            _write(out, line)
    return child.returncode, time.perf_counter() - started


def _write(out: list[TextIO], text: str) -> None:
    for stream in out:
        stream.write(text)
        stream.flush()


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmarks and prints their reports and the goals.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status: 1 if a benchmark failed (not if a goal was missed).
    """
    args = _parse(argv)
    out: list[TextIO] = [sys.stdout]
    log = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
    if log:
        out.append(log)
    started = time.perf_counter()
    _write(out, machine(args.dir) + "\n")
    goals: list[Goal] = []
    times: list[list[str]] = []
    failed = []
    try:
        with tempfile.TemporaryDirectory(prefix="flightlog-run-all-") as scratch:
            for bench in _benches(args):
                json_path = Path(scratch) / f"{bench.name}.json"
                status, seconds = _run(bench, json_path, out)
                times.append([bench.name, duration(seconds), "ok" if status == 0 else "failed"])
                if status != 0 or not json_path.exists():
                    failed.append(bench.name)
                    continue
                goals += Report.read(json_path).goals
        _write(out, "\n# All goals\n\n" + goals_table(goals) + "\n\n")
        _write(out, table(["benchmark", "run time", "status"], times, "lrl") + "\n\n")
        _write(
            out,
            f"whole suite: {duration(time.perf_counter() - started)}, load average {load()}\n",
        )
    finally:
        if log:
            log.close()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every smoke test, ~1 minute")
    parser.add_argument(
        "--dir", default=None, help="where the stores go (default: the temp directory)"
    )
    parser.add_argument(
        "--sustained",
        type=int,
        default=10_000_000,
        help="traces of the sustained run (10000000; fewer if the disk cannot hold them)",
    )
    parser.add_argument(
        "--query-traces",
        default="100000,1000000",
        help="store sizes of the query benchmark (100000,1000000)",
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--skip", action="append", metavar="NAME", help="skip these benchmarks")
    parser.add_argument("--out", default=None, help="also write the whole report to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

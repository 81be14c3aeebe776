"""What the benchmarks share: machine facts, percentiles, memory and disk readings, tables,
the issue's goals and the JSON hand-off to ``run_all.py``.

Not a benchmark itself; each ``bench_*.py`` script imports it (they run as scripts, so this
directory is on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
MISSING = "\u2013"  # an en dash: a table cell with no figure

# --- numbers ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 to 1) of ``samples``, which need not be sorted."""
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def duration(seconds: float) -> str:
    """A duration in the unit that reads best: µs, ms or s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    if seconds < 600:
        return f"{seconds:,.1f} s"
    return f"{seconds / 60:,.1f} min"


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# --- the process and the disk ----------------------------------------------------------------


def memory() -> dict[str, int]:
    """This process's resident memory in bytes, from ``/proc/self/status``: ``rss`` (all),
    ``anon`` (heap and other private memory) and ``file`` (mapped files, such as LMDB's map,
    which the kernel may drop at will). Zeros where the kernel does not say."""
    wanted = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    found = dict.fromkeys(wanted.values(), 0)
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in wanted:
                    found[wanted[key]] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def du(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (a file or a directory), like ``du -s``: LMDB
    files can be sparse, so their length says little."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@contextmanager
def workdir(base: str | None, prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh directory for a benchmark's stores under ``base`` (default: the temp dir),
    removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def fresh(parent: Path, name: str) -> Path:
    """``parent/name``, emptied: each run of a contender starts from nothing."""
    path = parent / name
    shutil.rmtree(path, ignore_errors=True)
    return path


# --- the machine -----------------------------------------------------------------------------


def load() -> str:
    """The load average (1, 5, 15 minutes): on a shared machine, whether others were busy."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    """The library's git commit, marked ``(modified)`` when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' (modified)' if dirty else ''}"


def _versions(names: Sequence[str]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _disk(path: Path) -> str:
    """The filesystem under ``path``: its device, type, and free space."""
    best = ("?", "?", "")
    try:
        resolved = str(path.resolve())
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, kind = line.split()[:3]
                inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[2]):
                    best = (device, kind, point)
    except OSError:
        pass
    return f"{best[0]} ({best[1]}), {free_bytes(path) / 2**30:,.0f} GiB free"


def machine(workdir: Path | str | None, packages: Sequence[str] = ("msgspec", "lmdb")) -> str:
    """The facts a reader needs to weigh the figures: CPU, cores, RAM, kernel, load, Python,
    library versions and commit, and the disk the stores go to."""
    cpu = platform.processor() or "unknown CPU"
    ram = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
        with open("/proc/meminfo", encoding="utf-8") as info:
            kib = next(int(line.split()[1]) for line in info if line.startswith("MemTotal"))
            ram = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    where = Path(workdir or tempfile.gettempdir())
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {ram} RAM, "
        f"{platform.system()} {platform.release()}, load average {load()}\n"
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{_versions(('flightlog', *packages))}, sqlite {sqlite3.sqlite_version}, "
        f"flightlog commit {commit()}\n"
        f"stores under {where}: {_disk(where)}"
    )


def note(message: str) -> None:
    """Progress for the person watching, on stderr so that stdout stays the report."""
    print(message, file=sys.stderr, flush=True)


# --- tables ----------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table. ``align`` has one letter per column, ``l`` or ``r`` (default: the
    first column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


# --- goals and the JSON hand-off -------------------------------------------------------------


@dataclass
class Goal:
    """One of the issue's goals with the figure measured for it.

    ``measured`` and ``target`` are numbers in ``unit``; ``better`` says which way is good.
    ``met`` is computed unless given (for goals that are a judgement, such as "flat").
    """

    name: str
    measured: float
    target: float
    unit: str
    better: Literal["higher", "lower"]
    detail: str = ""
    met: bool | None = None

    def __post_init__(self) -> None:
        if self.met is None:
            if self.better == "higher":
                self.met = self.measured >= self.target
            else:
                self.met = self.measured <= self.target

    @property
    def ratio(self) -> float:
        """How far the figure is from the goal: above 1 is better than the goal."""
        if self.better == "higher":
            return self.measured / self.target if self.target else float("inf")
        return self.target / self.measured if self.measured else float("inf")


def _figure(value: float, unit: str) -> str:
    if unit == "s":
        return duration(value)
    if unit == "x":
        return f"{value:,.2f}x"
    if unit == "%":
        return f"{value:+,.1f}%"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:,.2f} {unit}".rstrip()


def goals_table(goals: Sequence[Goal]) -> str:
    """The goals as a markdown table: measured, goal, met, and how far from the goal
    (``Goal.ratio``: above 1, better than the goal by that factor)."""
    rows = []
    for g in goals:
        sign = "≥" if g.better == "higher" else "≤"
        rows.append(
            [
                g.name,
                _figure(g.measured, g.unit),
                f"{sign} {_figure(g.target, g.unit)}",
                "yes" if g.met else "**no**",
                f"{g.ratio:,.2f}",
                g.detail,
            ]
        )
    return table(["goal", "measured", "target", "met", "vs goal", "how"], rows, "lrrlrl")


@dataclass
class Report:
    """What a benchmark hands to ``run_all.py`` (``--json PATH``): its goals and any figures
    worth keeping, besides the tables it printed."""

    bench: str
    goals: list[Goal] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @staticmethod
    def read(path: Path) -> Report:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Report(data["bench"], [Goal(**g) for g in data["goals"]], data["figures"])

"""Query benchmark: flightlog ``get`` / ``query`` / ``count`` / ``stats`` against SQLite.

    python benches/bench_query.py [--traces N] [--quick] [--repeat R] [--budget S]
                                  [--dir DIR] [--keep]

Builds the same standard traces (``flightlog.sample.standard_trace``, spread over 30 days,
about 8% of them failed) into a flightlog store and into an SQLite table with the obvious
indexes, checks that both answer every query alike, then times each query on both, in the
same run, with seeded random arguments (the same on both sides). Prints a markdown table
with the issue's goals. See ``benches/README.md`` for what each row runs on either side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flightlog
import msgspec
from common import Goal, Report, commit, load, machine
from flightlog.records import UNSET, Stats, Trace
from flightlog.sample import BASE_TIME, standard_trace

DEFAULT_TRACES = 1_000_000
QUICK_TRACES = 2000  # enough for every agent to have a second page of 50
CHUNK = 1000  # traces per log_many() call (and per generated chunk)
SQLITE_TXN = 10_000  # rows per SQLite transaction while building
END = BASE_TIME  # the newest traces start just before this instant
SPAN = dt.timedelta(days=30)  # the traces start over the 30 days before END
FAILED = 0.08  # share of failed traces, like flightlog.sample.sample_traces
SEED = 20251122
MIN_REPS = 5  # even past the time budget
LAYOUT = 1  # bump when the data or the SQLite layout changes: --keep then rebuilds
GOALS_AT = 1_000_000  # the store size the goals are stated for

Store = flightlog.Store
Db = sqlite3.Connection


# --- data --------------------------------------------------------------------------------------


def _trace(rng: random.Random, i: int, count: int) -> Trace:
    """Trace ``i`` of ``count``: standard, logged in time order over ``SPAN`` (each starts
    within the 6 hours before its slot, as ``standard_trace`` does), some of them failed."""
    base = END - SPAN * ((count - 1 - i) / count)
    trace = standard_trace(rng, base=base)
    if rng.random() < FAILED:
        # As flightlog.sample does: a tool failed, so did its span, the root and the run.
        k = int(rng.random() * len(trace.tool_calls))
        message = "tool call timed out after 30000 ms"
        trace.status = "failed"
        trace.tool_calls[k].error = message
        trace.tool_calls[k].output = UNSET
        tools = [s for s in trace.spans if s.kind == "TOOL"]
        for span in (tools[k], trace.spans[0]):
            span.status_code = "ERROR"
            span.status_message = message
    return trace


def _iso(instant: dt.datetime) -> str:
    """Fixed-width UTC ISO-8601 text: sorts like the instants and SQLite's date functions
    read it."""
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SQLITE_SCHEMA = """
CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    framework TEXT,
    run_id TEXT,
    request_id TEXT,
    session_id TEXT,
    status TEXT,
    has_errors INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    latency_ms REAL,
    cost_usd REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    total_tokens INTEGER,
    span_count INTEGER NOT NULL,
    tags TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX traces_agent ON traces (agent_name);
CREATE INDEX traces_agent_time ON traces (agent_name, timestamp);
CREATE INDEX traces_time ON traces (timestamp);
CREATE INDEX traces_status ON traces (status);
CREATE INDEX traces_run ON traces (run_id);
"""

_SUMMARY = (
    "trace_id, agent_name, timestamp, framework, status, has_errors, latency_ms, "
    "prompt_tokens, completion_tokens, total_tokens, cost_usd, run_id, request_id, "
    "session_id, span_count, tags"
)

Row = tuple[Any, ...]


def _row(trace_id: str, t: Trace) -> Row:
    """The SQLite row of a trace: the summary columns, then the whole trace as JSON."""
    t.trace_id = trace_id
    usage = t.token_usage
    has_errors = (
        t.status == "failed"
        or any(s.status_code == "ERROR" for s in t.spans)
        or any(c.error is not UNSET for c in t.tool_calls)
    )

    def opt(value: object) -> object:
        return None if value is UNSET else value

    assert isinstance(t.timestamp, dt.datetime)
    return (
        trace_id,
        t.agent_name,
        opt(t.framework),
        opt(t.run_id),
        opt(t.request_id),
        opt(t.session_id),
        opt(t.status),
        int(has_errors),
        _iso(t.timestamp),
        opt(t.latency_ms),
        opt(t.cost_usd),
        None if usage is UNSET else opt(usage.prompt_tokens),
        None if usage is UNSET else opt(usage.completion_tokens),
        None if usage is UNSET else opt(usage.total_tokens),
        len(t.spans),
        json.dumps(t.tags),
        msgspec.json.encode(t).decode(),
    )


@dataclass
class Built:
    """What the build produced (kept in ``manifest.json`` for ``--keep``)."""

    layout: int
    traces: int
    generate_s: float
    flightlog_s: float
    sqlite_s: float
    sqlite_analyze_s: float
    built_at: str
    commit: str = "unknown"  # flightlog's commit when the stores were built


def _build(count: int, workdir: Path) -> Built:
    """Writes the same traces into both stores: chunks of ``CHUNK`` generated once, each
    logged with ``log_many`` + ``flush`` (so flightlog's writer does not run behind, into
    SQLite's time), then inserted into SQLite, ``SQLITE_TXN`` rows per transaction."""
    store = flightlog.open(workdir / "flightlog")
    db = sqlite3.connect(workdir / "traces.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SQLITE_SCHEMA)
    insert = f"INSERT INTO traces VALUES ({','.join('?' * 17)})"
    rng = random.Random(SEED)
    clock = time.perf_counter
    generate_s = flightlog_s = sqlite_s = 0.0
    in_txn = 0
    db.execute("BEGIN")
    for first in range(0, count, CHUNK):
        t0 = clock()
        chunk = [_trace(rng, i, count) for i in range(first, min(first + CHUNK, count))]
        t1 = clock()
        ids = store.log_many(chunk)
        store.flush()
        t2 = clock()
        db.executemany(insert, [_row(tid, t) for tid, t in zip(ids, chunk, strict=True)])
        in_txn += len(chunk)
        if in_txn >= SQLITE_TXN:
            db.execute("COMMIT")
            db.execute("BEGIN")
            in_txn = 0
        t3 = clock()
        generate_s += t1 - t0
        flightlog_s += t2 - t1
        sqlite_s += t3 - t2
        done = first + len(chunk)
        if done % 100_000 == 0:
            print(f"  built {done:,} / {count:,}", file=sys.stderr, flush=True)
    t0 = clock()
    db.execute("COMMIT")
    db.close()
    store.close()
    sqlite_s += clock() - t0
    # What the SQLite docs advise for a database that is queried: give the planner
    # statistics. Reported separately.
    t0 = clock()
    db = sqlite3.connect(workdir / "traces.db", isolation_level=None)
    db.execute("ANALYZE")
    db.close()
    analyze_s = clock() - t0
    return Built(
        LAYOUT,
        count,
        generate_s,
        flightlog_s,
        sqlite_s,
        analyze_s,
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        commit(),
    )


def _prepare(count: int, base: Path, keep: bool) -> tuple[Path, Built, bool]:
    """The directory holding both stores, built now or (``--keep``) by an earlier run."""
    if not keep:
        workdir = Path(tempfile.mkdtemp(prefix="flightlog-bench-query-", dir=base))
        return workdir, _build(count, workdir), True
    workdir = base / f"flightlog-bench-query-{count}"
    manifest = workdir / "manifest.json"
    if manifest.exists():
        built = msgspec.json.decode(manifest.read_bytes(), type=Built)
        if built.layout == LAYOUT and built.traces == count:
            return workdir, built, False
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    built = _build(count, workdir)
    manifest.write_bytes(msgspec.json.encode(built))
    return workdir, built, True


# --- the SQLite side -----------------------------------------------------------------------


def _sqlite_get(db: Db, trace_id: str) -> Any:
    (text,) = db.execute("SELECT json FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
    return json.loads(text)


def _sqlite_page(db: Db, agent: str, after: tuple[str, str] | None = None) -> list[Row]:
    """Newest first; ``after`` is the (timestamp, trace_id) of the previous page's last row."""
    if after is None:
        return db.execute(
            f"SELECT {_SUMMARY} FROM traces WHERE agent_name = ? "
            "ORDER BY timestamp DESC, trace_id DESC LIMIT 50",
            (agent,),
        ).fetchall()
    return db.execute(
        f"SELECT {_SUMMARY} FROM traces WHERE agent_name = ? "
        "AND (timestamp, trace_id) < (?, ?) ORDER BY timestamp DESC, trace_id DESC LIMIT 50",
        (agent, *after),
    ).fetchall()


def _sqlite_since(db: Db, agent: str, since: str) -> list[Row]:
    return db.execute(
        f"SELECT {_SUMMARY} FROM traces WHERE agent_name = ? AND timestamp >= ? "
        "ORDER BY timestamp DESC, trace_id DESC LIMIT 50",
        (agent, since),
    ).fetchall()


def _sqlite_slowest(db: Db) -> list[Row]:
    return db.execute(
        f"SELECT {_SUMMARY} FROM traces "
        "ORDER BY latency_ms DESC, timestamp DESC, trace_id DESC LIMIT 50"
    ).fetchall()


def _sqlite_count(db: Db, where: str = "", params: tuple[str, ...] = ()) -> int:
    (n,) = db.execute(f"SELECT count(*) FROM traces {where}", params).fetchone()
    return int(n)


def _sqlite_stats(
    db: Db, condition: str = "", params: tuple[str, ...] = (), group_by: str | None = None
) -> dict[str, Any]:
    """The figures of ``Store.stats`` the way an SQLite user gets them: an aggregate query,
    the latencies fetched in order to pick the percentiles, and GROUP BY queries for the
    hours and the busiest agents; with ``group_by``, all of it again per group."""
    overall = _sqlite_tally(db, condition, params, None)[None]
    if group_by is not None:
        overall["groups"] = _sqlite_tally(db, condition, params, group_by)
    return overall


def _where(*conditions: str) -> str:
    kept = [c for c in conditions if c]
    return f"WHERE {' AND '.join(kept)}" if kept else ""


def _sqlite_tally(
    db: Db, condition: str, params: tuple[str, ...], key: str | None
) -> dict[Any, dict[str, Any]]:
    """The stats of each value of column ``key``, or of everything (under ``None``).

    Without ``key`` the queries have no GROUP BY at all: grouping by a constant makes SQLite
    sort through a temporary B-tree.
    """
    conditions = (condition, f"{key} IS NOT NULL" if key else "")
    matching = _where(*conditions)
    by = f"{key}, " if key else ""  # the leading column and GROUP BY term, when grouping

    def rows(sql: str) -> list[Row]:
        found = db.execute(sql, params).fetchall()
        return found if key else [(None, *row) for row in found]

    tallies: dict[Any, dict[str, Any]] = {}
    for g, n, errors, prompt, completion, total, cost, costs in rows(
        f"SELECT {by}count(*), sum(has_errors), sum(prompt_tokens), sum(completion_tokens), "
        f"sum(total_tokens), sum(cost_usd), count(cost_usd) FROM traces {matching}"
        + (f" GROUP BY {key}" if key else "")
    ):
        if not n:
            continue
        tallies[g] = {
            "count": n,
            "error_count": errors,
            "error_rate": errors / n,
            "prompt_tokens": prompt or 0,
            "completion_tokens": completion or 0,
            "total_tokens": total or 0,
            "cost_usd": cost or 0.0,
            "mean_cost_usd": cost / costs if costs else None,
            "latency_p50_ms": None,
            "latency_p95_ms": None,
            "latency_p99_ms": None,
            "per_hour": {},
            "top_agents": [],
            "groups": {},
        }
    # One sort of every latency, fetched, picked at nearest rank (the ceil(p/100 * n)-th
    # smallest, as flightlog). Faster here than LIMIT 1 OFFSET k per percentile (a sort
    # each) or ranking with row_number() over a window.
    latencies: dict[Any, list[float]] = defaultdict(list)
    for g, latency in rows(
        f"SELECT {by}latency_ms FROM traces {_where(*conditions, 'latency_ms IS NOT NULL')} "
        f"ORDER BY {by}latency_ms"
    ):
        latencies[g].append(latency)
    for g, ordered in latencies.items():
        for p in (50, 95, 99):
            tallies[g][f"latency_p{p}_ms"] = ordered[(p * len(ordered) + 99) // 100 - 1]
    # The hour is a prefix of the fixed-width ISO text: substr() is ~2.5x cheaper than
    # strftime('%Y-%m-%dT%H', timestamp).
    for g, hour, n in rows(
        f"SELECT {by}substr(timestamp, 1, 13) AS hour, count(*) FROM traces {matching} "
        f"GROUP BY {by}hour"
    ):
        tallies[g]["per_hour"][f"{hour}:00:00Z"] = n
    agents: dict[Any, list[tuple[str, int]]] = defaultdict(list)
    for g, agent, n in rows(
        f"SELECT {by}agent_name, count(*) FROM traces {matching} GROUP BY {by}agent_name"
    ):
        agents[g].append((agent, n))
    for g, counts in agents.items():
        tallies[g]["top_agents"] = sorted(counts, key=lambda a: (-a[1], a[0]))[:10]
    return tallies


# --- the operations ----------------------------------------------------------------------


@dataclass
class Op:
    """One query, run on both sides with the same arguments."""

    name: str
    flightlog: Callable[[Any], object]
    sqlite: Callable[[Any], object]
    args: Sequence[Any]
    goal_s: float | None = None  # the goal for the flightlog median, at 1M traces
    goal: str = ""


@dataclass
class Timing:
    """One side's figures for one query, in seconds."""

    reps: int
    p50_s: float
    p95_s: float


def _ops(store: Store, db: Db, ids: list[str], reps: int) -> list[Op]:
    """The timed queries, with ``reps`` seeded arguments each where they take one."""
    rng = random.Random(SEED + 1)
    agents = sorted({a for (a,) in db.execute("SELECT DISTINCT agent_name FROM traces")})
    some_agents = [rng.choice(agents) for _ in range(reps)]
    some_ids = [rng.choice(ids) for _ in range(reps)]
    week_ago = END - dt.timedelta(days=7)
    day_ago = END - dt.timedelta(days=1)
    week_ago_iso, day_ago_iso = _iso(week_ago), _iso(day_ago)
    # Where each agent's first page ends, on either side (what a client keeps between pages).
    cursors: dict[str, str | None] = {}
    keysets: dict[str, tuple[str, str]] = {}
    for agent in agents:
        cursors[agent] = store.query(agent_name=agent, limit=50).next_cursor
        if cursors[agent] is None:
            raise SystemExit(f"{agent} has no second page: use more traces")
        last = _sqlite_page(db, agent)[-1]
        keysets[agent] = (last[2], last[0])
    failed = ("failed",)
    return [
        Op("get(id)", store.get, lambda i: _sqlite_get(db, i), some_ids, 20e-6, "≤ 20 µs"),
        Op(
            "query(agent_name=X, limit=50)",
            lambda a: store.query(agent_name=a, limit=50),
            lambda a: _sqlite_page(db, a),
            some_agents,
            1e-3,
            "≤ 1 ms",
        ),
        Op(
            "query(agent_name=X, limit=50, cursor=page 1's)",
            lambda a: store.query(agent_name=a, limit=50, cursor=cursors[a]),
            lambda a: _sqlite_page(db, a, keysets[a]),
            some_agents,
        ),
        Op(
            "query(agent_name=X, since=7 days ago, limit=50)",
            lambda a: store.query(agent_name=a, since=week_ago, limit=50),
            lambda a: _sqlite_since(db, a, week_ago_iso),
            some_agents,
        ),
        Op(
            "query(order_by=latency_ms, limit=50)",
            lambda _: store.query(order_by="latency_ms", descending=True, limit=50),
            lambda _: _sqlite_slowest(db),
            [None],
        ),
        Op(
            "count(agent_name=X)",
            lambda a: store.count(agent_name=a),
            lambda a: _sqlite_count(db, "WHERE agent_name = ?", (a,)),
            some_agents,
            50e-3,
            "≤ 50 ms",
        ),
        Op("count()", lambda _: store.count(), lambda _: _sqlite_count(db), [None]),
        Op(
            "count(status=failed)",
            lambda _: store.count(status="failed"),
            lambda _: _sqlite_count(db, "WHERE status = ?", failed),
            [None],
        ),
        Op(
            "stats()", lambda _: store.stats(), lambda _: _sqlite_stats(db), [None], 0.3, "≤ 300 ms"
        ),
        Op(
            "stats(agent_name=X)",
            lambda a: store.stats(agent_name=a),
            lambda a: _sqlite_stats(db, "agent_name = ?", (a,)),
            some_agents,
        ),
        Op(
            "stats(since=24 hours ago)",
            lambda _: store.stats(since=day_ago),
            lambda _: _sqlite_stats(db, "timestamp >= ?", (day_ago_iso,)),
            [None],
        ),
        Op(
            "stats(group_by=agent_name)",
            lambda _: store.stats(group_by="agent_name"),
            lambda _: _sqlite_stats(db, group_by="agent_name"),
            [None],
        ),
    ]


def _measure(
    fn: Callable[[Any], object], args: Sequence[Any], reps: int, budget_s: float
) -> Timing:
    """Times ``fn`` on ``args`` in turn, ``reps`` times or until the budget is spent (but at
    least ``MIN_REPS`` times), after one untimed warm-up call."""
    fn(args[-1])
    clock = time.perf_counter_ns
    samples: list[int] = []
    deadline = clock() + int(budget_s * 1e9)
    for i in range(reps):
        a = args[i % len(args)]
        t0 = clock()
        fn(a)
        samples.append(clock() - t0)
        if len(samples) >= MIN_REPS and clock() > deadline:
            break
    samples.sort()
    p95 = samples[min(len(samples) - 1, math.ceil(0.95 * len(samples)) - 1)]
    return Timing(len(samples), statistics.median(samples) / 1e9, p95 / 1e9)


# --- checks: both sides answer alike ------------------------------------------------------


class Mismatch(Exception):
    """flightlog and SQLite answered a query differently: the comparison would be unfair."""


def _same(what: str, ours: object, theirs: object) -> None:
    if ours != theirs:
        raise Mismatch(f"{what}: flightlog {ours!r:.300} != SQLite {theirs!r:.300}")


def _same_stats(what: str, ours: Stats, theirs: dict[str, Any]) -> None:
    for name in ("count", "error_count", "prompt_tokens", "completion_tokens", "total_tokens"):
        _same(f"{what}.{name}", getattr(ours, name), theirs[name])
    for name in ("error_rate", "cost_usd", "mean_cost_usd"):
        a, b = getattr(ours, name), theirs[name]
        if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=1e-9)):
            raise Mismatch(f"{what}.{name}: flightlog {a!r} != SQLite {b!r}")
    for p in (50, 95, 99):
        name = f"latency_p{p}_ms"
        _same(f"{what}.{name}", getattr(ours, name), theirs[name])
    _same(f"{what}.per_hour", ours.per_hour, theirs["per_hour"])
    _same(f"{what}.top_agents", [tuple(a) for a in ours.top_agents], theirs["top_agents"])
    _same(f"{what}.groups", sorted(ours.groups), sorted(theirs["groups"]))
    for g, stats in ours.groups.items():
        _same_stats(f"{what}.groups[{g}]", stats, theirs["groups"][g])


def _check(ops: list[Op]) -> None:
    """Runs every operation once on a few of its arguments and compares the answers."""
    for op in ops:
        for a in list(dict.fromkeys(op.args))[:3]:
            ours, theirs = op.flightlog(a), op.sqlite(a)
            what = f"{op.name} [{a}]"
            if isinstance(ours, Trace):
                assert isinstance(theirs, dict)
                for name in ("trace_id", "agent_name", "input", "output", "status"):
                    _same(f"{what}.{name}", getattr(ours, name), theirs[name])
                _same(f"{what}.spans", len(ours.spans), len(theirs["spans"]))
            elif isinstance(ours, flightlog.Page):
                assert isinstance(theirs, list)
                _same(what, [s.trace_id for s in ours.items], [r[0] for r in theirs])
            elif isinstance(ours, Stats):
                assert isinstance(theirs, dict)
                _same_stats(what, ours, theirs)
            else:
                _same(what, ours, theirs)


# --- report ----------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.2f} s"


def _du(path: Path) -> int:
    """Bytes allocated on disk, like ``du -s``."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _table(ops: list[Op], results: list[tuple[Timing, Timing]], count: int) -> str:
    lines = [
        "| operation | runs | flightlog median | flightlog p95 | SQLite median | SQLite p95 "
        "| SQLite / flightlog | goal (1M traces) | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for op, (ours, theirs) in zip(ops, results, strict=True):
        met = ""
        if op.goal_s is not None:
            met = "yes" if ours.p50_s <= op.goal_s else "**no**"
            if count != GOALS_AT:
                met += f" (at {count:,})"
        runs = f"{ours.reps}" if ours.reps == theirs.reps else f"{ours.reps} / {theirs.reps}"
        lines.append(
            f"| `{op.name}` | {runs} | {_duration(ours.p50_s)} | {_duration(ours.p95_s)} "
            f"| {_duration(theirs.p50_s)} | {_duration(theirs.p95_s)} "
            f"| {theirs.p50_s / ours.p50_s:,.1f}x | {op.goal} | {met} |"
        )
    return "\n".join(lines)


def _report(ops: list[Op], results: list[tuple[Timing, Timing]], count: int) -> Report:
    """The goals for ``run_all.py``: flightlog's median against each goal, at this size."""
    report = Report("query")
    for op, (ours, theirs) in zip(ops, results, strict=True):
        report.figures[op.name] = {"flightlog_p50_s": ours.p50_s, "sqlite_p50_s": theirs.p50_s}
        if op.goal_s is not None:
            report.goals.append(
                Goal(
                    f"`{op.name}` at {count:,} traces",
                    ours.p50_s,
                    op.goal_s,
                    "s",
                    "lower",
                    f"median; SQLite {_duration(theirs.p50_s)}; goal stated at {GOALS_AT:,}",
                )
            )
    return report


def _plans(db: Db) -> str:
    """SQLite's plan for the queries that have one shape, so a reader sees the indexes used."""
    queries = {
        "get": ("SELECT json FROM traces WHERE trace_id = ?", ("x",)),
        "page": (
            f"SELECT {_SUMMARY} FROM traces WHERE agent_name = ? "
            "ORDER BY timestamp DESC, trace_id DESC LIMIT 50",
            ("x",),
        ),
        "page 2": (
            f"SELECT {_SUMMARY} FROM traces WHERE agent_name = ? "
            "AND (timestamp, trace_id) < (?, ?) ORDER BY timestamp DESC, trace_id DESC LIMIT 50",
            ("x", "t", "i"),
        ),
        "count agent": ("SELECT count(*) FROM traces WHERE agent_name = ?", ("x",)),
        "count status": ("SELECT count(*) FROM traces WHERE status = ?", ("x",)),
        "since 24h": ("SELECT count(*) FROM traces WHERE timestamp >= ?", ("x",)),
    }
    lines = ["SQLite query plans:"]
    for name, (sql, params) in queries.items():
        steps = "; ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        lines.append(f"  {name:<13} {steps}")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its report.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    count = QUICK_TRACES if args.quick else args.traces
    reps = min(args.repeat, 20) if args.quick else args.repeat
    budget = 0.2 if args.quick else args.budget
    base = Path(args.dir or tempfile.gettempdir())
    started = time.perf_counter()
    workdir, built, fresh = _prepare(count, base, args.keep)
    try:
        print(machine(workdir, ("msgspec",)), flush=True)
        print(
            f"\n{count:,} standard traces over {SPAN.days} days, "
            f"{FAILED:.0%} failed; "
            + (
                "built now"
                if fresh
                else f"built {built.built_at} at commit {built.commit} (--keep)"
            )
            + f": generating {built.generate_s:,.1f} s, "
            f"flightlog log_many({CHUNK}) + flush {built.flightlog_s:,.1f} s, "
            f"SQLite inserts ({SQLITE_TXN:,} per transaction, 5 indexes) {built.sqlite_s:,.1f} s "
            f"+ ANALYZE {built.sqlite_analyze_s:,.1f} s"
        )
        fl_bytes = _du(workdir / "flightlog")
        sq_bytes = _du(workdir / "traces.db")
        print(
            f"on disk: flightlog {fl_bytes / 2**20:,.0f} MiB ({fl_bytes / count:,.0f} B/trace), "
            f"SQLite {sq_bytes / 2**20:,.0f} MiB ({sq_bytes / count:,.0f} B/trace)",
            flush=True,
        )
        store = flightlog.open(workdir / "flightlog")
        db = sqlite3.connect(workdir / "traces.db", isolation_level=None)
        try:
            ids = [i for (i,) in db.execute("SELECT trace_id FROM traces")]
            ops = _ops(store, db, ids, reps)
            _check(ops)
            print("checked: both sides return the same answers to every query\n")
            print(_plans(db) + "\n", flush=True)
            del ids
            gc.collect()
            gc.freeze()
            print(f"timing: load average {load()}", file=sys.stderr, flush=True)
            results = []
            for op in ops:
                print(f"  {op.name} ...", file=sys.stderr, flush=True)
                ours = _measure(op.flightlog, op.args, reps, budget)
                theirs = _measure(op.sqlite, op.args, reps, budget)
                results.append((ours, theirs))
            print(f"load average after timing: {load()}\n")
            print(_table(ops, results, count))
            _report(ops, results, count).write(args.json)
        finally:
            store.close()
            db.close()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nwhole run: {time.perf_counter() - started:,.0f} s")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traces", type=int, default=DEFAULT_TRACES, help="traces in each store (1000000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_TRACES} traces: a smoke test for CI"
    )
    parser.add_argument(
        "--repeat", type=int, default=1000, help="most timed runs of each query per side (1000)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=5.0,
        help=f"seconds of timed runs per query and side, at least {MIN_REPS} runs (5)",
    )
    parser.add_argument(
        "--dir", default=None, help="where to create the stores (default: the temp directory)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the stores in DIR/flightlog-bench-query-N and reuse them on the next run",
    )
    parser.add_argument("--json", default=None, help="also write the goals and figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

"""Process kills (RELIABILITY.md tests 1 and 2): whatever was acknowledged survives SIGKILL,
a batch is stored whole or not at all, and nothing is acknowledged before its commit.

The child logs batches of traces whose content is a function of (cycle, batch, index) and
reports each acknowledgement over a pipe: in ``sync`` mode when ``log_many`` returns, in
``group`` and ``none`` mode when ``flush`` returns. The parent kills it, reopens the store,
and checks every acknowledged trace and every trace present against that function.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import flightlog
import pytest
from faults import LONG, assert_check_clean, run_child, scale, start_child

# Batches of 1 to 7 traces: run_id names the cycle, session_id the batch, so the parent can
# find every batch by index and check it is whole.
TRACES = """
def batch(cycle, number):
    size = 1 + number % 7
    return [
        {
            "agent_name": "crash",
            "run_id": f"cycle-{cycle}",
            "session_id": f"batch-{cycle}-{number}",
            "input": f"question {cycle}/{number}/{i} " * 10,
            "spans": [{"name": f"step {j}"} for j in range(1 + i % 4)],
            "tool_calls": [{"tool_name": "lookup", "input": {"i": i}}],
            "metadata": {"cycle": cycle, "batch": number, "i": i, "size": size},
        }
        for i in range(size)
    ]
"""

LOG_UNTIL_KILLED = (
    TRACES
    + """
import flightlog

path, durability, cycle = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = flightlog.open(path, durability=durability)
report("logging")
unflushed = []
number = 0
while True:
    number += 1
    ids = store.log_many(batch(cycle, number))
    if durability == "sync":
        report("ack " + " ".join(ids))
        continue
    unflushed.append(ids)
    if number % 5 == 0:
        store.flush()
        for ids in unflushed:
            report("ack " + " ".join(ids))
        unflushed.clear()
"""
)


def acked_ids(lines: list[str]) -> list[str]:
    return [i for line in lines if line.startswith("ack ") for i in line.split()[1:]]


def assert_whole(trace: flightlog.Trace, cycle: int) -> None:
    """The trace holds exactly what the child logged for it."""
    meta = trace.metadata
    assert meta["cycle"] == cycle
    number, i = meta["batch"], meta["i"]
    assert trace.agent_name == "crash"
    assert trace.session_id == f"batch-{cycle}-{number}"
    assert trace.input == f"question {cycle}/{number}/{i} " * 10
    assert [s.name for s in trace.spans] == [f"step {j}" for j in range(1 + i % 4)]
    assert [(c.tool_name, c.input) for c in trace.tool_calls] == [("lookup", {"i": i})]


def stored_in_cycle(store: flightlog.Store, cycle: int) -> list[flightlog.TraceSummary]:
    found: list[flightlog.TraceSummary] = []
    cursor = None
    while True:
        page = store.query(run_id=f"cycle-{cycle}", limit=1000, cursor=cursor)
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def verify_cycle(store: flightlog.Store, cycle: int, acked: list[str]) -> int:
    """Every acked trace is present; every present trace and batch is whole. The count."""
    present = stored_in_cycle(store, cycle)
    ids = {s.trace_id for s in present}
    missing = [i for i in acked if i not in ids]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged traces are missing"
    per_batch: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    for summary in present:
        trace = store.get(summary.trace_id)
        assert_whole(trace, cycle)
        batch = f"{trace.metadata['batch']}"
        per_batch[batch] += 1
        sizes[batch] = trace.metadata["size"]
    partial = {b: n for b, n in per_batch.items() if n != sizes[b]}
    assert not partial, f"batches stored in part: {partial}"
    return len(present)


def test_every_acknowledged_trace_survives_sigkill_at_random_times(tmp_path: Path) -> None:
    """RELIABILITY.md test 1: kill a logging child at a random moment, reopen, verify; the
    same store lives through every cycle, so damage from one cycle shows in the next."""
    cycles = scale(50, 200)
    longest = 2.0 if LONG else 0.3  # seconds of logging before the kill, at most
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "store"
    counts: dict[int, int] = {}
    total_acked = 0
    for cycle in range(cycles):
        durability = ("sync", "group", "none")[cycle % 3]
        child = start_child(LOG_UNTIL_KILLED, str(path), durability, str(cycle))
        assert child.wait_for("logging"), child.stderr()
        time.sleep(rng.uniform(0.01, longest))  # when the fault strikes, not a measurement
        child.process.send_signal(signal.SIGKILL)
        code = child.finish()
        assert code == -signal.SIGKILL, f"seed {seed} cycle {cycle}: {child.stderr()}"
        acked = acked_ids(child.lines)
        total_acked += len(acked)
        with flightlog.open(path) as store:
            counts[cycle] = verify_cycle(store, cycle, acked)
            # Earlier cycles are untouched by this one's crash.
            assert {c: store.count(run_id=f"cycle-{c}") for c in counts} == counts
            report = store.check()
            assert report.ok, f"seed {seed} cycle {cycle}: {report.problems}"
    assert total_acked > 0, "no cycle got as far as an acknowledgement"
    print(f"crash cycles: {cycles}, acknowledged: {total_acked}, stored: {sum(counts.values())}")


# --- kill points ---------------------------------------------------------------------------------

LOG_UNTIL_KILL_POINT = (
    TRACES
    + """
import flightlog

path, durability = sys.argv[1], sys.argv[2]
store = flightlog.open(path, durability=durability)
for number in range(1, 1000):
    report(f"send {number}")
    ids = store.log_many(batch(0, number))
    if durability != "sync":
        store.flush()
    report(f"ack {number} " + " ".join(ids))
report("the kill point was never reached")
"""
)


def batches_acked(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("ack ")]


@pytest.mark.parametrize("durability", ["sync", "group"])
@pytest.mark.parametrize("point", ["before_put", "after_put", "after_commit"])
def test_a_batch_killed_at_a_commit_boundary_is_all_or_nothing_and_never_acked_early(
    tmp_path: Path, point: str, durability: str
) -> None:
    """RELIABILITY.md test 2: the writer kills its process at the nth batch's boundary.

    One caller logging and waiting for each batch gives exactly one batch per commit, so
    the nth commit is the nth batch: before its commit nothing of it may be stored, after
    it all of it, and in no case may its acknowledgement have reached the caller.
    """
    rounds = scale(1, 20)
    rng = random.Random(f"{point}-{durability}")
    for round_ in range(rounds):
        path = tmp_path / f"store-{round_}"
        nth = 3 if round_ == 0 else rng.randint(1, 60)
        child = run_child(
            LOG_UNTIL_KILL_POINT,
            str(path),
            durability,
            env={"FLIGHTLOG_KILL_POINT": f"{point}:{nth}"},
        )
        assert child.process.returncode == -signal.SIGKILL, child.stderr()
        assert f"send {nth}" in child.lines, "the kill came at another batch"
        assert batches_acked(child.lines) == list(range(1, nth)), "an ack preceded its commit"
        with flightlog.open(path) as store:
            stored = {n: store.count(session_id=f"batch-0-{n}") for n in range(1, nth + 1)}
            committed = point == "after_commit"
            expected = {n: 1 + n % 7 for n in range(1, nth + (1 if committed else 0))}
            assert {n: c for n, c in stored.items() if c} == expected
            acked = [i for line in child.lines if line.startswith("ack ") for i in line.split()[2:]]
            assert len(acked) == sum(expected[n] for n in range(1, nth))
            for trace_id in acked:
                assert_whole(store.get(trace_id), 0)
        assert_check_clean(path)


def test_a_misspelt_kill_point_refuses_to_open_rather_than_never_firing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLIGHTLOG_KILL_POINT", "after-commit")
    with pytest.raises(flightlog.StorageError, match=r"FLIGHTLOG_KILL_POINT.*after_commit"):
        flightlog.open(tmp_path / "store")

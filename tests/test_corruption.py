"""Corrupted files (RELIABILITY.md test 8): whatever bytes a store holds, reading it gives
results or a typed error, never a panic of the core, a foreign exception, or a hang.

Two kinds of mutants of a copy of a small store:

- **values**: one entry of one named database is flipped, truncated, extended, replaced,
  re-keyed or removed through LMDB itself, so the B-trees stay valid and every byte the
  core's decoders see is hostile. These run in this process, driven by hypothesis: a panic
  would surface as ``pyo3_runtime.PanicException`` and fail the test.
- **pages**: random bytes of ``data.mdb`` are flipped. LMDB itself trusts its page
  structure (it has no checksums) and may crash on such a file, so these run in child
  processes; a child killed by a signal is a contained failure, a panic or an untyped
  exception in a child is a violation.
"""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import flightlog
import lmdb
import pytest
from faults import LONG, run_child, scale
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

DATABASES = [
    "records",
    "fragments",
    "meta",
    "dicts",
    "summaries",
    "by_time",
    "index",
    "merges",
    "decisions",
    "decision_events",
    "decision_agents",
    "decision_keys",
]
UPDATED = [flightlog.trace_id_for(f"updated-{k}") for k in range(5)]


def build_pristine(path: Path) -> None:
    """A store with every database filled: over 1,000 records (so a compression dictionary
    is trained and stored), traces in several fragments (merge states), decisions."""
    with flightlog.open(path) as store:
        store.log_many(
            {"agent_name": f"agent-{i % 3}", "input": f"question {i} " * (i % 9), "tags": ["t"]}
            for i in range(1100)
        )
        for trace_id in UPDATED:
            for part in range(3):
                store.log(
                    trace_id=trace_id,
                    agent_name="updater",
                    status="succeeded" if part == 2 else "running",
                    spans=[{"span_id": f"{part + 1:016x}", "name": f"part {part}"}],
                    tool_calls=[{"tool_name": "t", "error": "boom" if part else None}],
                    run_id="run-1",
                )
        with store.open_decision(
            agent="bot", intent="order.create", automation_mode="propose"
        ) as d:
            d.read(product="orders", purpose="check", data_ref="ref:1")
            d.write(
                product="orders", purpose="create", mutation_summary={"n": 1}, idempotency_key="k"
            )
        store.flush()
        # The dictionary is trained on a helper thread; wait until it is stored.
        for _ in range(200):
            store.log(agent_name="late")
            store.flush()
            if lmdb_entries(path, "dicts"):
                break
            time.sleep(0.05)
    assert lmdb_entries(path, "dicts") == 1


def lmdb_entries(path: Path, name: str) -> int:
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return int(txn.stat(env.open_db(name.encode(), txn=txn, create=False))["entries"])
    finally:
        env.close()


@functools.cache
def pristine(root: Path) -> Path:
    path = root / "pristine"
    build_pristine(path)
    return path


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pristine(tmp_path_factory.mktemp("corruption"))


def exercise(path: Path) -> None:
    """Reads everything a user can read, then writes to it. Typed errors are expected and
    swallowed, each step on its own so one error does not hide the rest; anything else
    escapes to the caller."""
    try:
        with flightlog.open(path, readonly=True) as reader:
            read_everything(reader)
    except flightlog.FlightlogError:
        pass
    try:
        with flightlog.open(path) as writer:
            for trace_id in UPDATED:
                writer.log(trace_id=trace_id, agent_name="updater", status="failed")
            writer.log(agent_name="agent-1")
            writer.delete(UPDATED[0])
            writer.flush(timeout=60)  # a writer thread that died would hang here
    except flightlog.FlightlogError:
        pass


def read_everything(reader: flightlog.Store) -> None:
    steps: list[Callable[[], object]] = [
        reader.check,
        reader.count,
        lambda: reader.count(agent_name="agent-1"),
        lambda: reader.count(has_errors=True),
        lambda: reader.query(limit=1000),
        lambda: reader.query(order_by="latency_ms", limit=10),
        lambda: reader.query(run_id="run-1", tag="t"),
        lambda: reader.stats(group_by="agent_name"),
        lambda: reader.decisions(agent="bot"),
        *[functools.partial(reader.get, t) for t in UPDATED],
    ]
    with contextlib.suppress(flightlog.FlightlogError):
        steps += [functools.partial(reader.get, s.trace_id) for s in reader.query(limit=1000)]
    with contextlib.suppress(flightlog.FlightlogError):
        for decision in reader.decisions(agent="bot"):
            steps.append(
                functools.partial(reader.decision_trace, decision.decision_id, agent="bot")
            )
            steps.append(
                functools.partial(reader.verify_decision, decision.decision_id, agent="bot")
            )
    for step in steps:
        with contextlib.suppress(flightlog.FlightlogError):
            step()


# --- value mutants -------------------------------------------------------------------------------


@st.composite
def value_mutations(draw: st.DrawFn) -> tuple[str, int, str, bytes, int]:
    database = draw(st.sampled_from(DATABASES))
    entry = draw(st.integers(min_value=0, max_value=10_000))
    how = draw(st.sampled_from(["flip", "truncate", "extend", "replace", "rekey", "remove"]))
    data = draw(st.binary(min_size=1, max_size=64))
    where = draw(st.integers(min_value=0, max_value=1 << 16))
    return database, entry, how, data, where


def mutate_value(path: Path, database: str, entry: int, how: str, data: bytes, where: int) -> bool:
    """Applies one mutation through LMDB; false when it could not be applied."""
    env = lmdb.open(str(path), max_dbs=16, map_size=1 << 30)
    try:
        dup = database == "fragments"
        db = env.open_db(database.encode(), dupsort=dup, dupfixed=dup, create=False)
        with env.begin(write=True, db=db) as txn:
            items = list(txn.cursor().iternext())
            if not items:
                return False
            key, value = items[entry % len(items)]
            if not txn.delete(key, value if dup else b""):
                return False
            if how == "remove":
                return True
            if how == "rekey":
                mutated = bytearray(key)
                mutated[where % len(key)] ^= data[0] or 1
                key = bytes(mutated)
            elif how == "flip" and value:
                mutated = bytearray(value)
                mutated[where % len(value)] ^= data[0] or 1
                value = bytes(mutated)
            elif how == "truncate":
                value = value[: where % (len(value) + 1)]
            elif how == "extend":
                value = value + data
            else:
                value = data
            try:
                return bool(txn.put(key, value))
            except lmdb.Error:  # e.g. a DUP_FIXED value of another size: LMDB refuses it
                return False
    finally:
        env.close()


@settings(
    max_examples=scale(40, 400),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=value_mutations())
def test_a_hostile_value_in_any_database_gives_typed_errors_only(
    pristine_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
    mutation: tuple[str, int, str, bytes, int],
) -> None:
    path = tmp_path_factory.mktemp("mutant") / "store"
    shutil.copytree(pristine_store, path)
    assume(mutate_value(path, *mutation))
    exercise(path)
    shutil.rmtree(path.parent)


def test_a_summary_timestamp_beyond_datetime_is_a_storage_error(tmp_path: Path) -> None:
    """Found by a page mutant (1 run in ~6 of the default suite failed): a flipped byte put
    a summary's timestamp beyond ``datetime``'s range, and ``query()`` raised msgspec's
    ValidationError instead of a ``StorageError``."""
    path = tmp_path / "store"
    with flightlog.open(path) as store:
        trace_id = store.log(agent_name="bot")
    env = lmdb.open(str(path), max_dbs=16, lock=False)
    try:
        summaries = env.open_db(b"summaries", create=False)
        with env.begin(write=True, db=summaries) as txn:
            stored = txn.get(bytes.fromhex(trace_id))
            assert stored is not None
            summary = bytearray(stored)
            summary[8:16] = (2**62).to_bytes(8, "little")  # the timestamp (docs/format.md)
            txn.put(bytes.fromhex(trace_id), bytes(summary))
    finally:
        env.close()

    with flightlog.open(path) as store:
        with pytest.raises(flightlog.StorageError, match="summaries of this page do not decode"):
            store.query()
        assert store.count() == 1


# --- page mutants --------------------------------------------------------------------------------

OPEN_MUTANTS = """
import functools, traceback
from pathlib import Path
import flightlog
sys.path.insert(0, sys.argv[1])
from test_corruption import exercise

for mutant in sys.argv[2:]:
    report("start " + mutant)
    try:
        exercise(Path(mutant))
        report("done " + mutant)
    except flightlog.FlightlogError as err:
        report("typed " + mutant)
    except BaseException as err:  # PanicException derives from BaseException
        report("violation " + mutant + " " + repr(err).replace("\\n", " ")[:300])
"""


def flip_pages(source: Path, dest: Path, rng: random.Random) -> None:
    """Copies a store with 1 to 16 random bytes of data.mdb flipped (a third of the mutants
    aim at the two meta pages, the rest anywhere)."""
    shutil.copytree(source, dest)
    data = bytearray((dest / "data.mdb").read_bytes())
    for _ in range(rng.randint(1, 16)):
        end = 8192 if rng.random() < 1 / 3 else len(data)
        data[rng.randrange(end)] ^= rng.randint(1, 255)
    (dest / "data.mdb").write_bytes(bytes(data))


def test_flipped_page_bytes_never_crash_the_runner_or_panic_the_core(
    pristine_store: Path, tmp_path: Path
) -> None:
    mutants = scale(200, 400)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    paths = []
    for n in range(mutants):
        paths.append(tmp_path / f"mutant-{n}")
        flip_pages(pristine_store, paths[-1], rng)
    outcomes: dict[str, str] = {}
    tests_dir = str(Path(__file__).parent)
    while len(outcomes) < mutants:
        todo = [str(p) for p in paths if str(p) not in outcomes]
        child = run_child(OPEN_MUTANTS, tests_dir, *todo)
        for line in child.lines:
            kind, mutant = line.split()[:2]
            if kind != "start":
                outcomes[mutant] = line
        started = [line.split()[1] for line in child.lines if line.startswith("start ")]
        crashed = started[-1] if started and started[-1] not in outcomes else None
        code = child.process.returncode
        stderr = child.stderr()
        assert "panicked" not in stderr and "PanicException" not in stderr, stderr[-2000:]
        if crashed is None:
            assert code == 0, stderr[-2000:]
            continue
        # LMDB trusts its pages: a wild pointer may kill the child; that is contained.
        assert (code < 0 and code != -signal.SIGABRT) or "Assertion" in stderr, stderr[-2000:]
        outcomes[crashed] = f"signal {-code} {crashed}"
    violations = [o for o in outcomes.values() if o.startswith("violation")]
    summary = {
        kind: sum(o.startswith(kind) for o in outcomes.values())
        for kind in ("done", "typed", "signal", "violation")
    }
    print(f"page mutants (seed {seed}): {summary}")
    assert violations == [], f"seed {seed}"
    if LONG:
        assert summary["done"] + summary["typed"] > 0

"""Decision traces (SPEC §6): the status machine, idempotent writes, self-access, the hash
chain and its tamper detection, listing and purging."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import flightlog
import lmdb
import msgspec
import pytest
from flightlog import (
    AccessDenied,
    Decision,
    DecisionClosed,
    DecisionEvent,
    DecisionNotFound,
    InvalidTransition,
    ValidationError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

AGENT = "order-bot"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def is_id(text: str, prefix: str) -> bool:
    body = text.removeprefix(prefix)
    return text.startswith(prefix) and len(body) == 26 and all(c in CROCKFORD for c in body)


def micros(at: dt.datetime | None) -> int:
    """Unix microseconds, exactly."""
    assert at is not None
    return (at - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def key_of(decision_id: str) -> bytes:
    """The 16 bytes a decision id spells (docs/format.md)."""
    number = 0
    for c in decision_id.removeprefix("dec_"):
        number = number * 32 + CROCKFORD.index(c)
    return number.to_bytes(16, "big")


def status_of(decision: Decision) -> str:
    """The stored status (a function, so that type checkers do not narrow it)."""
    return decision.status


def opened(store: flightlog.Store, agent: str = AGENT, **fields: Any) -> Decision:
    fields.setdefault("intent", "customer.order.create")
    fields.setdefault("automation_mode", "autonomous")
    return store.open_decision(agent, **fields)


def test_a_decision_records_its_events_in_order_and_commits_on_exit(
    store: flightlog.Store,
) -> None:
    tid = flightlog.new_trace_id()
    with store.open_decision(
        agent=AGENT,
        intent="customer.order.create",
        automation_mode="autonomous",
        metadata={"channel": "email"},
        trace_id=tid,
        run_id="run-7",
    ) as d:
        d.read(product="pg_customers_v1", purpose="order_validation", data_ref="ref:read:42")
        d.evaluate(policy_id="order_validation_v1", outcome="allow", rationale="in stock")
        d.write(
            product="pg_orders_v1",
            purpose="order_creation",
            mutation_summary={"rows": 1},
            idempotency_key="k1",
        )
        d.add_context({"basket": [1, 2]}, summary="two items")
        assert d.status == "open"
    assert is_id(d.decision_id, "dec_")
    trace = store.decision_trace(d.decision_id, agent=AGENT)
    assert trace.status == "committed"
    assert (trace.agent, trace.intent, trace.automation_mode) == (
        AGENT,
        "customer.order.create",
        "autonomous",
    )
    assert (trace.metadata, trace.trace_id, trace.run_id) == ({"channel": "email"}, tid, "run-7")
    types = [e.type for e in trace.events]
    assert types == ["open", "read", "evaluate", "write", "context", "close"]
    assert all(is_id(e.event_id, "evt_") for e in trace.events)
    assert len({e.event_id for e in trace.events}) == 6
    assert all(len(e.hash) == 64 for e in trace.events)
    stamps = [e.timestamp for e in trace.events]
    assert stamps == sorted(stamps)
    assert trace.created_at == stamps[0] and trace.closed_at == stamps[-1]
    read, evaluate, write, context, close = trace.events[1:]
    assert (read.product, read.purpose, read.data_ref) == (
        "pg_customers_v1",
        "order_validation",
        "ref:read:42",
    )
    assert (evaluate.outcome, evaluate.rationale) == ("allow", "in stock")
    assert (write.mutation_summary, write.idempotency_key) == ({"rows": 1}, "k1")
    assert (context.context, context.summary) == ({"basket": [1, 2]}, "two items")
    assert (close.action, close.reason) == ("commit", flightlog.UNSET)
    assert store.verify_decision(d.decision_id, agent=AGENT)


def test_an_exception_in_the_block_aborts_with_its_type_as_the_reason(
    store: flightlog.Store,
) -> None:
    with pytest.raises(KeyError), opened(store) as d:
        d.read(product="p", purpose="q")
        raise KeyError("boom")
    trace = store.decision_trace(d.decision_id, agent=AGENT)
    assert trace.status == "aborted"
    assert (trace.events[-1].action, trace.events[-1].reason) == ("abort", "KeyError")


def test_leaving_the_block_with_approval_pending_aborts_and_says_why(
    store: flightlog.Store,
) -> None:
    with pytest.raises(InvalidTransition, match="needs approval"), opened(store) as d:
        d.request_approval(by="manager", reason="large order")
    assert d.status == "aborted"
    assert store.decision_trace(d.decision_id, agent=AGENT).events[-1].reason == (
        "InvalidTransition"
    )


def test_a_decision_closed_in_the_block_is_left_as_it_is(store: flightlog.Store) -> None:
    with opened(store) as d:
        d.close("abort", reason="changed my mind")
    trace = store.decision_trace(d.decision_id, agent=AGENT)
    assert [e.type for e in trace.events] == ["open", "close"]
    assert trace.events[-1].reason == "changed my mind"


def test_the_same_idempotency_key_twice_records_one_event(store: flightlog.Store) -> None:
    d = opened(store)
    first = d.write(product="orders", purpose="create", idempotency_key="k1")
    again = d.write(product="orders", purpose="create", idempotency_key="k1")
    other = d.write(product="orders", purpose="create", idempotency_key="k2")
    assert again == first and other.event_id != first.event_id
    writes = [e for e in store.decision_trace(d.decision_id, agent=AGENT).events]
    assert [e.type for e in writes] == ["open", "write", "write"]


def test_approval_gates_writes_and_a_rejection_leaves_only_abort(
    store: flightlog.Store,
) -> None:
    d = opened(store, automation_mode="approve")
    d.request_approval(by="manager")
    assert d.status == "needs_approval"
    with pytest.raises(InvalidTransition, match=r"dec_\w+ refuses this event: it needs approval"):
        d.write(product="orders", purpose="create")
    d.read(product="customers", purpose="check")
    d.resolve_approval(approved=True, by="manager")
    assert status_of(d) == "approved"
    d.write(product="orders", purpose="create")
    d.request_approval()
    d.resolve_approval(approved=False, reason="too risky")
    assert status_of(d) == "rejected"
    attempts: list[Callable[[], object]] = [
        lambda: d.read(product="p", purpose="q"),
        lambda: d.close("commit"),
        d.request_approval,
    ]
    for attempt in attempts:
        with pytest.raises(InvalidTransition, match="only close"):
            attempt()
    d.close("abort", reason="rejected")
    with pytest.raises(DecisionClosed, match="is aborted"):
        d.close("abort")
    types = [e.type for e in store.decision_trace(d.decision_id, agent=AGENT).events]
    assert types.count("write") == 1 and types[-1] == "close"


def test_a_closed_decision_is_immutable_also_after_reopening(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        with opened(store) as d:
            d.read(product="p", purpose="q")
        before = store.decision_trace(d.decision_id, agent=AGENT)
    with flightlog.open(store_path) as store:
        with pytest.raises(DecisionClosed):
            store.decision(d.decision_id, agent=AGENT)
        late = Decision(store._core, d.decision_id, AGENT)
        attempts: list[Callable[[], object]] = [
            lambda: late.read(product="p", purpose="q"),
            lambda: late.close("commit"),
            lambda: late.close("abort"),
            lambda: late.write(product="p", purpose="q", idempotency_key="new"),
        ]
        for attempt in attempts:
            with pytest.raises(DecisionClosed, match=f"decision {d.decision_id} is committed"):
                attempt()
        assert store.decision_trace(d.decision_id, agent=AGENT) == before
        assert store.verify_decision(d.decision_id, agent=AGENT)


def test_another_agent_is_denied_and_learns_nothing(store: flightlog.Store) -> None:
    d = opened(store, intent="secret.intent.name", metadata={"k": "hidden"})
    d.request_approval(reason="private reason")
    attempts: list[Callable[[], object]] = [
        lambda: store.decision_trace(d.decision_id, agent="intruder"),
        lambda: store.decision(d.decision_id, agent="intruder"),
        lambda: store.verify_decision(d.decision_id, agent="intruder"),
        lambda: Decision(store._core, d.decision_id, "intruder").read(product="p", purpose="q"),
    ]
    for attempt in attempts:
        with pytest.raises(AccessDenied) as denied:
            attempt()
        message = str(denied.value)
        assert d.decision_id in message and "intruder" in message
        for secret in ("secret.intent", "hidden", "private", "needs_approval", AGENT):
            assert secret not in message
    assert [p.decision_id for p in store.decisions(agent="intruder")] == []
    assert len(store.decision_trace(d.decision_id, agent=AGENT).events) == 2


def test_unknown_empty_and_malformed_ids_are_told_apart(store: flightlog.Store) -> None:
    unknown = "dec_" + "0" * 26
    with pytest.raises(DecisionNotFound, match=f"no decision with id {unknown}"):
        store.decision_trace(unknown, agent=AGENT)
    with pytest.raises(DecisionNotFound):
        store.decision(unknown, agent=AGENT)
    with pytest.raises(ValidationError, match="decision_id: must not be empty"):
        store.decision_trace("", agent=AGENT)
    with pytest.raises(ValidationError, match="decision_id: expected 'dec_'"):
        store.verify_decision("dec_nope", agent=AGENT)


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda s: opened(s, automation_mode="yolo"), "automation_mode"),
        (lambda s: opened(s, intent=""), "intent"),
        (lambda s: opened(s, agent=""), "agent"),
        (lambda s: opened(s, metadata=["not", "a", "dict"]), "metadata"),
        (lambda s: opened(s, metadata={"k": object()}), "metadata.k"),
        (lambda s: opened(s, trace_id="xyz"), "trace_id"),
        (lambda s: opened(s, intent=7), "intent"),
        (lambda s: opened(s).evaluate(policy_id="p", outcome="maybe"), "outcome"),  # type: ignore[arg-type]
        (lambda s: opened(s).read(product="p", purpose=""), "purpose"),
        (lambda s: opened(s).read(product=3, purpose="q"), "product"),  # type: ignore[arg-type]
        (lambda s: opened(s).close("later"), "action"),  # type: ignore[arg-type]
        (lambda s: opened(s).add_context(), "context"),
        (
            lambda s: opened(s).write(product="p", purpose="q", mutation_summary={1j}),
            "mutation_summary",
        ),
        (lambda s: opened(s).resolve_approval(approved="yes"), "approved"),  # type: ignore[arg-type]
        (lambda s: s.decisions(agent=AGENT, status="done"), "status"),
        (lambda s: s.decisions(agent=AGENT, limit=0), "limit"),
        (lambda s: s.decisions(agent=AGENT, since=[1]), "since"),
        (lambda s: s.decisions(agent=AGENT, cursor="nope"), "cursor"),
        (lambda s: s.purge_decisions(before="yesterday"), "before"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    store: flightlog.Store, call: Any, path: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        call(store)
    assert refused.value.errors[0]["path"] == path
    assert str(refused.value).startswith(path)


def test_events_from_many_threads_form_one_unbroken_chain(store: flightlog.Store) -> None:
    d = opened(store)
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(15):
            d.read(product=f"t{n}", purpose=str(i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d.close()
    trace = store.decision_trace(d.decision_id, agent=AGENT)
    assert len(trace.events) == 62
    for n in range(4):
        mine = [int(str(e.purpose)) for e in trace.events if e.product == f"t{n}"]
        assert mine == list(range(15)), "each thread's events stay in its order"
    assert store.verify_decision(d.decision_id, agent=AGENT)
    assert store.check().ok


def test_another_process_can_re_attach_and_record(store: flightlog.Store) -> None:
    d = opened(store)
    d.read(product="here", purpose="parent")
    script = (
        "import sys, flightlog\n"
        "with flightlog.open(sys.argv[1]) as s:\n"
        "    d = s.decision(sys.argv[2], agent=sys.argv[3])\n"
        "    d.write(product='there', purpose='child', idempotency_key='k')\n"
    )
    args = [sys.executable, "-c", script, str(store.path), d.decision_id, AGENT]
    subprocess.run(args, check=True, timeout=120)
    d.write(product="there", purpose="child", idempotency_key="k")
    d.close()
    trace = store.decision_trace(d.decision_id, agent=AGENT)
    assert [e.type for e in trace.events] == ["open", "read", "write", "close"]
    assert store.verify_decision(d.decision_id, agent=AGENT)


def test_two_processes_recording_at_once_form_one_chain(store: flightlog.Store) -> None:
    d = opened(store)
    script = (
        "import sys, flightlog\n"
        "with flightlog.open(sys.argv[1]) as s:\n"
        "    d = s.decision(sys.argv[2], agent=sys.argv[3])\n"
        "    print('ready', flush=True)\n"
        "    for i in range(20):\n"
        "        d.read(product='child', purpose=str(i))\n"
    )
    args = [sys.executable, "-c", script, str(store.path), d.decision_id, AGENT]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for i in range(20):
            d.read(product="parent", purpose=str(i))
        assert child.wait(timeout=120) == 0
    d.close()
    trace = store.decision_trace(d.decision_id, agent=AGENT)
    for side in ("parent", "child"):
        mine = [int(str(e.purpose)) for e in trace.events if e.product == side]
        assert mine == list(range(20))
    assert len(trace.events) == 42
    assert store.verify_decision(d.decision_id, agent=AGENT)


@given(
    texts=st.lists(st.text(min_size=1, max_size=40), min_size=3, max_size=3),
    summary=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ).filter(lambda value: value is not None),  # None means "no summary"
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_event_fields_come_back_as_they_were_recorded(
    store: flightlog.Store, texts: list[str], summary: Any
) -> None:
    d = opened(store)
    product, purpose, key = texts
    event = d.write(product=product, purpose=purpose, mutation_summary=summary, idempotency_key=key)
    assert (event.product, event.purpose, event.idempotency_key) == (product, purpose, key)
    assert event.mutation_summary == summary
    assert store.decision_trace(d.decision_id, agent=AGENT).events[-1] == event


TAMPER = """
import sys, lmdb
path, db_name, key, old, new = sys.argv[1:]
env = lmdb.open(path, max_dbs=16)
db = env.open_db(db_name.encode())
with env.begin(db=db, write=True) as txn:
    value = txn.get(bytes.fromhex(key))
    assert old.encode() in value, value
    txn.put(bytes.fromhex(key), value.replace(old.encode(), new.encode()))
env.close()
"""


def tamper(path: Path, db: str, key: bytes, old: str, new: str) -> None:
    """Replaces ``old`` by ``new`` in one value, from another program (the lmdb package)."""
    args = [sys.executable, "-c", TAMPER, str(path), db, key.hex(), old, new]
    subprocess.run(args, check=True, timeout=60)


@pytest.mark.parametrize(
    ("db", "seq", "old", "new"),
    [
        ("decision_events", 1, "pg_customers_v1", "pg_customers_v2"),
        ("decision_events", 2, "allow", "deny!"),
        ("decision_events", 0, "customer.order.create", "customer.order.delete"),
        ("decisions", None, "customer.order.create", "customer.order.delete"),
    ],
)
def test_a_byte_changed_by_another_program_breaks_the_chain(
    store_path: Path, db: str, seq: int | None, old: str, new: str
) -> None:
    with flightlog.open(store_path) as store, opened(store) as d:
        d.read(product="pg_customers_v1", purpose="order_validation")
        d.evaluate(policy_id="p", outcome="allow")
    key = key_of(d.decision_id) + (b"" if seq is None else seq.to_bytes(4, "big"))
    tamper(store_path, db, key, old, new)
    with flightlog.open(store_path) as store:
        assert not store.verify_decision(d.decision_id, agent=AGENT)
        report = store.check()
        assert not report.ok and report.decisions == 1
        assert any(d.decision_id in p and "hash chain" in p for p in report.problems)


def test_a_decision_changed_beyond_its_schema_reads_as_a_storage_error(store_path: Path) -> None:
    with flightlog.open(store_path) as store, opened(store) as d:
        d.evaluate(policy_id="p", outcome="allow")
    tamper(
        store_path,
        "decision_events",
        key_of(d.decision_id) + (1).to_bytes(4, "big"),
        "allow",
        "deny!",
    )
    with flightlog.open(store_path) as store:
        with pytest.raises(
            flightlog.StorageError, match=f"decision {d.decision_id} does not decode"
        ):
            store.decision_trace(d.decision_id, agent=AGENT)
        assert not store.verify_decision(d.decision_id, agent=AGENT)


def test_decisions_lists_only_the_agents_own_newest_first_with_filters(
    store: flightlog.Store,
) -> None:
    start = dt.datetime.now(dt.timezone.utc)
    ids = []
    for i in range(5):
        d = opened(store, intent="a" if i % 2 else "b")
        if i < 3:
            d.close()
        ids.append(d.decision_id)
    opened(store, agent="planner")
    listed = store.decisions(agent=AGENT)
    assert [d.decision_id for d in listed] == ids[::-1]
    assert listed.next_cursor is None and all(d.events == [] for d in listed)
    assert [d.decision_id for d in store.decisions(agent=AGENT, status="open")] == ids[:2:-1]
    assert [d.decision_id for d in store.decisions(agent=AGENT, intent="a")] == [ids[3], ids[1]]
    assert len(store.decisions(agent=AGENT, since=start).items) == 5
    assert store.decisions(agent=AGENT, until=start).items == []
    assert len(store.decisions(agent=AGENT, since=start.isoformat()).items) == 5
    pages, cursor = [], None
    while True:
        page = store.decisions(agent=AGENT, limit=2, cursor=cursor)
        pages.append([d.decision_id for d in page])
        if (cursor := page.next_cursor) is None:
            break
    assert pages == [ids[:2:-1], ids[2:0:-1], ids[:1]]


def test_trace_deletion_leaves_decisions_and_purge_removes_only_closed_ones(
    store: flightlog.Store,
) -> None:
    tid = store.log(agent_name=AGENT, run_id="r")
    store.flush()
    closed = opened(store, trace_id=tid)
    closed.close()
    still_open = opened(store, trace_id=tid)
    assert store.delete(tid)
    assert store.delete_where(agent_name=AGENT) == 0
    assert store.decision_trace(closed.decision_id, agent=AGENT).status == "committed"
    assert store.purge_decisions(before=dt.datetime(2001, 1, 1)) == 0
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    assert store.purge_decisions(before=later) == 1
    with pytest.raises(DecisionNotFound):
        store.decision_trace(closed.decision_id, agent=AGENT)
    assert store.decision(still_open.decision_id, agent=AGENT).status == "open"
    assert [d.decision_id for d in store.decisions(agent=AGENT)] == [still_open.decision_id]
    assert store.check().ok


def test_a_read_only_store_reads_decisions_but_refuses_to_record(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        d = opened(store)
    with flightlog.open(store_path, readonly=True) as reader:
        assert reader.decision_trace(d.decision_id, agent=AGENT).status == "open"
        with pytest.raises(flightlog.StorageError, match="read-only"):
            reader.decision(d.decision_id, agent=AGENT).read(product="p", purpose="q")


def expected(status: str, kind: str, approved: bool = False, action: str = "") -> Any:
    """SPEC §6's status machine: the status after the event, or the error it raises."""
    if status in ("committed", "aborted"):
        return DecisionClosed
    if kind == "close" and action == "abort":
        return "aborted"
    if status == "rejected":
        return InvalidTransition
    if kind in ("read", "evaluate", "context"):
        return status
    if kind == "write":
        return status if status in ("open", "approved") else InvalidTransition
    if kind == "approval_requested":
        return "needs_approval" if status in ("open", "approved") else InvalidTransition
    if kind == "approval_resolved":
        if status != "needs_approval":
            return InvalidTransition
        return "approved" if approved else "rejected"
    return "committed" if status in ("open", "approved") else InvalidTransition


class DecisionMachine(RuleBasedStateMachine):
    """Random event sequences against the model: every accepted event is stored, every
    refused one leaves nothing, and the chain always verifies."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.store = flightlog.open(Path(self.dir) / "store")
        self.decision = opened(self.store)
        self.status = "open"
        self.types = ["open"]

    def record(
        self, kind: str, call: Callable[[], DecisionEvent], approved: bool = False, action: str = ""
    ) -> None:
        outcome = expected(self.status, kind, approved, action)
        if isinstance(outcome, str):
            event = call()
            assert event.type == kind
            self.status = outcome
            self.types.append(kind)
        else:
            with pytest.raises(outcome):
                call()

    @rule()
    def read(self) -> None:
        self.record("read", lambda: self.decision.read(product="p", purpose="q"))

    @rule(key=st.sampled_from([None, "k1", "k2"]))
    def write(self, key: str | None) -> None:
        seen = key is not None and any(
            e.idempotency_key == key
            for e in self.store.decision_trace(self.decision.decision_id, agent=AGENT).events
        )

        def call() -> DecisionEvent:
            return self.decision.write(product="p", purpose="q", idempotency_key=key)

        if seen and self.status not in ("committed", "aborted"):
            assert call().idempotency_key == key  # the earlier event, nothing new
        else:
            self.record("write", call)

    @rule(outcome=st.sampled_from(["allow", "deny", "requires_exception"]))
    def evaluate(self, outcome: Any) -> None:
        self.record("evaluate", lambda: self.decision.evaluate(policy_id="p", outcome=outcome))

    @rule()
    def add_context(self) -> None:
        self.record("context", lambda: self.decision.add_context(summary="s"))

    @rule()
    def request_approval(self) -> None:
        self.record("approval_requested", self.decision.request_approval)

    @rule(approved=st.booleans())
    def resolve_approval(self, approved: bool) -> None:
        def call() -> DecisionEvent:
            return self.decision.resolve_approval(approved=approved)

        self.record("approval_resolved", call, approved=approved)

    @rule(action=st.sampled_from(["commit", "abort"]))
    def close(self, action: Any) -> None:
        def call() -> DecisionEvent:
            return self.decision.close(action)

        self.record("close", call, action=action)

    @invariant()
    def stored_as_modelled(self) -> None:
        trace = self.store.decision_trace(self.decision.decision_id, agent=AGENT)
        assert trace.status == self.status
        assert [e.type for e in trace.events] == self.types
        assert self.store.verify_decision(self.decision.decision_id, agent=AGENT)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


DecisionMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)
test_the_status_machine_follows_the_model = DecisionMachine.TestCase


def test_a_decision_reads_back_from_the_raw_databases_as_docs_format_describes(
    store_path: Path,
) -> None:
    with flightlog.open(store_path) as store:
        with opened(store, metadata={"k": 1}, run_id="r1") as d:
            d.read(product="pg", purpose="check")
            d.write(product="orders", purpose="create", idempotency_key="k1")
        trace = store.decision_trace(d.decision_id, agent=AGENT)
    key = key_of(d.decision_id)
    env = lmdb.open(str(store_path), max_dbs=16, readonly=True, lock=False)
    try:
        dbs = {
            name: env.open_db(name.encode(), create=False)
            for name in ("decisions", "decision_events", "decision_agents", "decision_keys")
        }
        with env.begin() as txn:
            envelope = txn.get(key, db=dbs["decisions"])
            events = list(txn.cursor(db=dbs["decision_events"]))
            listed = [bytes(k) for k, _ in txn.cursor(db=dbs["decision_agents"])]
            keys = dict(txn.cursor(db=dbs["decision_keys"]))
    finally:
        env.close()
    assert envelope is not None
    version, status, mode, count = struct.unpack_from(">BBBI", envelope)
    last_hash = envelope[7:39]
    created_us, closed_us = struct.unpack_from(">qq", envelope, 39)
    assert (version, status, mode, count) == (1, 4, 3, 4)
    assert (created_us, closed_us) == (micros(trace.created_at), micros(trace.closed_at))
    (agent_len,) = struct.unpack_from(">I", envelope, 55)
    assert envelope[59 : 59 + agent_len] == AGENT.encode()
    previous = bytes(32)
    for seq, (event_key, value) in enumerate(events):
        assert event_key == key + struct.pack(">I", seq)
        stored_hash, canonical = value[:32], value[32:]
        assert hashlib.sha256(previous + canonical).digest() == stored_hash
        decoded = msgspec.msgpack.decode(canonical)
        assert decoded["event_id"] == trace.events[seq].event_id
        assert stored_hash.hex() == trace.events[seq].hash
        previous = stored_hash
    assert previous == last_hash
    assert msgspec.msgpack.decode(events[0][1][32:])["metadata"] == {"k": 1}
    assert listed == [
        bytes([len(AGENT)]) + AGENT.encode() + struct.pack(">Q", (created_us + 2**63) % 2**64) + key
    ]
    assert keys == {key + b"\x02k1": struct.pack(">I", 2)}


def test_check_reports_decision_entries_left_without_their_envelope(store_path: Path) -> None:
    with flightlog.open(store_path) as store, opened(store) as d:
        d.write(product="p", purpose="q", idempotency_key="k")
    env = lmdb.open(str(store_path), max_dbs=16)
    try:
        with env.begin(write=True, db=env.open_db(b"decisions", create=False)) as txn:
            assert txn.delete(key_of(d.decision_id))
    finally:
        env.close()
    with flightlog.open(store_path) as store:
        report = store.check()
    assert report.decisions == 0
    assert [p.split("[")[0] for p in report.problems] == [
        "decision_events",
        "decision_keys",
        "decision_agents",
    ]


def test_the_longest_agent_and_idempotency_key_fit_in_lmdb_keys(store: flightlog.Store) -> None:
    agent = "\U0001f916" * 256  # 1,024 bytes of UTF-8
    similar = "\U0001f916" * 255 + "x"
    d = opened(store, agent=agent)
    key = "\U0001f511" * 256
    first = d.write(product="p", purpose="q", idempotency_key=key)
    assert d.write(product="p", purpose="q", idempotency_key=key) == first
    assert d.write(product="p", purpose="q", idempotency_key=key[:-1]) != first
    d.close()
    opened(store, agent=similar)
    assert [x.decision_id for x in store.decisions(agent=agent)] == [d.decision_id]
    with pytest.raises(AccessDenied):
        store.decision_trace(d.decision_id, agent=similar)
    assert store.check().ok


# --- self-access and immutability at scale (RELIABILITY.md tests 14 and 15) ------------------

DECISION_DBS = ("decisions", "decision_events", "decision_agents", "decision_keys")


def decision_bytes(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every entry of the decision databases of a *closed* store, as stored."""
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {
                name: [
                    (bytes(k), bytes(v))
                    for k, v in txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False))
                ]
                for name in DECISION_DBS
            }
    finally:
        env.close()


owners = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta"]), min_size=2, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agents=owners, statuses=st.lists(st.sampled_from(["open", "committed", "aborted"])))
def test_no_agent_reads_or_lists_anything_of_anothers_decisions(
    tmp_path_factory: pytest.TempPathFactory, agents: list[str], statuses: list[str]
) -> None:
    path = tmp_path_factory.mktemp("access") / "store"
    secrets: dict[str, list[str]] = {}
    with flightlog.open(path) as store:
        for i, owner in enumerate(agents):
            marker = f"private-{owner}-{i}"
            d = opened(store, owner, intent=f"intent.{marker}", metadata={"m": marker})
            d.read(product=f"product-{marker}", purpose="p")
            status = statuses[i] if i < len(statuses) else "open"
            if status != "open":
                d.close("commit" if status == "committed" else "abort", reason=marker)
            secrets[d.decision_id] = [owner, marker, status]
        leaks = 0
        for asker in ("alpha", "beta", "gamma", "delta", "nobody"):
            pages = [store.decisions(agent=asker, limit=2)]
            while pages[-1].next_cursor is not None:
                pages.append(store.decisions(agent=asker, limit=2, cursor=pages[-1].next_cursor))
            listed = [item for page in pages for item in page.items]
            assert sorted(p.decision_id for p in listed) == sorted(
                i for i, (owner, _, _) in secrets.items() if owner == asker
            )
            for decision_id, (owner, marker, status) in secrets.items():
                filtered = store.decisions(agent=asker, intent=f"intent.{marker}")
                assert filtered.items == [] or owner == asker
                if owner == asker:
                    continue
                for attempt in (
                    partial(store.decision_trace, decision_id, agent=asker),
                    partial(store.decision, decision_id, agent=asker),
                    partial(store.verify_decision, decision_id, agent=asker),
                    partial(Decision(store._core, decision_id, asker).close, "abort"),
                ):
                    with pytest.raises(AccessDenied) as denied:
                        attempt()
                    shown = str(denied.value) + repr(denied.value)
                    leaks += marker in shown or owner in shown
                    leaks += re.search(rf"\b{status}\b", shown) is not None
            # Another agent's cursor is refused, not followed into its range.
            for page in pages:
                if page.next_cursor is None:
                    continue
                for other in ("alpha", "beta", "gamma", "delta"):
                    if other == asker:
                        continue
                    with pytest.raises(ValidationError, match="not a cursor of this listing"):
                        store.decisions(agent=other, cursor=page.next_cursor)
        assert leaks == 0
    after = decision_bytes(path)
    assert len(after["decisions"]) == len(agents)


def test_refused_changes_to_closed_decisions_leave_every_stored_byte_as_it_was(
    store_path: Path,
) -> None:
    ids: list[str] = []
    with flightlog.open(store_path) as store:
        for action in ("commit", "abort"):
            with opened(store) as d:
                d.read(product="p", purpose="q")
                d.write(product="p", purpose="q", idempotency_key="k1")
                if action == "abort":
                    d.close("abort", reason="changed my mind")
            ids.append(d.decision_id)
    before = decision_bytes(store_path)
    refused = 0
    for _ in range(2):  # once as it was closed, once more after a reopen
        with flightlog.open(store_path) as store:
            for decision_id in ids:
                late = Decision(store._core, decision_id, AGENT)
                attempts: list[Callable[[], object]] = [
                    partial(late.read, product="p", purpose="q"),
                    partial(late.write, product="p", purpose="q", idempotency_key="k1"),
                    partial(late.write, product="p", purpose="q", idempotency_key="new"),
                    partial(late.evaluate, policy_id="x", outcome="allow"),
                    partial(late.request_approval, reason="late"),
                    partial(late.resolve_approval, approved=True),
                    partial(late.add_context, {"k": 1}),
                    partial(late.close, "commit"),
                    partial(late.close, "abort"),
                ]
                for attempt in attempts:
                    with pytest.raises(DecisionClosed):
                        attempt()
                    refused += 1
                assert store.verify_decision(decision_id, agent=AGENT)
        assert decision_bytes(store_path) == before
    assert refused == 2 * len(ids) * 9

"""Retention: the writer deletes old traces by itself while the store is open."""

from __future__ import annotations

import base64
import datetime as dt
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flightlog
import pytest
from flightlog import Trace, TraceNotFound, ValidationError

HOUR = dt.timedelta(hours=1)


def ago(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)


def listed(store: flightlog.Store) -> set[str]:
    return {s.trace_id for s in store.query(limit=1000)}


def wait_until(done: Callable[[], bool], store: flightlog.Store, seconds: float = 10.0) -> None:
    """Polls ``done`` (after a flush, so sweep failures surface) until it holds."""
    deadline = time.monotonic() + seconds
    while True:
        store.flush()
        if done():
            return
        assert time.monotonic() < deadline, f"not done after {seconds} s"
        time.sleep(0.05)


def log_shuffled(store: flightlog.Store, traces: list[Trace]) -> list[str]:
    """Logs the traces in a random order (so that log order is not time order) and returns
    their ids in the order given."""
    order = list(range(len(traces)))
    random.Random(3).shuffle(order)
    ids = store.log_many([traces[i] for i in order])
    by_position = dict(zip(order, ids, strict=True))
    return [by_position[i] for i in range(len(traces))]


def test_traces_older_than_the_retention_disappear_while_the_store_is_open(
    store_path: Path,
) -> None:
    ages = [60 * 24 * 30, 600, 90, 61, 50, 10, 0]  # minutes; the first four are too old
    with flightlog.open(store_path, retention=HOUR) as store:
        ids = log_shuffled(store, [Trace(agent_name="bot", timestamp=ago(m)) for m in ages])
        old, new = ids[:4], ids[4:]

        wait_until(lambda: store.count() == len(new), store)
        time.sleep(1.2)  # a later sweep keeps what is young enough

        assert listed(store) == set(new)
        assert store.stats().count == len(new)
        for trace_id in old:
            with pytest.raises(TraceNotFound):
                store.get(trace_id)
        assert store.check().ok


def test_a_store_reopened_with_retention_drops_what_is_already_too_old(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        old, new = store.log_many(
            [Trace(agent_name="bot", timestamp=ago(120)), Trace(agent_name="bot")]
        )

    with flightlog.open(store_path, retention=HOUR) as store:
        wait_until(lambda: listed(store) == {new}, store)
        with pytest.raises(TraceNotFound):
            store.get(old)
        assert store.check().ok


def test_max_bytes_removes_the_oldest_traces_first_and_keeps_the_newest(
    store_path: Path,
) -> None:
    rng = random.Random(5)
    traces = [
        Trace(
            agent_name="bot",
            timestamp=ago(300 - i),
            input=base64.b64encode(rng.randbytes(6000)).decode(),  # barely compressible
        )
        for i in range(300)
    ]  # about 2 MB, oldest first
    with flightlog.open(store_path, max_bytes=512 * 1024) as store:
        ids = log_shuffled(store, traces)

        wait_until(lambda: store.count() < len(ids), store)
        remaining = settled_count(store)

        assert 0 < remaining < len(ids) // 2
        assert listed(store) == set(ids[-remaining:]), "exactly the newest remain"
        assert store.check().ok


def settled_count(store: flightlog.Store, quiet_s: float = 2.5, seconds: float = 20.0) -> int:
    """The trace count once the sweeps stop removing traces for ``quiet_s`` seconds."""
    deadline = time.monotonic() + seconds
    count, since = store.count(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "retention kept removing traces"
        time.sleep(0.1)
        store.flush()
        if store.count() != count:
            count, since = store.count(), time.monotonic()
    return count


def test_without_retention_old_traces_stay(store_path: Path) -> None:
    with flightlog.open(store_path) as store:
        (tid,) = store.log_many([Trace(agent_name="bot", timestamp=ago(60 * 24 * 365))])
        store.flush()
        time.sleep(1.2)

        assert listed(store) == {tid}


@pytest.mark.parametrize(
    "bad",
    [dt.timedelta(0), dt.timedelta(seconds=-1), 3600, 3600.0, "1h", True],
    ids=["zero", "negative", "int", "float", "str", "bool"],
)
def test_a_bad_retention_is_refused_and_creates_nothing(store_path: Path, bad: Any) -> None:
    with pytest.raises(ValidationError, match="retention") as caught:
        flightlog.open(store_path, retention=bad)

    assert [e["path"] for e in caught.value.errors] == ["retention"]
    assert not store_path.exists()


@pytest.mark.parametrize(
    "bad",
    [0, -1, True, 1.5, "10", 2**64],
    ids=["zero", "negative", "bool", "float", "str", "too-big"],
)
def test_a_bad_max_bytes_is_refused_and_creates_nothing(store_path: Path, bad: Any) -> None:
    with pytest.raises(ValidationError, match="max_bytes") as caught:
        flightlog.open(store_path, max_bytes=bad)

    assert [e["path"] for e in caught.value.errors] == ["max_bytes"]
    assert not store_path.exists()

"""Shared fixtures: a fresh store per test, and a way to look inside a closed store.

``count_records`` reads the LMDB environment directly with the ``lmdb`` package, following
docs/format.md, so a test can assert "nothing was stored" without trusting flightlog's own
read path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import flightlog
import lmdb
import pytest


def is_hex(text: object, length: int) -> bool:
    """Whether ``text`` is an id: ``length`` lowercase hex characters, not all zero."""
    return (
        isinstance(text, str)
        and len(text) == length
        and all(c in "0123456789abcdef" for c in text)
        and text != "0" * length
    )


def count_entries(path: Path, name: str) -> int:
    """How many entries the named database of a *closed* store holds."""
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        db = env.open_db(name.encode(), create=False)
        with env.begin(db=db) as txn:
            return int(txn.stat(db)["entries"])
    finally:
        env.close()


def count_records(path: Path) -> int:
    """How many fragments a *closed* store holds (entries of its ``records`` database)."""
    return count_entries(path, "records")


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the ``store`` fixture lives; the directory does not exist before it is opened."""
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Iterator[flightlog.Store]:
    """A fresh store in group durability, closed (and so flushed) after the test."""
    opened = flightlog.open(store_path)
    try:
        yield opened
    finally:
        opened.close()

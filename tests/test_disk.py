"""Running out of room (RELIABILITY.md tests 6 and 7): a map that fills up grows by itself;
a disk (or file-size limit) that fills up is a typed ``StorageFull``, the process lives on,
earlier data stays, and ingest resumes once there is room again.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import flightlog
import pytest
from faults import assert_check_clean, run_child


def noise_trace(i: int) -> dict[str, object]:
    """About 8 KB of hex that zstd cannot shrink below ~4 KB: the file grows fast."""
    return {"agent_name": "filler", "input": os.urandom(4096).hex(), "metadata": {"i": i}}


def test_a_tiny_map_grows_while_threads_log_and_read(tmp_path: Path) -> None:
    """RELIABILITY.md test 6: a 64 KiB map takes 100 times as much, with writers and
    readers running while it grows; nothing acknowledged is lost."""
    path = tmp_path / "store"
    initial = 64 << 10
    flushed: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []
    done = threading.Event()

    with flightlog.open(path, map_size=initial) as store:

        def log(worker: int) -> None:
            try:
                for batch in range(40):
                    ids = store.log_many(
                        noise_trace(worker * 1000 + batch * 20 + i) for i in range(20)
                    )
                    store.flush()
                    with lock:
                        flushed.extend(ids)
            except BaseException as err:
                failures.append(err)

        def read() -> None:
            try:
                while not done.is_set():
                    with lock:
                        ids = flushed[-50:]
                    for trace_id in ids:
                        assert store.get(trace_id).agent_name == "filler"
            except BaseException as err:
                failures.append(err)

        writers = [threading.Thread(target=log, args=(w,)) for w in range(2)]
        reader = threading.Thread(target=read)
        for thread in [*writers, reader]:
            thread.start()
        for thread in writers:
            thread.join()
        done.set()
        reader.join()
        assert failures == []
    assert (path / "data.mdb").stat().st_size > 100 * initial
    with flightlog.open(path, readonly=True) as reopened:
        assert reopened.count(agent_name="filler") == len(flushed) == 1600
        assert all(reopened.get(t).agent_name == "filler" for t in flushed)
    assert_check_clean(path)


# --- disk full ------------------------------------------------------------------------------------

FILL_UNTIL_FULL = """
import json, resource, signal
import flightlog

path, durability, how = sys.argv[1], sys.argv[2], sys.argv[3]
# Ignored, SIGXFSZ would kill us; with it ignored a write past the limit fails with EFBIG.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

def batch(tag, n):
    return [{"agent_name": tag, "input": os.urandom(2048).hex()} for _ in range(n)]

def write(store, tag, n):
    ids = store.log_many(batch(tag, n))
    if durability != "sync":
        store.flush()
    return ids

store = flightlog.open(path, durability=durability)
for trace_id in write(store, "early", 50):
    report("early " + trace_id)
data = os.path.join(path, "data.mdb")
if how == "rlimit":
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(data) + (512 << 10), hard))
else:  # a ballast file leaves 512 KiB free on the small file system
    ballast = os.path.join(os.path.dirname(path), "ballast")
    stat = os.statvfs(path)
    with open(ballast, "wb") as f:
        f.write(b"\\0" * (stat.f_bavail * stat.f_frsize - (512 << 10)))

refusals = 0
for attempt in range(1000):
    try:
        for trace_id in write(store, "before full", 10):
            report("acked " + trace_id)
    except flightlog.StorageFull as err:
        refusals += 1
        report("full " + type(err).__name__ + ": " + str(err).replace("\\n", " "))
        if refusals == 5:  # keep trying while full: every refusal must be typed
            break
report(f"refusals {refusals}")

if how == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
else:
    os.remove(ballast)
for trace_id in write(store, "after", 20):
    report("after " + trace_id)
report("check " + json.dumps(store.check().problems))
store.close()
report("closed")
"""


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted at ``where``; skips the test where mounting is not allowed."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr!r}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.mark.parametrize("durability", ["sync", "group", "none"])
@pytest.mark.parametrize("how", ["rlimit", "tmpfs"])
def test_a_full_disk_is_a_typed_error_and_ingest_resumes_when_space_frees(
    tmp_path: Path, how: str, durability: str
) -> None:
    """RELIABILITY.md test 7, with RLIMIT_FSIZE (any user) and a full tmpfs (root only)."""
    with contextlib.ExitStack() as stack:
        root = tmp_path
        if how == "tmpfs":
            root = stack.enter_context(small_tmpfs(tmp_path / "mnt"))
        path = root / "store"
        child = run_child(FILL_UNTIL_FULL, str(path), durability, how)
        assert child.process.returncode == 0, child.stderr()
        lines = child.lines
        refusals = [line for line in lines if line.startswith("full ")]
        assert "refusals 5" in lines, lines[-5:]
        assert all(line.startswith("full StorageFull: ") for line in refusals), refusals
        assert all("no space" in r or "file size limit" in r for r in refusals), refusals
        assert lines[-2:] == ["check []", "closed"]

        def ids(tag: str) -> list[str]:
            return [line.split()[1] for line in lines if line.startswith(tag + " ")]

        assert len(ids("early")) == 50 and len(ids("after")) == 20
        with flightlog.open(path, readonly=True) as store:
            for tag in ("early", "acked", "after"):
                assert all(store.get(t).agent_name in (tag, "before full") for t in ids(tag))
            # Nothing of a refused batch is stored: only acknowledged ones are.
            assert store.count(agent_name="before full") == len(ids("acked"))
        assert_check_clean(path)

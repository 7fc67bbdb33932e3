"""kill -9 real writer processes part-way, then check nothing committed is lost or duplicated.

Each test kills a process at a random point of its work (found by watching the repository's
files change) and checks that the store opens at a committed version with everything
committed intact, and that re-running the command completes it exactly once.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.store import StoreWriter
from embstore.testing import make_npy_tree

pytestmark = pytest.mark.slow


def _objects(store: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(store))


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 90.0) -> bool:
    """SIGKILL ``proc`` a random moment after ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            time.sleep(np.random.default_rng(proc.pid).uniform(0, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc.returncode == -signal.SIGKILL
        time.sleep(0.002)
    proc.wait(timeout)
    return False


def _python(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)])


def _started_writing(store: Path) -> Callable[[], bool]:
    before = _objects(store)
    return lambda: _objects(store) > before


INGEST = (
    "import embstore, sys;"
    "embstore.ingest([sys.argv[1]], store=sys.argv[2], layout='babyview', batch_rows=16)"
)


def _check_prefix(store: Path, expected: dict[str, np.ndarray]) -> int:
    ds = embstore.open(store)
    paths = ds.path.values.tolist()
    assert len(paths) == len(set(paths))
    assert paths == sorted(expected)[: len(paths)]  # a prefix of the sorted input: nothing skipped
    if paths:
        np.testing.assert_array_equal(
            ds.embedding.values, np.stack([expected[p] for p in paths]).reshape(-1, 8)
        )
    assert embstore.validate(store, deep=True).ok
    return len(paths)


def test_kill_minus_9_during_ingest_then_rerun_completes_exactly_once(tmp_path):
    tree, store = tmp_path / "emb", tmp_path / "s"
    files = make_npy_tree(tree, n_subjects=20, n_categories=4, ages=range(6, 26), dim=8)
    expected = {f.relative_to(tree).as_posix(): np.load(f) for f in files}
    StoreWriter(store, feature_size=8)  # the store exists: the ingest only appends
    seen = []
    for _ in range(3):
        proc = _python(INGEST, tree, store)
        if not _kill_when(proc, _started_writing(store)):
            break
        seen.append(_check_prefix(store, expected))
    assert seen, "the ingest finished before it could be killed"
    subprocess.run([sys.executable, "-c", INGEST, tree, store], check=True)
    assert _check_prefix(store, expected) == len(files)
    statuses = [
        e.get("status")
        for e in embstore.provenance(embstore.open(store))["provenance"]
        if e["action"] == "ingest"
    ]
    assert statuses[-1] == "complete"


@pytest.fixture
def big(tmp_path: Path) -> Path:
    store = tmp_path / "s"
    writer = StoreWriter(store, feature_size=64, row_chunk=256)
    rng = np.random.default_rng(0)
    for start in range(0, 60_000, 20_000):
        paths = [f"x/{i:06d}.npy" for i in range(start, start + 20_000)]
        subjects = ["a", "b", "c", "d"] * 5_000
        writer.append(paths, rng.standard_normal((20_000, 64)), {"subject": subjects})
    return store


NORMALIZE = (
    "import embstore, sys;"
    "embstore.normalize_store(sys.argv[1], exclude_subjects=[sys.argv[2]], overwrite=True)"
)


def test_kill_minus_9_during_normalize_leaves_no_variable(big):
    versions = len(embstore.log(big))
    assert _kill_when(_python(NORMALIZE, big, "a"), _started_writing(big))
    ds = embstore.open(big)
    assert "normalized" not in ds and "normalized_mean" not in ds
    assert len(embstore.log(big)) == versions and embstore.validate(big, deep=True).ok
    embstore.normalize_store(big, exclude_subjects=["a"])
    assert not np.isnan(embstore.open(big).normalized.values).any()


def test_kill_minus_9_during_normalize_overwrite_keeps_the_old_variable(big):
    embstore.normalize_store(big, exclude_subjects=["a"])
    old = embstore.open(big).normalized.values
    assert _kill_when(_python(NORMALIZE, big, "b"), _started_writing(big))
    ds = embstore.open(big)
    np.testing.assert_array_equal(ds.normalized.values, old)
    assert embstore.provenance(ds.normalized)["exclude_subjects"] == ["a"]
    subprocess.run([sys.executable, "-c", NORMALIZE, big, "b"], check=True)
    ds = embstore.open(big)
    assert embstore.provenance(ds.normalized)["exclude_subjects"] == ["b"]
    assert not np.array_equal(ds.normalized.values, old)


RESTORE = "import embstore, sys; embstore.restore(sys.argv[1], sys.argv[2])"


def test_kill_minus_9_during_restore_leaves_either_version(big):
    embstore.normalize_store(big, exclude_subjects=["a"])
    target = embstore.log(big)[0].id
    before = embstore.open(big).normalized.values
    embstore.normalize_store(big, exclude_subjects=["b"], overwrite=True)
    after = embstore.open(big).normalized.values
    assert _kill_when(_python(RESTORE, big, target), _started_writing(big))
    now = embstore.open(big).normalized.values
    assert np.array_equal(now, after) or np.array_equal(now, before)
    subprocess.run([sys.executable, "-c", RESTORE, big, target], check=True)
    np.testing.assert_array_equal(embstore.open(big).normalized.values, before)
    assert embstore.validate(big, deep=True).ok


GC = (
    "import embstore, sys, datetime; z = datetime.timedelta(0);"
    "embstore.gc(sys.argv[1], older_than=z, safety_margin=z)"
)


def test_kill_minus_9_during_gc_keeps_every_kept_version(big):
    embstore.tag(big, "raw")
    for subject in ("a", "b", "c"):
        embstore.normalize_store(big, exclude_subjects=[subject], overwrite=True)
    newest = embstore.open(big).normalized.values
    objects = _objects(big)
    proc = _python(GC, big)
    killed = _kill_when(proc, lambda: _objects(big) < objects)
    assert killed or proc.returncode == 0
    np.testing.assert_array_equal(embstore.open(big).normalized.values, newest)
    assert embstore.open(big, version="raw").sizes["sample"] == 60_000
    subprocess.run([sys.executable, "-c", GC, big], check=True)
    assert embstore.validate(big, deep=True).ok
    assert embstore.validate(big, version="raw", deep=True).ok

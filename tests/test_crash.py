"""kill -9 real writer processes part-way, then check nothing committed is lost or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.samples import make_npy_tree
from embstore.store import uncommitted_changes
from embstore.writer import StoreWriter

pytestmark = pytest.mark.slow

INGEST = (
    "import embstore, sys;"
    "embstore.ingest([sys.argv[1]], store=sys.argv[2], layout='babyview', batch_rows=16)"
)


def _committed_rows(store: Path) -> int:
    try:
        return json.loads((store / "zarr.json").read_text())["attributes"]["embstore"]["rows"]
    except (OSError, ValueError, KeyError):
        return 0


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> bool:
    """SIGKILL ``proc`` once ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            time.sleep(
                np.random.default_rng(proc.pid).uniform(0, 0.02)
            )  # land anywhere in a commit
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait(timeout)
    return False


def _check_consistent(store: Path, expected: dict[str, np.ndarray]) -> int:
    ds = embstore.open(store)
    paths = ds.path.values.tolist()
    assert len(paths) == len(set(paths)) == _committed_rows(store)
    assert paths == sorted(expected)[: len(paths)]  # a prefix of the sorted input: nothing skipped
    np.testing.assert_array_equal(
        ds.embedding.values, np.stack([expected[p] for p in paths]).reshape(-1, 8)
    )
    assert embstore.validate(store).ok
    return len(paths)


def test_kill_minus_9_during_ingest_then_rerun_completes_exactly_once(tmp_path):
    tree, store = tmp_path / "emb", tmp_path / "s.zarr"
    files = make_npy_tree(tree, n_subjects=20, n_categories=4, ages=range(6, 26), dim=8)
    expected = {f.relative_to(tree).as_posix(): np.load(f) for f in files}
    seen = []
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", INGEST, str(tree), str(store)])
        before = _committed_rows(store)
        target = before + 16 * round_
        killed = _kill_when(proc, lambda t=target: _committed_rows(store) > t)
        if not killed:
            break
        seen.append(_check_consistent(store, expected))
    assert len(seen) >= 2, "the ingest finished before it could be killed twice"
    assert seen == sorted(seen) and seen[-1] < len(files)
    subprocess.run([sys.executable, "-c", INGEST, str(tree), str(store)], check=True)
    assert _check_consistent(store, expected) == len(files)
    assert not uncommitted_changes(store)
    statuses = [
        e.get("status")
        for e in embstore.open(store).attrs["embstore"]["provenance"]
        if e["action"] == "ingest"
    ]
    assert statuses[-1] == "complete" and statuses.count("running") == len(
        seen
    )  # killed runs say so


NORMALIZE = "import embstore, sys; embstore.normalize_store(sys.argv[1], exclude_subjects=['a'])"


def test_kill_minus_9_during_normalize_leaves_no_variable(tmp_path):
    store = tmp_path / "s.zarr"
    writer = StoreWriter(store, feature_size=64, row_chunk=256)
    rng = np.random.default_rng(0)
    for start in range(0, 60_000, 20_000):
        paths = [f"x/{i:06d}.npy" for i in range(start, start + 20_000)]
        writer.append(paths, rng.standard_normal((20_000, 64)), {"subject": ["a", "b"] * 10_000})
    staging = store / "_embstore" / "staging"
    proc = subprocess.Popen([sys.executable, "-c", NORMALIZE, str(store)])
    assert _kill_when(
        proc, lambda: staging.exists() and any(p.name == "normalized" for p in staging.glob("*/*"))
    )
    ds = embstore.open(store)
    assert "normalized" not in ds and "normalized_mean" not in ds
    assert any("interrupted work" in w for w in embstore.validate(store).warnings)
    embstore.normalize_store(store, exclude_subjects=["a"])  # repairs, then completes
    ds = embstore.open(store)
    assert not np.isnan(ds.normalized.values).any()
    assert not uncommitted_changes(store)

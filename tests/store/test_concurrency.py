"""Several writers into one store: every path exactly once, locally (lock) and on S3 (retry)."""

import multiprocessing
import os

import numpy as np
import pytest

import embstore
from embstore.store import StoreWriter

pytestmark = pytest.mark.slow

PATHS = 40


def _rows():
    paths = [f"r{i:05d}" for i in range(PATHS)]
    return paths, np.arange(PATHS * 4, dtype="f4").reshape(PATHS, 4)


def _writer(store: str, worker: int, env: dict[str, str], start) -> None:
    os.environ.update(env)
    writer = StoreWriter(store, feature_size=4, row_chunk=4)  # creators race too
    start.wait(60)  # then every worker appends at once
    paths, vectors = _rows()
    order = np.random.default_rng(worker).permutation(PATHS)  # every worker writes every path
    for start in range(0, PATHS, 7):
        idx = order[start : start + 7]
        own = [f"w{worker}-{start}"]  # one row only this worker writes, in every batch
        writer.append(
            [paths[i] for i in idx] + own,
            np.vstack([vectors[idx], np.full((1, 4), -worker, "f4")]),
            {"writer": [str(worker)] * (len(idx) + 1)},
        )


def _run_writers(store: str, env: dict[str, str]) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(store, w, env, start)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    ds = embstore.open(store)
    paths = ds.path.values
    shared = np.flatnonzero(np.char.startswith(paths.astype(str), "r"))
    order = shared[np.argsort(paths[shared])]
    assert paths[order].tolist() == _rows()[0]  # each shared path exactly once
    np.testing.assert_array_equal(ds.embedding.values[order], _rows()[1])
    own = sorted(p for p in paths.tolist() if p.startswith("w"))
    assert own == sorted(f"w{w}-{s}" for w in range(4) for s in range(0, PATHS, 7))
    assert embstore.validate(store).ok
    # every commit is in the history: the rows added add up to the rows stored
    added = [v.metadata.get("rows_added", 0) for v in embstore.log(store)]
    assert sum(added) == len(paths) == PATHS + len(own)


def test_four_local_writers_store_every_path_exactly_once(tmp_path):
    _run_writers(str(tmp_path / "s"), {})


def test_four_s3_writers_store_every_path_exactly_once(s3_store):
    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    _run_writers(s3_store, {k: os.environ[k] for k in keys})

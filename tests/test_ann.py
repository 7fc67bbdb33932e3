"""Approximate neighbours (faiss IVF): recall against exact, stored as a version, staleness,
and exact search that never imports torch just to look for a GPU."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import embstore
from cli import app
from embstore.errors import EmbstoreError
from embstore.store import StoreWriter

pytest.importorskip("faiss")  # the `ann` extra; installed by `dev`
N, DIM, CLUSTERS = 4000, 32, 40


def _clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    centers = np.random.default_rng(99).standard_normal((CLUSTERS, DIM)).astype(np.float32) * 4
    return centers[rng.integers(0, CLUSTERS, n)] + rng.standard_normal((n, DIM), np.float32)


def _paths(start: int, stop: int) -> list[str]:
    return [f"p{i // 8}/s{i // 4}/{i:05d}.mp4" for i in range(start, stop)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.store"
    paths = _paths(0, N)
    x = _clustered(np.random.default_rng(0), N)
    x[7, 0] = np.nan  # never indexed, never returned
    StoreWriter(path, feature_size=DIM, row_chunk=512).append(
        paths, x, {"subject": [p.split("/")[0] for p in paths]}
    )
    return path


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_recall_at_10_against_exact(store, metric):
    report = embstore.build_index(store, metric=metric)
    assert report.rows == N and report.lists > 1
    ds = embstore.open(store)
    q = _clustered(np.random.default_rng(1), 50)
    exact = embstore.neighbors(ds, q, k=10, metric=metric)
    approx = embstore.neighbors(ds, q, k=10, metric=metric, approximate=True)
    recall = np.mean(
        [len(set(exact.path[exact["query"] == i]) & set(approx.path[approx["query"] == i])) / 10
         for i in range(50)]
    )  # fmt: skip
    assert recall >= 0.95
    assert list(approx.columns) == list(exact.columns)
    assert (approx.groupby("query")["rank"].max() == 10).all()
    assert "p0/s1/00007.mp4" not in set(approx.path)


def test_the_index_is_a_version_invisible_to_xarray(store):
    before, versions = embstore.open(store), len(embstore.log(store))
    embstore.build_index(store, lists=20, nprobe=4)
    log = embstore.log(store)
    assert "approximate index" in log[0].message and len(log) == versions + 1
    assert log[0].metadata["action"] == "index"
    after = embstore.open(store)
    assert set(after.variables) == set(before.variables)
    assert embstore.validate(store).ok
    old = embstore.open(store, version=log[1].id)
    with pytest.raises(EmbstoreError, match="no approximate index"):
        embstore.neighbors(old, np.ones(DIM, np.float32), approximate=True)


def test_a_stale_index_is_refused_until_rebuilt(store):
    embstore.build_index(store, lists=20)
    paths = _paths(N, N + 100)
    StoreWriter(store, feature_size=DIM).append(
        paths,
        _clustered(np.random.default_rng(2), 100),
        {"subject": [p.split("/")[0] for p in paths]},
    )
    with pytest.raises(EmbstoreError, match="stale.*build_index"):
        embstore.neighbors(store, np.ones(DIM, np.float32), approximate=True)
    embstore.build_index(store, lists=20)
    found = embstore.neighbors(store, paths[0], k=5, approximate=True, nprobe=20)
    assert len(found) == 5


def test_path_queries_filters_and_same_subject(store):
    embstore.build_index(store, lists=20, nprobe=20)  # every list: exact answers
    ds = embstore.open(store)
    query = ds.path.values[100]
    kwargs = {"k": 8, "where": {"subject": [f"p{i}" for i in range(0, 400)]}}
    exact = embstore.neighbors(ds, query, exclude_same_subject=True, **kwargs)
    approx = embstore.neighbors(ds, query, exclude_same_subject=True, approximate=True, **kwargs)
    assert approx.path.tolist() == exact.path.tolist()
    np.testing.assert_allclose(approx.score, exact.score, rtol=1e-4)
    assert query not in set(approx.path) and "p12" not in set(approx.subject)


def test_cli_index_then_quiet_neighbors_prints_the_table(store):
    runner = CliRunner()
    built = runner.invoke(app, ["index", str(store), "--lists", "16", "-q"])
    assert built.exit_code == 0, built.output
    assert built.output == ""
    query = "p0/s0/00000.mp4"
    shown = runner.invoke(
        app, ["neighbors", str(store), "-p", query, "-k", "3", "-q", "--approximate"]
    )
    assert shown.exit_code == 0, shown.output
    assert query in shown.output and "rank" in shown.output and "score" in shown.output


def test_open_select_and_exact_search_never_import_torch(store):
    code = (
        "import sys, numpy as np, embstore\n"
        f"ds = embstore.open({str(store)!r})\n"
        "assert ds.emb.rows(subject='p3').embedding.values.shape[0] == 8\n"
        f"t = embstore.neighbors(ds, np.ones({DIM}, np.float32), k=3)\n"
        "assert len(t) == 3\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

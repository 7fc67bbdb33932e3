"""Exact nearest neighbours against a numpy brute-force reference."""

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import embstore
from embstore.errors import EmbstoreError
from embstore.store import StoreWriter

N, DIM = 103, 8
search = importlib.import_module("embstore._neighbors")  # the module


@pytest.fixture(params=[1, 16 << 20], ids=["block-per-chunk", "chunks-grouped"], autouse=True)
def block_bytes(request, monkeypatch):
    """Score each 10-row chunk apart (running top-k merged across chunks), or all at once."""
    monkeypatch.setattr(search, "BLOCK_BYTES", request.param)
    return request.param


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """103 rows (7 subjects) in 10-row chunks, two non-finite rows, two duplicate vectors."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    x[11, 3], x[40, 0] = np.nan, np.inf
    x[60] = x[61]
    paths = [f"s{i % 7}/c{i % 3}/{i:03d}.npy" for i in range(N)]
    labels = {
        "subject": [p.split("/")[0] for p in paths],
        "category": [p.split("/")[1] for p in paths],
        "age_mo": [6 + i % 5 for i in range(N)],
    }
    path = tmp_path / "s.zarr"
    StoreWriter(path, feature_size=DIM, row_chunk=10).append(paths, x, labels)
    return path


def _reference(x, queries, metric, allowed, k):
    """Brute force over the whole matrix: (scores, rows) per query, best first."""
    finite = np.isfinite(x).all(axis=1)
    x = np.where(finite[:, None], x, 1)  # any finite stand-in: those rows are masked
    x64, q64 = x.astype(np.float64), np.asarray(queries, dtype=np.float64)
    if metric == "cosine":
        s = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ x64.T
        s = s / np.linalg.norm(x64, axis=1)
    elif metric == "dot":
        s = q64 @ x64.T
    else:
        s = -np.sqrt(((q64[:, None, :] - x64[None]) ** 2).sum(-1))
    s[:, ~finite] = -np.inf
    s[~allowed] = -np.inf
    out = []
    for row in s:
        order = np.argsort(-row, kind="stable")
        order = order[np.isfinite(row[order])][:k]
        out.append((np.abs(row[order]) if metric == "euclidean" else row[order], order))
    return out


def _check(table: pd.DataFrame, reference, names, ds):
    paths = ds.path.values
    for name, (scores, rows) in zip(names, reference, strict=True):
        got = table[table["query"] == name].sort_values("rank")
        assert got["rank"].tolist() == list(range(1, len(rows) + 1))
        np.testing.assert_allclose(got["score"].to_numpy(), scores, rtol=1e-4, atol=1e-4)
        # ties (rows 60 and 61 are equal) may come in either order: compare as sets per score
        assert set(got["path"]) == set(paths[rows])


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("device", ["numpy", "cpu"], ids=["numpy", "torch-cpu"])
def test_vector_queries_match_brute_force(store, metric, device):
    ds = embstore.open(store)
    x = ds.embedding.values
    queries = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    table = embstore.neighbors(ds, queries, k=13, metric=metric, device=device)
    allowed = np.ones((4, N), dtype=bool)
    _check(table, _reference(x, queries, metric, allowed, 13), range(4), ds)
    assert not table["path"].isin(ds.path.values[[11, 40]]).any()  # non-finite rows never


@pytest.mark.parametrize("device", ["numpy", "cpu"], ids=["numpy", "torch-cpu"])
def test_path_queries_exclude_themselves_and_optionally_their_subject(store, device):
    ds = embstore.open(store)
    x, paths, subjects = ds.embedding.values, ds.path.values, ds.subject.values
    query_rows = [0, 9, 10, 102]  # chunk edges
    names = paths[query_rows].tolist()
    for exclude in (False, True):
        table = ds.emb.neighbors(names, k=N, exclude_same_subject=exclude, device=device)
        allowed = np.ones((len(names), N), dtype=bool)
        for i, r in enumerate(query_rows):
            allowed[i, r] = False
            if exclude:
                allowed[i, subjects == subjects[r]] = False
        _check(table, _reference(x, x[query_rows], "cosine", allowed, N), names, ds)
        for name in names:
            got = table[table["query"] == name]
            assert name not in set(got["path"])
            assert (got["subject"] != name.split("/")[0]).all() if exclude else True


def test_where_filters_by_labels_or_mask(store):
    ds = embstore.open(store)
    x = ds.embedding.values
    q = x[[5]]
    by_labels = embstore.neighbors(ds, q, k=5, where={"category": ["c1"], "age_mo": slice(7, 8)})
    mask = (ds.category.values == "c1") & (ds.age_mo.values >= 7) & (ds.age_mo.values <= 8)
    _check(by_labels, _reference(x, q, "cosine", mask[None], 5), [0], ds)
    assert set(by_labels["category"]) == {"c1"}
    by_mask = embstore.neighbors(ds, q, k=5, where=xr.DataArray(mask, dims="sample"))
    pd.testing.assert_frame_equal(by_mask, by_labels)


def test_fewer_allowed_rows_than_k_and_the_table_columns(store):
    ds = embstore.open(store)
    mask = np.zeros(N, dtype=bool)
    mask[[3, 50]] = True
    table = embstore.neighbors(store, ds.embedding.values[:2], k=10, where=mask)
    assert list(table.columns) == [
        "query",
        "rank",
        "path",
        "score",
        "age_mo",
        "category",
        "subject",
    ]
    assert len(table) == 4 and set(table["path"]) == set(ds.path.values[[3, 50]])


def test_in_memory_dataset_matches_the_store(store):
    ds = embstore.open(store)
    memory = ds.compute()
    q = ds.embedding.values[[1, 2]]
    pd.testing.assert_frame_equal(
        embstore.neighbors(memory, q, k=7), embstore.neighbors(ds, q, k=7)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ["nope.npy"]}, "not in the store"),
        ({"query": "s4/c2/011.npy"}, "hold NaN/Inf"),
        ({"query": np.zeros(3)}, "must be"),
        ({"query": np.zeros(DIM), "exclude_same_subject": True}, "needs path queries"),
        ({"query": np.zeros(DIM), "metric": "manhattan"}, "unknown metric"),
        ({"query": np.zeros(DIM), "variable": "normalized"}, "no \\(sample, feature\\)"),
        ({"query": np.zeros(DIM), "where": {"colour": "red"}}, "no label 'colour'"),
    ],
    ids=[
        "unknown-path",
        "nonfinite-query",
        "wrong-size",
        "subject-needs-paths",
        "metric",
        "variable",
        "unknown-label",
    ],
)
def test_user_errors(store, kwargs, message):
    with pytest.raises(EmbstoreError, match=message):
        embstore.neighbors(embstore.open(store), **kwargs)


def test_blocks_of_small_stored_chunks_are_read_in_one_call_each(
    tmp_path, monkeypatch, block_bytes
):
    """The exact search reads each block of stored chunks with one call into one array (no
    task and no concatenation per 256-row chunk), and finds the same rows as numpy."""
    from xarray.backends.zarr import ZarrArrayWrapper

    rows, dim = 3000, 32
    x = np.random.default_rng(11).standard_normal((rows, dim), dtype="f4")
    paths = [f"c/{i:05d}.npy" for i in range(rows)]
    StoreWriter(tmp_path / "s.store", feature_size=dim, row_chunk=256).append(paths, x, {})
    ds = embstore.open(tmp_path / "s.store")
    calls = []
    original = ZarrArrayWrapper.__getitem__

    def counting(self, key):
        if len(key.tuple) == 2:  # the matrix (labels are read whole, once)
            calls.append(key.tuple[0])
        return original(self, key)

    monkeypatch.setattr(ZarrArrayWrapper, "__getitem__", counting)
    table = embstore.neighbors(ds, x[:3], k=4, metric="dot")
    blocks = 12 if block_bytes == 1 else 1  # 12 stored chunks, grouped up to BLOCK_BYTES
    assert len(calls) == blocks, calls
    expected = np.argsort(-(x[:3] @ x.T), axis=1, kind="stable")[:, :4]
    assert table["path"].tolist() == [paths[i] for i in expected.ravel()]


@pytest.mark.parametrize("stored", [True, False], ids=["stored-chunks", "in-memory"])
def test_blocks_stay_within_block_bytes(tmp_path, monkeypatch, stored):
    """Stored chunks are grouped and an in-memory matrix is cut into blocks of at most
    BLOCK_BYTES of float32 rows: larger ones are fresh pages each time (glibc maps blocks above
    its 32 MiB threshold anew), whose first touch cost more than reading them."""
    rows, dim = 2000, 32  # 128 bytes a row; 64 KiB hold 512 rows, i.e. five 100-row chunks
    x = np.random.default_rng(5).standard_normal((rows, dim), dtype="f4")
    paths = [f"c/{i:05d}.npy" for i in range(rows)]
    StoreWriter(tmp_path / "s.store", feature_size=dim, row_chunk=100).append(paths, x, {})
    ds = embstore.open(tmp_path / "s.store")
    if not stored:
        ds = ds.load()
    monkeypatch.setattr(search, "BLOCK_BYTES", 64 << 10)
    sizes = []
    original = search._NumpyTopK.update

    def recording(self, block, *args):
        sizes.append(block.nbytes)
        return original(self, block, *args)

    monkeypatch.setattr(search._NumpyTopK, "update", recording)
    table = embstore.neighbors(ds, x[:2], k=3, metric="dot")
    row = dim * 4
    # five whole 100-row chunks a block; or 512 rows a block, the last one what is left
    assert sizes == ([500 * row] * 4 if stored else [512 * row] * 3 + [464 * row])
    expected = np.argsort(-(x[:2] @ x.T), axis=1, kind="stable")[:, :3]
    assert table["path"].tolist() == [paths[i] for i in expected.ravel()]

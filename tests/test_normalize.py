import importlib

import dask
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

import embstore
from embstore.errors import EmbstoreError
from embstore.store import StoreWriter
from embstore.store.views import provenance

EXCLUDED = "00270001"


def _reference(x: np.ndarray, used: np.ndarray, eps: float = 1e-10):
    x64 = x.astype(np.float64)
    mean, std = x64[used].mean(axis=0), x64[used].std(axis=0)
    return (x64 - mean) / (std + eps), mean, std


def test_matches_a_float64_numpy_reference_with_the_subject_excluded(store):
    report = embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    ds = embstore.open(store)
    x, subjects = ds.embedding.values, ds.subject.values
    used = subjects != EXCLUDED
    expected, mean, std = _reference(x, used)
    np.testing.assert_allclose(ds.normalized_mean.values, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.normalized_std.values, std, rtol=1e-12)
    np.testing.assert_allclose(ds.normalized.values, expected, rtol=1e-5, atol=1e-5)
    assert ds.normalized.dtype == np.float32 and ds.normalized_mean.dtype == np.float64
    assert ds.normalized.encoding["chunks"] == ds.embedding.encoding["chunks"]
    # the excluded subject is normalized too, with the statistics of the others
    assert np.isfinite(ds.normalized.values[~used]).all()
    attrs = provenance(ds.normalized)
    assert (
        attrs["exclude_subjects"] == [EXCLUDED]
        and attrs["rows_used"] == int(used.sum()) == report.rows_used
    )
    assert attrs["source"] == "embedding" and attrs["eps"] == 1e-10 and attrs["rows"] == 48


def test_offset_heavy_data_keeps_float64_accuracy(tmp_path):
    rng = np.random.default_rng(1)
    x = (1e4 + rng.standard_normal((3000, 8))).astype(np.float32)
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=8, row_chunk=64)
    writer.append([f"{i}" for i in range(3000)], x, {"subject": ["a"] * 3000})
    embstore.normalize_store(tmp_path / "s.zarr")
    ds = embstore.open(tmp_path / "s.zarr")
    _, mean, std = _reference(x, np.ones(3000, bool))
    np.testing.assert_allclose(ds.normalized_std.values, std, rtol=1e-10)
    np.testing.assert_allclose(ds.normalized_mean.values, mean, rtol=1e-13)


def test_nonfinite_rows_never_feed_the_statistics(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    x[7, 1], x[9, 0] = np.nan, np.inf
    StoreWriter(tmp_path / "s.zarr", feature_size=4, row_chunk=8).append(
        [str(i) for i in range(50)], x
    )
    embstore.normalize_store(tmp_path / "s.zarr")
    ds = embstore.open(tmp_path / "s.zarr")
    used = np.isfinite(x).all(axis=1)
    _, mean, std = _reference(x, used)
    np.testing.assert_allclose(ds.normalized_mean.values, mean, rtol=1e-12)
    assert provenance(ds.normalized)["rows_used"] == 48


def test_constant_features_are_scaled_by_one_and_reported(tmp_path):
    x = np.random.default_rng(3).standard_normal((40, 3)).astype(np.float32)
    x[:, 1] = 0.1  # constant, with a float32 representation error
    StoreWriter(tmp_path / "s.zarr", feature_size=3).append([str(i) for i in range(40)], x)
    report = embstore.normalize_store(tmp_path / "s.zarr")
    ds = embstore.open(tmp_path / "s.zarr")
    assert report.constant_features == [1] == provenance(ds.normalized)["constant_features"]
    np.testing.assert_array_equal(ds.normalized.values[:, 1], 0.0)
    assert "1 constant feature" in report.summary()


def test_an_unknown_excluded_subject_is_an_error_and_the_store_is_unchanged(store):
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.raises(EmbstoreError, match="not in the store: 0027OOO1"):
        embstore.normalize_store(store, exclude_subjects=[EXCLUDED, "0027OOO1"])
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert "normalized" not in embstore.open(store)


class _CountComputes(Callback):
    """Records the keys of every graph dask runs."""

    def __init__(self):
        super().__init__()
        self.graphs = []

    def _start(self, dsk):
        self.graphs.append([str(k) for k in dsk])


def test_normalize_is_lazy_until_asked(store):
    ds = embstore.open(store)
    with _CountComputes() as counter:
        out = embstore.normalize(ds, exclude_subjects=[EXCLUDED])
        touched_embedding = [g for g in counter.graphs if any("embedding" in k for k in g)]
        assert touched_embedding == []  # only labels were read
        assert isinstance(out.normalized.data, dask.array.Array)
        values = out.normalized.values
    assert any(any("embedding" in k for k in g) for g in counter.graphs)
    expected, _, _ = _reference(ds.embedding.values, ds.subject.values != EXCLUDED)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)


def test_in_memory_and_chunked_datasets_give_the_same_result(store):
    chunked = embstore.open(store)
    in_memory = chunked.compute()
    a = embstore.normalize(chunked, exclude_subjects=[EXCLUDED]).normalized.values
    b = embstore.normalize(in_memory, exclude_subjects=[EXCLUDED]).normalized.values
    np.testing.assert_array_equal(a, b)
    plain = xr.Dataset({"embedding": (("sample", "feature"), in_memory.embedding.values)})
    plain = plain.assign_coords(subject=("sample", in_memory.subject.values))
    c = embstore.normalize(
        plain, exclude_subjects=[EXCLUDED]
    ).normalized.values  # no 'nonfinite' label
    np.testing.assert_allclose(a, c, rtol=1e-6)


def test_no_task_holds_more_than_a_chunk(store, monkeypatch):
    """Out-of-core: every intermediate is at most a few chunks, never the whole matrix."""
    monkeypatch.setattr("embstore.store.lazy.SCAN_BLOCK_BYTES", 0)  # scans: one chunk a task
    biggest = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            biggest.append(getattr(result, "nbytes", 0))

    with Sizes():
        embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    chunk_f8 = 8 * 16 * 8  # 8 rows x 16 features x float64
    assert 0 < max(biggest) <= chunk_f8 < 48 * 16 * 4


def test_after_appending_rows_the_variable_is_stale_not_mismatched(store, npy_tree):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    np.save(npy_tree / "category000" / "00990001_30_month_level_avg.npy", np.ones(16, "f4"))
    embstore.ingest([npy_tree], store=store, layout="babyview")
    ds = embstore.open(store)
    assert ds.sizes["sample"] == 49 and np.isnan(ds.normalized.values[-1]).all()
    variable = embstore.info(store)["variables"]["normalized"]
    assert variable["status"] == "stale: covers 48 of 49 rows" and variable["rows_covered"] == 48
    out = store.parent / "out"
    report = embstore.export(store, out, format="npy-tree", variable="normalized", allow_stale=True)
    assert (report.rows, report.rows_not_covered) == (48, 1)


@pytest.mark.parametrize(
    "name", ["subject", "age_mo", "category"], ids=["subject", "age", "category"]
)
def test_a_label_is_never_replaced_by_a_normalized_variable(store, name):
    with pytest.raises(EmbstoreError, match="not a normalized variable"):
        embstore.normalize_store(store, name=name, overwrite=True)
    assert embstore.open(store)[name].sizes["sample"] == 48


def test_existing_variable_needs_overwrite_and_a_failed_write_leaves_none(store, monkeypatch):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    with pytest.raises(EmbstoreError, match="exists"):
        embstore.normalize_store(store)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(importlib.import_module("embstore._normalize").da, "store", boom)
    with pytest.raises(RuntimeError):
        embstore.normalize_store(store, name="other")
    assert "other" not in embstore.open(store)
    versions = len(embstore.log(store))
    monkeypatch.undo()
    embstore.normalize_store(store, overwrite=True)  # replaces: no subject excluded now
    assert provenance(embstore.open(store).normalized)["rows_used"] == 48
    # one version for the overwrite, and the replaced variable is still in the history
    history = embstore.log(store)
    assert len(history) == versions + 1
    old = embstore.open(store, version=history[1].id)
    assert provenance(old.normalized)["exclude_subjects"] == [EXCLUDED]


def test_small_chunk_scans_read_blocks_of_chunks_and_give_the_same_statistics(tmp_path):
    """Issue 18: a store in small stored chunks is scanned a few chunks a task (not one task a
    chunk), while ``embstore.open`` stays chunk-exact, and the statistics do not change."""
    from embstore.store import lazy

    rows, dim = 3000, 32
    x = np.random.default_rng(5).standard_normal((rows, dim), dtype="f4") + 3
    paths = [f"c/{i:05d}.npy" for i in range(rows)]
    small, big = tmp_path / "small.store", tmp_path / "big.store"
    StoreWriter(small, feature_size=dim, row_chunk=256).append(paths, x, {})
    StoreWriter(big, feature_size=dim, row_chunk=4096).append(paths, x, {})
    opened = embstore.open(small).embedding.data
    assert opened.chunks[0][0] == 256  # selections stay chunk-exact
    blocks = lazy.scan_blocks(opened, target_bytes=10 * 256 * dim * 4)
    assert blocks.chunks[0][:2] == (2560, 440)
    np.testing.assert_array_equal(blocks.compute(), x)
    assert lazy.scan_blocks(opened[1:]).chunks == opened[1:].chunks  # not a plain read: as is
    a = embstore.normalize(embstore.open(small)).normalized_mean.values
    b = embstore.normalize(embstore.open(big)).normalized_mean.values
    np.testing.assert_allclose(a, x.astype("f8").mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    sa = embstore.normalize(embstore.open(small)).normalized_std.values
    np.testing.assert_allclose(sa, x.astype("f8").std(axis=0), rtol=1e-12)


def test_excluded_rows_are_dropped_inside_each_chunks_task(store, monkeypatch):
    """Excluding subjects adds one mask block per row block to the statistics graph, not a
    take of the kept rows into new chunks (40% of the statistics' time at 100K rows)."""
    monkeypatch.setattr("embstore.store.lazy.SCAN_BLOCK_BYTES", 0)  # scans: one chunk a task
    ds = embstore.open(store)
    excluded = embstore.normalize(ds, exclude_subjects=[EXCLUDED]).normalized_mean.data
    everyone = embstore.normalize(ds).normalized_mean.data
    row_blocks = len(ds.embedding.data.chunks[0])
    assert len(excluded.__dask_graph__()) <= len(everyone.__dask_graph__()) + row_blocks
    expected, _, _ = _reference(ds.embedding.values, ds.subject.values != EXCLUDED)
    got = embstore.normalize(ds, exclude_subjects=[EXCLUDED]).normalized.values
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

"""embstore.quality.stats: checks, statistics and PCA against numpy."""

import json

import numpy as np
import pytest
from dask.callbacks import Callback
from typer.testing import CliRunner

import embstore
from cli import app
from embstore.errors import EmbstoreError
from embstore.quality import stats as insp
from embstore.store import StoreWriter


def test_planted_defects_are_found_with_their_rows(defective):
    store, x, paths = defective
    checks = insp.health(embstore.open(store))
    expected = {
        "nan_rows": [3],
        "inf_rows": [7],
        "zero_rows": [11],
        "duplicate_rows": [20, 33],
        "dead_dimensions": [4],
        "extreme_dimensions": [],
    }
    for name, indices in expected.items():
        assert checks.loc[name, "indices"] == indices, name
        assert checks.loc[name, "passed"] == (not indices)
    assert checks.loc["nan_rows", "examples"] == [f"{paths[3]} (row 3)"]


def test_extreme_dimension_is_flagged(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32)
    x[:, 2] *= 1e4
    StoreWriter(tmp_path / "s.zarr", feature_size=5).append([str(i) for i in range(50)], x)
    checks = insp.health(embstore.open(tmp_path / "s.zarr"))
    assert checks.loc["extreme_dimensions", "indices"] == [2]


def test_statistics_equal_numpy_over_finite_rows(defective):
    store, x, _ = defective
    stats = insp.summary(embstore.open(store))
    finite = np.isfinite(x).all(axis=1)
    x64 = x[finite].astype(np.float64)
    np.testing.assert_allclose(
        stats.features["mean"].values, x64.mean(axis=0), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        stats.features["std"].values, x64.std(axis=0), rtol=1e-10, atol=1e-15
    )
    np.testing.assert_array_equal(stats.features["min"].values, x64.min(axis=0))
    np.testing.assert_array_equal(stats.features["max"].values, x64.max(axis=0))
    norms = stats.norms.values
    np.testing.assert_allclose(norms[finite], np.linalg.norm(x64, axis=1), rtol=1e-12)
    assert np.isnan(norms[~finite]).all()
    assert stats.counts["subject"].to_dict() == {"s0": 10, "s1": 10, "s2": 10, "s3": 10}


def test_pca_matches_numpy(store):
    ds = embstore.open(store)
    model = insp.pca(ds)
    x = ds.embedding.values.astype(np.float64)
    centered = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    np.testing.assert_allclose(
        model.explained_variance_ratio[: len(s)], s**2 / (s**2).sum(), rtol=1e-8
    )
    for k in range(2):  # axes agree up to sign
        assert abs(abs(model.components[k] @ vt[k]) - 1) < 1e-8


def test_health_reads_chunk_by_chunk(tmp_path, monkeypatch):
    """Larger than any single task may hold: no intermediate exceeds a few chunks."""
    monkeypatch.setattr("embstore.store.lazy.SCAN_BLOCK_BYTES", 0)  # scans: one chunk a task
    x = np.random.default_rng(1).standard_normal((4000, 16)).astype(np.float32)
    StoreWriter(tmp_path / "s.zarr", feature_size=16, row_chunk=100).append(
        [str(i) for i in range(4000)], x
    )
    biggest = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            biggest.append(getattr(result, "nbytes", 0))

    with Sizes():
        checks = insp.health(embstore.open(tmp_path / "s.zarr"))
    assert checks["passed"].all()
    chunk_f8 = 100 * 16 * 8
    assert max(biggest) <= max(chunk_f8, 4000 * 16) < x.nbytes  # per-row outputs are O(rows)


def test_cli_strict_fails_on_defects_and_passes_clean(defective, store, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["inspect", str(defective[0]), "--strict"])
    assert bad.exit_code == 1 and "FAIL" in bad.output
    good = runner.invoke(app, ["inspect", str(store), "--strict", "--json"])
    assert good.exit_code == 0
    data = json.loads(good.output)
    assert (
        data["passed"] is True
        and data["rows"] == 48
        and set(data["checks"]) >= {"nan_rows", "dead_dimensions"}
    )


def test_pca_survives_a_large_common_offset(tmp_path):
    """The covariance is accumulated around a reference row, so an offset of 1e4 costs nothing."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((300, 8)) * np.arange(1, 9) + 1e4).astype(np.float32)
    StoreWriter(tmp_path / "s.zarr", feature_size=8, row_chunk=64).append(
        [str(i) for i in range(300)], x
    )
    model = insp.pca(embstore.open(tmp_path / "s.zarr"))
    s = np.linalg.svd(x.astype(np.float64) - x.mean(axis=0, dtype=np.float64), compute_uv=False)
    np.testing.assert_allclose(model.explained_variance_ratio, s**2 / (s**2).sum(), rtol=1e-6)


def test_rank_and_components_for_95_percent(tmp_path):
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((3, 10))
    x = (rng.standard_normal((200, 3)) * [10, 3, 1]) @ basis  # rank 3 in 10 dimensions
    StoreWriter(tmp_path / "s.zarr", feature_size=10).append([str(i) for i in range(200)], x)
    model = insp.pca(embstore.open(tmp_path / "s.zarr"))
    cumulative = np.cumsum(model.explained_variance_ratio)
    needed = model.components_for(0.95)
    assert model.rank == 3
    assert cumulative[needed - 1] >= 0.95 and (needed == 1 or cumulative[needed - 2] < 0.95)
    assert model.components_for(0.9999999) == 3  # never past the rank


def test_pca_of_a_scan_without_covariance_is_refused(store):
    with pytest.raises(EmbstoreError, match="covariance=True"):
        insp.pca(insp.scan(embstore.open(store)))


def test_scan_progress_counts_rows_once_per_block(tmp_path, monkeypatch):
    monkeypatch.setattr("embstore.store.lazy.SCAN_BLOCK_BYTES", 2 * 16 * 4 * 4)  # 2 chunks
    x = np.random.default_rng(4).standard_normal((100, 4)).astype(np.float32)
    StoreWriter(tmp_path / "s.zarr", feature_size=4, row_chunk=16).append(
        [str(i) for i in range(100)], x
    )
    calls = []
    insp.scan(
        embstore.open(tmp_path / "s.zarr"), covariance=True, progress=lambda *a: calls.append(a)
    )
    done = [d for d, _ in calls]
    assert len(calls) == 4 and done == sorted(done) and calls[-1] == (100, 100)


def test_counts_are_sorted_by_rows_with_missing_named(tmp_path):
    subjects = ["b"] * 3 + ["a"] * 5 + [""] * 2 + ["c"] * 3
    StoreWriter(tmp_path / "s.zarr", feature_size=2).append(
        [str(i) for i in range(13)], np.ones((13, 2)), {"subject": subjects}
    )
    counts = insp.summary(embstore.open(tmp_path / "s.zarr")).counts
    assert list(counts["subject"].items()) == [("(missing)", 2), ("a", 5), ("b", 3), ("c", 3)]
    assert list(counts["age_mo"].items()) == [("(missing)", 13)]


@pytest.mark.parametrize(
    ("labels", "asked", "expected"),
    [
        ({"subject": ["x", "y"], "age_mo": [6, 7]}, None, "age_mo"),
        ({"subject": ["x", "y"]}, None, "subject"),  # age_mo all missing: not a colour
        ({"subject": ["", ""]}, None, None),
        ({"subject": ["x", "y"], "age_mo": [6, 7]}, "subject", "subject"),
    ],
    ids=["age-first", "skips-all-missing", "none-has-values", "asked"],
)
def test_colour_label_defaults_to_one_with_values(tmp_path, labels, asked, expected):
    StoreWriter(tmp_path / "s.zarr", feature_size=2).append(["p", "q"], np.ones((2, 2)), labels)
    assert insp.check_label(embstore.open(tmp_path / "s.zarr"), asked) == expected


def test_unknown_colour_label_is_one_line_listing_the_labels(store):
    with pytest.raises(EmbstoreError) as info:
        insp.check_label(embstore.open(store), "agemo")
    assert str(info.value) == "color_by='agemo' is not a label; labels: age_mo, category, subject"
    result = CliRunner().invoke(app, ["inspect", str(store), "--color-by", "agemo"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {store}: color_by='agemo' is not a label; labels: age_mo, category, subject"
    ]


def test_provenance_of_stored_vectors_is_the_run_log(store):
    prov = insp.variable_provenance(embstore.open(store), "embedding")
    assert [run["action"] for run in prov["runs"]] == ["create", "ingest"]
    assert prov["runs"][1]["status"] == "complete" and prov["feature_size"] == 16


def test_provenance_of_a_normalized_variable_is_its_own_record(normalized):
    store, excluded = normalized
    ds = embstore.open(store)
    prov = insp.variable_provenance(ds, "normalized")
    assert prov["source"] == "embedding" and prov["exclude_subjects"] == [excluded]
    ds["normalized"].attrs["embstore"] = json.dumps(prov)  # as a netCDF-safe JSON attribute
    assert insp.variable_provenance(ds, "normalized") == prov


def test_in_memory_and_chunked_data_give_the_same_statistics(defective):
    store, x, _ = defective
    chunked = embstore.open(store)
    in_memory = chunked.compute()  # numpy-backed: the same functions, no dask in the input
    for ds in (chunked, in_memory):
        assert insp.health(ds).loc["duplicate_rows", "indices"] == [20, 33]
    a, b = insp.scan(chunked, covariance=True), insp.scan(in_memory, covariance=True)
    np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(a.features["max"].values, b.features["max"].values)

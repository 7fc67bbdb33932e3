import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
from dask.callbacks import Callback
from matplotlib.figure import Figure
from typer.testing import CliRunner

import embstore
from cli import app
from embstore import inspect as insp
from embstore import plots
from embstore.store import StoreWriter

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def defective(tmp_path):
    """40 x 6 rows with planted defects; feature 4 is constant."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    x[:, 4] = 0.0
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    x[11] = 0.0
    x[20] = x[2]
    x[33] = x[2]
    paths = [f"c/s{i % 4}_{6 + i // 4}_month_level_avg.npy" for i in range(40)]
    labels = {
        "subject": [f"s{i % 4}" for i in range(40)],
        "age_mo": [6 + i // 4 for i in range(40)],
    }
    StoreWriter(tmp_path / "d.zarr", feature_size=6, row_chunk=8).append(paths, x, labels)
    return tmp_path / "d.zarr", x, paths


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


def test_health_reads_chunk_by_chunk(tmp_path):
    """Larger than any single task may hold: no intermediate exceeds a few chunks."""
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


def test_plots_return_figures(store):
    ds = embstore.open(store)
    rows = insp.sample_rows(ds, 20, seed=3, order_by="subject")
    assert (np.diff(np.asarray(ds.subject.values)[rows].astype(str) >= "") >= 0).all()
    stats = insp.summary(ds)
    figures = [
        plots.plot_cosine_heatmap(ds, rows, order_by="subject"),
        plots.plot_distributions(ds, stats, rows),
        plots.plot_pca(ds, insp.pca(ds), rows, color_by="subject"),
        plots.plot_profiles(ds, rows[:3]),
        plots.plot_norms(stats),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert embstore.inspect.plot_norms is plots.plot_norms  # the documented spelling works
    assert np.array_equal(insp.sample_rows(ds, 20, seed=3), insp.sample_rows(ds, 20, seed=3))


def test_report_is_self_contained_with_valid_pngs(store, tmp_path):
    embstore.normalize_store(store)
    result = insp.inspect_store(store, variable="normalized", report=tmp_path / "rep", sample=30)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "variable <b>normalized</b>" in page and "exclude_subjects" in page  # says what it shows
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    linked = re.findall(r'href="([^"]+\.png)"', page)
    assert (
        sorted(linked) == sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
        and len(linked) == 5
    )
    for name in linked:
        assert (tmp_path / "rep" / name).read_bytes().startswith(PNG)
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(data).startswith(PNG)
    assert result.report == str(tmp_path / "rep" / "report.html")


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium on this machine (apt-get install chromium)"
)
def test_report_loads_in_headless_chromium(store, tmp_path):
    insp.inspect_store(store, report=tmp_path / "rep", sample=30)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]
    page = (tmp_path / "rep" / "report.html").as_uri()
    dom = subprocess.run(
        [_chromium(), *flags, page], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-loaded="ok"' in dom and 'data-images="5"' in dom
    assert "data-errors" not in dom


def test_cli_strict_fails_on_defects_and_passes_clean(defective, store, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["inspect", str(defective[0]), "--strict"])
    assert bad.exit_code == 1 and "FAIL" in bad.output
    good = runner.invoke(app, ["inspect", str(store), "--strict", "--json"])
    assert good.exit_code == 0
    import json

    data = json.loads(good.output)
    assert (
        data["passed"] is True
        and data["rows"] == 48
        and set(data["checks"]) >= {"nan_rows", "dead_dimensions"}
    )

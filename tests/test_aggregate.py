"""``embstore.aggregate``: group means equal a float64 pandas groupby().mean()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cli
import embstore
from embstore._aggregate import default_template, group_paths, grouped_sums, plan_groups
from embstore.errors import BadInputError, StoreError

BY = ["category", "subject", "age_mo"]


def _make_store(path: Path, n: int = 400, dim: int = 12, seed: int = 0) -> pd.DataFrame:
    """Rows with missing labels, NaN/Inf rows, a group of one and a group of only NaN rows;
    returns the same rows as a float64 pandas frame (labels + features)."""
    rng = np.random.default_rng(seed)
    cats = rng.choice(["ball", "cup", "dog"], n).astype(object)
    subs = rng.choice(["00270001", "00280001", "00290001"], n).astype(object)
    ages = rng.integers(6, 10, n)
    x = (rng.standard_normal((n, dim)) * 3 + 1000).astype(np.float32)  # offset-heavy values
    cats[:6] = ""  # missing category
    ages[6:12] = -1  # missing age
    subs[12] = ""  # missing subject
    x[20] = np.nan
    x[21, 5] = np.inf
    cats[30], subs[30], ages[30] = "zebra", "00270001", 20  # a group of one
    cats[31:33], subs[31:33], ages[31:33] = "yak", "00280001", 7  # a group of only NaN rows
    x[31:33] = np.nan
    with embstore.writer(path, feature_size=dim, row_chunk=64, model="toy") as w:
        paths = [f"v{i // 50}.mp4#f{i:06d}#0,0,8,8" for i in range(n)]
        w.append(paths, x, labels={"category": cats, "subject": subs, "age_mo": ages})
    frame = pd.DataFrame(x.astype(np.float64))
    frame["category"], frame["subject"], frame["age_mo"] = cats, subs, ages
    return frame


def _pandas_means(frame: pd.DataFrame) -> pd.DataFrame:
    """The reference: rows missing a label dropped (pandas' NaN keys), non-finite rows
    dropped, float64 mean per group."""
    labelled = frame.replace({"category": {"": None}, "subject": {"": None}, "age_mo": {-1: None}})
    features = [c for c in frame.columns if c not in BY]
    finite = np.isfinite(frame[features].to_numpy()).all(axis=1)
    return labelled[finite].groupby(BY, dropna=True)[features].mean()


def test_equals_pandas_groupby_mean(tmp_path: Path) -> None:
    frame = _make_store(tmp_path / "crops.store")
    report = embstore.aggregate(tmp_path / "crops.store", tmp_path / "months.store", by=BY)
    expected = _pandas_means(frame)
    out = embstore.open(tmp_path / "months.store")
    got = pd.DataFrame(
        out.embedding.values.astype(np.float64),
        index=pd.MultiIndex.from_arrays(
            [out.category.values, out.subject.values, out.age_mo.values.astype(np.int64)],
            names=BY,
        ),
    )
    assert len(got) == len(expected) == report.groups
    got = got.loc[expected.index]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-6, atol=0)
    one = out.sel(path="zebra/00270001_20")
    assert int(one["count"]) == 1
    np.testing.assert_allclose(one.embedding.values, frame.iloc[30, :12].to_numpy(), rtol=1e-6)
    assert "yak/00280001_7" not in out.path.values  # only NaN rows: no mean (min_count 1)
    assert report.rows_missing_labels == 13 and report.rows_nonfinite == 4
    assert report.groups_below_min_count == 1
    counts = frame[(frame.category != "") & (frame.subject != "") & (frame.age_mo != -1)]
    sizes = counts.groupby(BY).size()
    stored = dict(
        zip(out.path.values, out["count"].values + out.count_nonfinite.values, strict=True)
    )
    assert all(stored[f"{c}/{s}_{a}"] == sizes[(c, s, a)] for c, s, a in expected.index)
    assert out.path.values.tolist() == sorted(out.path.values.tolist())  # groups in key order


def test_provenance_names_source_and_version(tmp_path: Path) -> None:
    _make_store(tmp_path / "s", n=80)
    source_version = embstore.log(tmp_path / "s")[0].id
    embstore.aggregate(tmp_path / "s", tmp_path / "o", by=["subject"], min_count=3)
    meta = embstore.provenance(embstore.open(tmp_path / "o"))
    assert meta["aggregate"]["source"]["version"] == source_version
    assert meta["aggregate"]["source"]["store"] == str(tmp_path / "s")
    assert meta["aggregate"]["by"] == ["subject"] and meta["aggregate"]["min_count"] == 3
    assert meta["model"] == "toy"
    assert [e["status"] for e in meta["provenance"] if e["action"] == "aggregate"] == ["complete"]


def test_rerun_is_idempotent_and_other_sources_are_refused(tmp_path: Path) -> None:
    _make_store(tmp_path / "s", n=80)
    first = embstore.aggregate(tmp_path / "s", tmp_path / "o")
    again = embstore.aggregate(tmp_path / "s", tmp_path / "o")
    assert first.added == first.groups and again.added == 0
    with embstore.writer(tmp_path / "s") as w:  # the source changes: a new version
        w.append(["late.mp4#f000001#0,0,1,1"], np.zeros((1, 12)))
    with pytest.raises(StoreError, match="other aggregate settings"):
        embstore.aggregate(tmp_path / "s", tmp_path / "o")


def test_path_template_and_bad_arguments(tmp_path: Path) -> None:
    _make_store(tmp_path / "s", n=60)
    template = "{category}/{subject}_{age_mo}_month_level_avg"
    embstore.aggregate(tmp_path / "s", tmp_path / "o", path_template=template)
    paths = embstore.open(tmp_path / "o").path.values.tolist()
    assert all(p.endswith("_month_level_avg") and p.count("/") == 1 for p in paths)
    with pytest.raises(BadInputError, match="not labels"):
        embstore.aggregate(tmp_path / "s", tmp_path / "x", by=["colour"])
    with pytest.raises(BadInputError, match="same key"):
        embstore.aggregate(tmp_path / "s", tmp_path / "x", path_template="{category}")
    with pytest.raises(BadInputError, match="variable"):
        embstore.aggregate(tmp_path / "s", tmp_path / "x", variable="tokens")
    assert not (tmp_path / "x").exists()  # refused before any store is made
    with pytest.raises(BadInputError, match="not the source"):
        embstore.aggregate(tmp_path / "s", str(tmp_path / "s") + "/")
    assert embstore.log(tmp_path / "s")[0].message == "write complete: 60 rows added"


def test_plan_and_keys_are_pure() -> None:
    plan = plan_groups(
        {
            "subject": np.array(["a", "b", "a", ""], dtype=object),
            "age_mo": np.array([3, 3, 3, 4], dtype=np.int32),
        }
    )
    assert plan.codes.tolist() == [0, 1, 0, -1] and plan.sizes.tolist() == [2, 1]
    assert group_paths(plan.keys, None) == ["a/3", "b/3"]
    assert default_template(["category"]) == "{category}"
    with pytest.raises(BadInputError, match="'..'"):
        group_paths(pd.DataFrame({"subject": [".."]}), None)


def test_cli_aggregate(tmp_path: Path) -> None:
    _make_store(tmp_path / "s", n=60)
    result = CliRunner().invoke(
        cli.app,
        ["aggregate", str(tmp_path / "s"), str(tmp_path / "o"), "--by", "subject,age_mo"],
    )
    assert result.exit_code == 0, result.output
    assert "groups from" in result.output
    assert embstore.open(tmp_path / "o").path.values[0].count("/") == 1
    bad = CliRunner().invoke(cli.app, ["aggregate", str(tmp_path / "s"), str(tmp_path / "p"),
                                       "--by", "nothing"])  # fmt: skip
    assert bad.exit_code == 1 and "by: ['nothing'] are not labels" in bad.output


@pytest.mark.slow
def test_a_dask_cluster_gives_the_same_groups(tmp_path: Path) -> None:
    _make_store(tmp_path / "s", n=150)
    embstore.aggregate(tmp_path / "s", tmp_path / "threads")
    embstore.aggregate(tmp_path / "s", tmp_path / "cluster", scheduler="local:1")
    threads, cluster = embstore.open(tmp_path / "threads"), embstore.open(tmp_path / "cluster")
    assert threads.path.values.tolist() == cluster.path.values.tolist()
    np.testing.assert_array_equal(threads.embedding.values, cluster.embedding.values)


@pytest.mark.parametrize("command", ["aggregate", "extract-images"], ids=["aggregate", "extract"])
def test_help_names_arguments(command: str) -> None:
    result = CliRunner().invoke(cli.app, [command, "--help"])
    assert result.exit_code == 0 and "<bool>" not in result.output
    usage = result.output.splitlines()[0]
    assert "STORE" in usage and "{store}" not in usage  # arguments named in capitals


def test_grouped_sums_on_numpy_any_chunking() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((101, 5)).astype(np.float32)
    x[7] = np.inf
    codes = rng.integers(-1, 9, 101)
    frame = pd.DataFrame(x.astype(np.float64))[(codes >= 0) & np.isfinite(x).all(axis=1)]
    expected = frame.groupby(codes[frame.index]).sum()
    for chunk in (1, 7, 101, 500):
        sums, counts = grouped_sums(x, codes, 9, chunk=chunk).compute(scheduler="sync")
        np.testing.assert_allclose(sums[expected.index], expected.to_numpy(), rtol=1e-12)
        assert counts.tolist() == np.bincount(codes[frame.index], minlength=9).tolist()


def test_output_chunk_fits_its_groups(tmp_path: Path) -> None:
    """A handful of groups once got a 16 MiB chunk (any new store's default); the output's
    chunk now fits its groups (layout's 256-row floor), so the store takes ~100 KiB."""
    _make_store(tmp_path / "crops.store")
    before = tmp_path / "months.store"
    embstore.aggregate(tmp_path / "crops.store", before, by=BY)
    out = embstore.open(before)
    assert out.embedding.encoding["chunks"][0] == 256
    on_disk = sum(f.stat().st_size for f in before.rglob("*") if f.is_file())
    assert on_disk < 256 * out.sizes["feature"] * 4 + 512 * 1024

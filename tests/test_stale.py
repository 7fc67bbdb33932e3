"""Derived variables know their inputs (issue 18, finding 1 and "derived variables know their
inputs"): after a write that changes what ``normalized`` was computed from, every reader where
freshness matters says it is stale, and why; ``refresh`` recomputes it in one version."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import embstore
from cli import app
from embstore.errors import EmbstoreError, StaleVariableError
from embstore.store.variables import label_digest, stale_reasons
from embstore.store.views import provenance

EXCLUDED, MOVED = "00270001", "00280001"
RELABELLED = "subject of 12 rows changed since it was computed"
runner = CliRunner()


def _fix_csv(store: Path) -> Path:
    """A labels CSV moving every row of subject MOVED into the excluded subject."""
    ds = embstore.open(store)
    paths = ds.path.values[ds.subject.values == MOVED]
    assert len(paths) == 12
    csv = store.parent / "fix.csv"
    csv.write_text("path,subject\n" + "".join(f"{p},{EXCLUDED}\n" for p in paths))
    return csv


def _relabel_into_excluded(store: Path) -> None:
    embstore.label(store, labels_csv=_fix_csv(store))


def _cli(*args: object, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_relabel_into_the_excluded_subject_is_stale_everywhere(store, tmp_path):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)

    variable = embstore.info(store)["variables"]["normalized"]
    assert variable["status"] == f"stale: {RELABELLED}"
    assert variable["stale"] == [RELABELLED]
    assert embstore.validate(store).warnings == [f"normalized is stale: {RELABELLED}"]
    result = embstore.inspect.inspect_store(store, variable="normalized")
    assert not result.passed and result.health.loc["stale", "examples"] == [RELABELLED]
    assert embstore.open(store).emb.stale == {"normalized": [RELABELLED]}
    with pytest.raises(StaleVariableError, match="subject of 12 rows changed"):
        embstore.export(store, tmp_path / "out", format="npy-tree", variable="normalized")
    assert not (tmp_path / "out").exists()
    report = embstore.export(
        store, tmp_path / "out", format="npy-tree", variable="normalized", allow_stale=True
    )
    assert report.rows == 48 and report.stale == [RELABELLED]
    assert report.summary().endswith(f"; exported although stale ({RELABELLED})")
    # the stored vectors are never stale
    assert stale_reasons(embstore.open(store), "embedding") == []
    embstore.export(store, tmp_path / "raw", format="npy-tree")


def test_the_cli_says_stale_in_info_validate_inspect_strict_and_export(store, tmp_path):
    _cli("normalize", store, "--exclude-subject", EXCLUDED)
    said = _cli("label", store, "--labels", _fix_csv(store))
    assert f"WARNING: normalized is stale: {RELABELLED} (recompute it" in said
    assert json.loads(_cli("info", store, "--json"))["variables"]["normalized"]["stale"] == [
        RELABELLED
    ]
    assert f"normalized is stale: {RELABELLED}" in _cli("validate", store)
    _cli("inspect", store, "--variable", "normalized", "--strict", code=1)
    out = _cli(
        "export", store, tmp_path / "o", "--format", "hdf5", "--variable", "normalized", code=1
    )
    assert out.count("\n") == 1 and "is stale (subject of 12 rows changed" in out
    _cli(
        "export",
        store,
        tmp_path / "o",
        "--format",
        "hdf5",
        "--variable",
        "normalized",
        "--allow-stale",
    )


def test_refresh_recomputes_with_the_recorded_parameters_in_one_version(store):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)
    versions = len(embstore.log(store))
    report = embstore.normalize_store(store, refresh=True)
    assert report.rows_used == 24 and report.exclude_subjects == [EXCLUDED]
    assert len(embstore.log(store)) == versions + 1
    assert embstore.info(store)["variables"]["normalized"]["status"] == "complete"
    ds = embstore.open(store)
    x, used = ds.embedding.values.astype(np.float64), ds.subject.values != EXCLUDED
    expected = (x - x[used].mean(axis=0)) / (x[used].std(axis=0) + 1e-10)
    np.testing.assert_allclose(ds.normalized.values, expected, rtol=1e-5, atol=1e-5)
    assert "refreshed 'normalized'" in _cli("normalize", store, "--refresh")
    with pytest.raises(EmbstoreError, match="give no others"):
        embstore.normalize_store(store, refresh=True, exclude_subjects=[MOVED])
    with pytest.raises(EmbstoreError, match="no variable 'other' to refresh"):
        embstore.normalize_store(store, name="other", refresh=True)


def test_a_subset_reports_what_the_whole_store_says(store):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)
    ds = embstore.open(store)
    assert ds.isel(sample=slice(0, 5)).emb.stale == {"normalized": [RELABELLED]}
    with pytest.raises(EmbstoreError, match="ask the whole store"):
        ds.where(ds.subject == EXCLUDED, drop=True).emb.stale  # noqa: B018 (drops the encoding)


def test_overwrite_recomputes_too(store):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED], overwrite=True)
    assert embstore.open(store).emb.stale == {}


def test_restore_to_before_the_relabel_makes_it_fresh_again(store):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    before = embstore.log(store)[0].id
    _relabel_into_excluded(store)
    assert embstore.open(store).emb.stale == {"normalized": [RELABELLED]}
    embstore.restore(store, before)
    assert embstore.open(store).emb.stale == {}
    # and restoring the relabelled version makes it stale again
    embstore.restore(store, embstore.log(store)[1].id)
    assert embstore.open(store).emb.stale == {"normalized": [RELABELLED]}


def test_a_label_the_statistics_did_not_read_leaves_it_fresh(store):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    ds = embstore.open(store)
    csv = store.parent / "ages.csv"
    csv.write_text("path,age_mo\n" + "".join(f"{p},40\n" for p in ds.path.values))
    embstore.label(store, labels_csv=csv)
    assert embstore.open(store).emb.stale == {}
    # without exclusions the statistics do not read subjects either
    embstore.normalize_store(store, name="all")
    _relabel_into_excluded(store)
    assert embstore.open(store).emb.stale == {"normalized": [RELABELLED]}


def test_an_append_is_stale_and_export_refuses_unless_asked(store, npy_tree, tmp_path):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    np.save(npy_tree / "category000" / "00990001_30_month_level_avg.npy", np.ones(16, "f4"))
    embstore.ingest([npy_tree], store=store, layout="babyview")
    assert embstore.open(store).emb.stale == {"normalized": ["covers 48 of 49 rows"]}
    with pytest.raises(StaleVariableError, match="covers 48 of 49 rows"):
        embstore.export(store, tmp_path / "o.h5", format="hdf5", variable="normalized")


def test_a_changed_categories_file_is_stale_and_refresh_reads_it_again(store):
    listed = store.parent / "categories.txt"
    listed.write_text("category000\ncategory001\n")
    embstore.normalize_store(store, categories=listed)
    assert embstore.open(store).emb.stale == {}
    listed.write_text("category000\n")
    (reason,) = embstore.open(store).emb.stale["normalized"]
    assert reason.endswith("now lists other categories (0 added, 1 removed)")
    assert embstore.normalize_store(store, refresh=True).rows_used == 16
    assert provenance(embstore.open(store).normalized)["categories"] == ["category000"]
    assert embstore.open(store).emb.stale == {}


def test_a_variable_derived_from_a_recomputed_one_is_stale(store):
    embstore.normalize_store(store)
    embstore.normalize_store(store, variable="normalized", name="twice")
    assert embstore.open(store).emb.stale == {}
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED], overwrite=True)
    assert embstore.open(store).emb.stale == {
        "twice": ["its source 'normalized' was recomputed since"]
    }


def test_without_the_version_it_was_computed_at_it_is_stale_without_a_count(store):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)
    embstore.gc(store, older_than=timedelta(0), safety_margin=timedelta(0))
    assert embstore.open(store).emb.stale == {
        "normalized": ["subject changed since it was computed"]
    }


@given(st.lists(st.text(max_size=4), max_size=6), st.lists(st.text(max_size=4), max_size=6))
def test_label_digests_are_equal_exactly_when_the_values_are(a, b):
    assert (label_digest(np.array(a, dtype=object)) == label_digest(np.array(b, dtype=object))) == (
        a == b
    )


def test_label_digests_ignore_the_array_type():
    assert label_digest(np.array([1, 2], "int32")) == label_digest(np.array([1, 2], "int64"))
    assert label_digest(np.array(["ab", "c"])) == label_digest(np.array(["ab", "c"], object))
    assert label_digest(np.array([True])) != label_digest(np.array(["True"]))


def test_any_derived_variable_written_through_the_store_knows_its_inputs(store):
    """The mechanism an aggregate uses: record_inputs + add_variables in one transaction."""
    from embstore.store import FEATURE, ROOT_ATTR, run_transaction
    from embstore.store.read import open_lazily
    from embstore.store.variables import INPUTS_KEY, NewVariable, add_variables, record_inputs

    def work(tx):
        ds = open_lazily(store, version=tx.parent)
        mean = ds.embedding.values[ds.age_mo.values == 6].mean(axis=0)
        inputs = record_inputs(ds, source="embedding", labels=["age_mo"])
        attrs = {"source": "embedding", "age_mo": 6, INPUTS_KEY: inputs}
        table = NewVariable(mean, (FEATURE,), {ROOT_ATTR: attrs})
        add_variables(tx, {"age6_mean": table}, like="embedding", derived={"age6_mean"})

    run_transaction(store, work, action="aggregate", message="mean at 6 months")
    assert embstore.info(store)["variables"]["age6_mean"]["status"] == "complete"
    ds = embstore.open(store)
    csv = store.parent / "ages.csv"
    csv.write_text("path,age_mo\n" + "".join(f"{p},40\n" for p in ds.path.values[:5]))
    embstore.label(store, labels_csv=csv)
    stale = "stale: age_mo of 5 rows changed since it was computed"
    assert embstore.info(store)["variables"]["age6_mean"]["status"] == stale


def test_every_consumer_refuses_a_stale_variable_unless_allow_stale(store, tmp_path):
    """Issue 18: neighbors, aggregate, torch datasets and indexes never use a stale variable
    silently; each names it and why, and ``allow_stale=True`` uses it as it is."""
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)
    ds = embstore.open(store)
    query = str(ds.path.values[0])
    why = r"'normalized' is stale \(subject of 12 rows changed since it was computed\)"
    uses = {
        "neighbors": lambda **kw: embstore.neighbors(ds, query, k=3, variable="normalized", **kw),
        "aggregate": lambda **kw: embstore.aggregate(
            store, tmp_path / f"agg{len(kw)}.store", variable="normalized", **kw
        ),
        "torch_dataset": lambda **kw: ds.emb.torch_dataset(variable="normalized", **kw),
    }
    try:
        import faiss  # noqa: F401

        uses["build_index"] = lambda **kw: embstore.build_index(
            store, variable="normalized", lists=2, **kw
        )
    except ImportError:
        pass
    for name, use in uses.items():
        with pytest.raises(StaleVariableError, match=why):
            use()
        assert use(allow_stale=True) is not None, name
    assert not (tmp_path / "agg0.store").exists()  # refused before anything was written
    # the raw embedding is never derived: used without a word
    assert len(embstore.neighbors(ds, query, k=3)) == 3


def test_the_cli_refuses_a_stale_variable_unless_allow_stale(store, tmp_path):
    embstore.normalize_store(store, exclude_subjects=[EXCLUDED])
    _relabel_into_excluded(store)
    query = str(embstore.open(store).path.values[0])
    for args in (
        ["neighbors", store, "--path", query, "--variable", "normalized"],
        ["aggregate", store, tmp_path / "agg.store", "--variable", "normalized"],
    ):
        assert "'normalized' is stale" in _cli(*args, code=1)
        _cli(*args, "--allow-stale", code=0)

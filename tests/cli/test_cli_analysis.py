"""The analysis commands from the CLI: neighbors, label, --categories."""

import json

import numpy as np
from typer.testing import CliRunner

import embstore
from cli import app
from embstore.store.views import provenance

runner = CliRunner()


def run(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_neighbors_json_matches_the_library(store):
    ds = embstore.open(store)
    paths = ds.path.values[[0, 20]].tolist()
    args = ["neighbors", store, "--path", paths[0], "--path", paths[1], "--k", 3]
    records = json.loads(
        run(*args, "--exclude-same-subject", "--category", "category001", "--json").output
    )
    expected = embstore.neighbors(
        ds, paths, k=3, exclude_same_subject=True, where={"category": ["category001"]}
    )
    assert [r["path"] for r in records] == expected["path"].tolist()
    np.testing.assert_allclose([r["score"] for r in records], expected["score"])
    assert {r["category"] for r in records} == {"category001"}
    assert all(r["subject"] != r["query"].split("/")[1].split("_")[0] for r in records)


def test_neighbors_table_and_errors(store):
    path = embstore.open(store).path.values[0]
    table = run("neighbors", store, "--path", path, "--k", 2, "--metric", "euclidean").output
    assert "rank" in table and "score" in table and path in table
    result = run("neighbors", store, "--path", "no/such.npy", code=1)
    assert "not in the store" in result.output


def test_label_then_normalize_with_a_categories_file(tmp_path, npy_tree):
    store = tmp_path / "s.zarr"
    run("ingest", npy_tree, "--store", store, "--quiet")
    result = run("label", store, "--layout", "babyview")
    assert "labelled 48 rows: age_mo, category, subject" in result.output
    listed = tmp_path / "categories.txt"
    listed.write_text("# kept\ncategory001\n\ncategory002\n")
    run("normalize", store, "--categories", listed, "--mask-outside")
    ds = embstore.open(store)
    outside = ds.category.values == "category000"
    assert np.isnan(ds.normalized.values[outside]).all()
    assert provenance(ds.normalized)["categories"] == ["category001", "category002"]


def test_ingest_categories_file(tmp_path, npy_tree):
    listed = tmp_path / "categories.txt"
    listed.write_text("category001\n")
    result = run(
        "ingest",
        npy_tree,
        "--store",
        tmp_path / "s.zarr",
        "--layout",
        "babyview",
        "--categories",
        listed,
    )
    assert "added 16 rows" in result.output and "32 outside the categories" in result.output


def test_label_needs_a_source(store):
    assert "give a layout" in run("label", store, code=1).output

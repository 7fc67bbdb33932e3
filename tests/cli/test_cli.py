import json

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import embstore
from cli import app

runner = CliRunner()


def run(*args: str, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_ingest_normalize_info_export_validate_end_to_end(npy_tree, tmp_path):
    store = tmp_path / "s.zarr"
    out = run(
        "ingest", npy_tree, "--store", store, "--layout", "babyview", "--model", "dinov3-vitb16"
    ).output
    assert "added 48 rows" in out
    assert (
        "added 0 rows" in run("ingest", npy_tree, "--store", store, "--layout", "babyview").output
    )
    assert (
        "statistics over 36 rows" in run("normalize", store, "--exclude-subject", "00270001").output
    )
    data = json.loads(run("info", store, "--json").output)
    assert data["rows"] == 48 and data["model"] == "dinov3-vitb16"
    assert data["labels"]["subject"]["unique"] == 4 and data["labels"]["age_mo"]["unique"] == 4
    assert data["variables"]["normalized"]["provenance"]["exclude_subjects"] == ["00270001"]
    assert "normalized" in run("info", store).output
    run("export", store, tmp_path / "out", "--format", "npy-tree", "--variable", "normalized")
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 48
    assert "valid" in run("validate", store).output
    assert json.loads(run("validate", store, "--json").output)["ok"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["normalize", "{store}", "-x", "nobody"],
            "error: excluded subject(s) not in the store: nobody",
        ),
        (["info", "{tmp}/missing.zarr"], "missing.zarr: does not exist"),
        (
            ["export", "{store}", "{tmp}/o", "--format", "pt", "--variable", "nope"],
            "no (sample, feature) variable 'nope'",
        ),
        (["ingest", "{tmp}/nothing", "--store", "{store}"], "nothing: does not exist"),
    ],
    ids=["unknown-subject", "missing-store", "missing-variable", "missing-source"],
)
def test_user_errors_are_one_line_and_exit_1(store, tmp_path, args, message):
    result = runner.invoke(app, [a.format(store=store, tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_bad_file_names_the_file_and_skip_bad_lists_it(npy_tree, tmp_path):
    bad = npy_tree / "category000" / "00990001_6_month_level_avg.npy"
    np.save(bad, np.ones((2, 8), "f4"))
    result = runner.invoke(
        app, ["ingest", str(npy_tree), "--store", str(tmp_path / "s.zarr"), "--layout", "babyview"]
    )
    assert (
        result.exit_code == 1 and f"{bad}: expected a 1-D vector, got shape (2, 8)" in result.output
    )
    out = run(
        "ingest", npy_tree, "--store", tmp_path / "s.zarr", "--layout", "babyview", "--skip-bad"
    ).output
    assert "1 bad (skipped)" in out and f"skipped {bad}" in out


def test_quiet_prints_nothing_on_success(npy_tree, tmp_path):
    result = run(
        "ingest", npy_tree, "--store", tmp_path / "s.zarr", "--layout", "babyview", "--quiet"
    )
    assert result.output == ""


def test_validate_exits_1_on_duplicate_paths(store):
    session = embstore.store.open_repository(store).writable_session("main")
    paths = zarr.open_group(session.store, mode="r+")["path"]
    paths[1] = paths[0]  # corrupt behind embstore's back
    session.commit("another tool")
    result = runner.invoke(app, ["validate", str(store)])
    assert result.exit_code == 1 and "1 duplicate path(s)" in result.output


def test_demo_runs_the_whole_job(tmp_path):
    out = run("demo", tmp_path / "d", "--subjects", "3", "--categories", "2", "--dim", "8").output
    assert "normalize: wrote 'normalized'" in out
    ds = embstore.open(tmp_path / "d" / "store")
    assert ds.sizes["sample"] == 60 and "normalized" in ds
    assert len(list((tmp_path / "d" / "normalized").rglob("*.npy"))) == 60

"""History: log, open by version and tag, restore (undo without rewriting), gc keeping tags."""

from datetime import timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
import embstore
from embstore.errors import StoreError
from embstore.store import StoreWriter, parse_age

runner = CliRunner()


def _values(ds):
    return {name: np.asarray(ds[name].values) for name in ds.variables}


def _assert_same_content(a, b):
    va, vb = _values(a), _values(b)
    assert sorted(va) == sorted(vb)
    for name in va:
        if va[name].dtype.kind == "f":
            np.testing.assert_array_equal(va[name], vb[name], err_msg=name)
        else:
            assert va[name].tolist() == vb[name].tolist(), name


def test_log_lists_versions_newest_first_with_rows_and_tags(store):
    embstore.normalize_store(store)
    embstore.tag(store, "normalized-v1")
    versions = embstore.log(store)
    assert versions[0].message == "normalize embedding -> normalized"
    assert versions[0].tags == ["normalized-v1"] and versions[0].rows == 48
    assert versions[-1].message.startswith("create store")
    assert all(a.time >= b.time for a, b in zip(versions, versions[1:], strict=False))


def test_open_by_version_prefix_and_by_tag(store, npy_tree):
    first = embstore.log(store)[0].id
    embstore.tag(store, "first")
    StoreWriter(store).append(["late"], np.ones((1, 16)))
    assert embstore.open(store).sizes["sample"] == 49
    assert embstore.open(store, version="first").sizes["sample"] == 48
    assert embstore.open(store, version=first[:8].lower()).sizes["sample"] == 48
    with pytest.raises(StoreError, match="neither a tag nor a version"):
        embstore.open(store, version="nope")
    with pytest.raises(StoreError, match="exists"):
        embstore.tag(store, "first")
    with pytest.raises(StoreError, match="cannot be a tag"):
        embstore.tag(store, "main")


def test_restore_undoes_an_append(store):
    before = embstore.open(store)
    good = embstore.log(store)[0].id
    StoreWriter(store).append(["late"], np.ones((1, 16)), {"site": ["x"]})
    report = embstore.restore(store, good)
    assert report.version and report.version != good
    restored = embstore.open(store)
    _assert_same_content(restored, before)
    assert embstore.provenance(restored)["provenance"][-1]["restored"] == good
    assert embstore.log(store)[0].message == f"restore version {good}"
    # the undone append is still in the history, and a writer can append again
    assert embstore.open(store, version=embstore.log(store)[1].id).sizes["sample"] == 49
    StoreWriter(store).append(["late"], np.ones((1, 16)))
    assert embstore.open(store).sizes["sample"] == 49


def test_restore_brings_back_an_overwritten_variable(store):
    embstore.normalize_store(store, exclude_subjects=["00270001"])
    before = embstore.open(store)
    good = embstore.log(store)[0].id
    embstore.normalize_store(store, overwrite=True)
    StoreWriter(store).set_labels({"subject": ["z"] * 48})
    assert not np.array_equal(embstore.open(store).normalized.values, before.normalized.values)
    embstore.restore(store, good)
    _assert_same_content(embstore.open(store), before)
    assert embstore.validate(store, deep=True).ok


def test_restore_of_the_current_version_commits_nothing(store):
    versions = len(embstore.log(store))
    report = embstore.restore(store, embstore.log(store)[0].id)
    assert report.version is None and len(embstore.log(store)) == versions


def test_gc_forgets_old_versions_but_keeps_tags_and_the_newest(store):
    tagged = embstore.log(store)[0].id
    embstore.tag(store, "keep")
    embstore.normalize_store(store)
    untagged = embstore.log(store)[0].id
    embstore.normalize_store(store, overwrite=True, exclude_subjects=["00270001"])
    newest = embstore.open(store)
    report = embstore.gc(store, older_than=timedelta(0), safety_margin=timedelta(0))
    assert report.versions_expired >= 1 and report.bytes_deleted > 0
    _assert_same_content(embstore.open(store), newest)
    assert embstore.open(store, version="keep").sizes["sample"] == 48
    assert embstore.open(store, version=tagged).sizes["sample"] == 48
    with pytest.raises(StoreError):
        embstore.open(store, version=untagged)
    assert embstore.validate(store, deep=True).ok


def test_gc_safety_margin_keeps_recent_objects(store):
    embstore.normalize_store(store)
    embstore.normalize_store(store, overwrite=True)
    report = embstore.gc(store, older_than=timedelta(0), safety_margin=timedelta(hours=1))
    assert report.versions_expired >= 1 and report.bytes_deleted == 0


def test_parse_age():
    assert parse_age("7d") == timedelta(days=7) and parse_age("0s") == timedelta(0)
    with pytest.raises(ValueError, match="not an age"):
        parse_age("soon")


def test_history_from_the_cli(store):
    store = str(store)
    result = runner.invoke(cli.app, ["normalize", store, "--quiet"])
    assert result.exit_code == 0, result.output
    log = runner.invoke(cli.app, ["log", store])
    assert log.exit_code == 0 and "normalize embedding -> normalized (48 rows)" in log.output
    version = log.output.split()[0]
    assert runner.invoke(cli.app, ["tag", store, "v1"]).exit_code == 0
    assert "[v1]" in runner.invoke(cli.app, ["log", store]).output
    previous = embstore.log(store)[1].id
    result = runner.invoke(cli.app, ["restore", store, previous])
    assert result.exit_code == 0 and f"equals {previous}" in result.output
    assert "normalized" not in embstore.open(store)
    info = runner.invoke(cli.app, ["info", store, "--version", "v1", "--json"])
    assert info.exit_code == 0 and '"normalized"' in info.output and version in info.output
    result = runner.invoke(cli.app, ["gc", store, "--older-than", "0s", "--safety-margin", "0s"])
    assert result.exit_code == 0 and "forgot" in result.output
    bad = runner.invoke(cli.app, ["gc", store, "--older-than", "soon"])
    assert bad.exit_code != 0 and "not an age" in bad.output
    missing = runner.invoke(cli.app, ["restore", store, "nope"])
    assert missing.exit_code == 1 and "neither a tag nor a version" in missing.output

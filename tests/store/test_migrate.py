"""`embstore upgrade`: schema-1 stores (plain Zarr with their own commit rule) to schema 2."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import cli
import embstore
from embstore.errors import StoreError
from embstore.testing import make_schema1_store

ROWS, DIM = 20, 8


def _digests(path: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


def test_upgrade_copies_every_variable_and_the_provenance(tmp_path):
    old = make_schema1_store(tmp_path / "old.zarr")
    before = _digests(tmp_path / "old.zarr")
    report = embstore.upgrade(tmp_path / "old.zarr", tmp_path / "new")
    assert report.rows == ROWS and "normalized" in report.arrays
    new = embstore.open(tmp_path / "new")
    for name in old.variables:
        a, b = np.asarray(old[name].values), np.asarray(new[name].values)
        assert a.tolist() == b.tolist(), name
    assert embstore.provenance(new.normalized)["rows_used"] == ROWS
    meta = embstore.provenance(new)
    assert meta["schema_version"] == 2 and meta["model"] == "demo"
    assert [e["action"] for e in meta["provenance"]] == ["ingest", "upgrade"]
    assert meta["upgraded_from"]["rows"] == ROWS
    assert embstore.validate(tmp_path / "new", deep=True).ok
    assert [v.message for v in embstore.log(tmp_path / "new")][0].startswith("upgrade from")
    assert _digests(tmp_path / "old.zarr") == before  # the old store is only read


def test_upgrade_refuses_an_existing_target_and_non_v1_sources(tmp_path, store):
    make_schema1_store(tmp_path / "old.zarr")
    with pytest.raises(StoreError, match="exists; upgrade writes a new store"):
        embstore.upgrade(tmp_path / "old.zarr", store)
    with pytest.raises(StoreError, match="not a schema-1 embstore store"):
        embstore.upgrade(store, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_v1_store_is_named_as_such_and_upgrades_from_the_cli(tmp_path):
    make_schema1_store(tmp_path / "old.zarr")
    with pytest.raises(StoreError, match="schema-1 embstore store; convert it"):
        embstore.open(tmp_path / "old.zarr")
    result = CliRunner().invoke(
        cli.app, ["upgrade", str(tmp_path / "old.zarr"), str(tmp_path / "n")]
    )
    assert result.exit_code == 0, result.output
    assert embstore.open(tmp_path / "n").sizes["sample"] == ROWS


def test_upgrade_refuses_rows_whose_keys_break_the_policy(tmp_path):
    old = tmp_path / "old.zarr"
    make_schema1_store(old)
    paths = zarr.open_array(str(old / "path"), mode="r+")
    paths[3] = "../outside.npy"  # what a schema-1 store could hold
    with pytest.raises(embstore.BadInputError, match=r"path.*'\.\./outside\.npy'"):
        embstore.upgrade(old, tmp_path / "new")
    assert not (tmp_path / "new").exists()  # refused before anything was made
    paths[3] = "c/03_6_month_level_avg.npy"
    assert embstore.upgrade(old, tmp_path / "new").rows == ROWS

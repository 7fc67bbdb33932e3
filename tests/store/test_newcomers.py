"""The ways a newcomer lost data with the schema-1 store, each one now safe."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import embstore
import embstore.testing
from embstore.errors import EmbstoreError


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _plain_subset(store: Path, out: Path) -> xr.Dataset:
    """What a newcomer does with plain xarray: a subset saved as a new Zarr store, attrs and
    all (the copied attributes say 48 rows, the arrays hold 10)."""
    subset = embstore.open(store).isel(sample=slice(0, 10))
    subset.to_zarr(out, zarr_format=3, consolidated=False)
    return subset


def test_a_plain_xarray_subset_is_never_written_over_and_ingests_as_a_source(store, tmp_path):
    sub = tmp_path / "sub.zarr"
    subset = _plain_subset(store, sub)
    before = _digests(sub)
    with pytest.raises(EmbstoreError, match="not empty and is not an embstore store"):
        embstore.ingest([store.parent / "emb"], store=sub, layout="babyview")
    with pytest.raises(EmbstoreError):
        embstore.validate(sub)
    assert _digests(sub) == before  # nothing "repaired", nothing deleted
    report = embstore.ingest([sub], store=tmp_path / "from-subset")
    assert report.rows_added == 10
    ds = embstore.open(tmp_path / "from-subset")
    assert ds.path.values.tolist() == subset.path.values.tolist()
    assert ds.subject.values.tolist() == subset.subject.values.tolist()
    np.testing.assert_array_equal(ds.embedding.values, subset.embedding.values)


@pytest.mark.parametrize(
    "damage",
    [
        lambda root: root.unlink(),
        lambda root: root.write_bytes(root.read_bytes()[:40]),
        lambda root: root.write_text(json.dumps({"zarr_format": 3, "node_type": "group"})),
    ],
    ids=["deleted", "truncated", "rewritten-by-another-tool"],
)
def test_an_old_store_with_a_broken_root_is_refused_not_emptied(tmp_path, damage):
    old = tmp_path / "old.zarr"
    embstore.testing.make_schema1_store(old)
    damage(old / "zarr.json")
    before = _digests(old)
    tree = tmp_path / "emb"
    embstore.testing.make_npy_tree(tree, n_subjects=2, n_categories=1, ages=range(6, 8), dim=8)
    with pytest.raises(EmbstoreError):
        embstore.ingest([tree], store=old, layout="babyview")
    with pytest.raises(EmbstoreError):
        embstore.normalize_store(old)
    with pytest.raises(EmbstoreError):
        embstore.upgrade(old, tmp_path / "new")
    assert _digests(old) == before and not (tmp_path / "new").exists()


def test_one_store_ingests_into_another(store, tmp_path):
    report = embstore.ingest([store], store=tmp_path / "copy")
    assert report.rows_added == 48
    a, b = embstore.open(store), embstore.open(tmp_path / "copy")
    assert b.path.values.tolist() == a.path.values.tolist()
    assert b.age_mo.values.tolist() == a.age_mo.values.tolist()
    np.testing.assert_array_equal(b.embedding.values, a.embedding.values)

import numpy as np
import pytest

import embstore
from embstore.errors import EmbstoreError


def test_normalized_npy_tree_replaces_the_notebook_output_file_for_file(store, npy_tree, tmp_path):
    embstore.normalize_store(store, exclude_subjects=["00270001"])
    embstore.export(store, tmp_path / "out", format="npy-tree", variable="normalized")
    source = sorted(p.relative_to(npy_tree) for p in npy_tree.rglob("*.npy"))
    assert (
        sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.npy")) == source
    )
    ds = embstore.open(store)
    for i in (0, 17, 47):
        np.testing.assert_array_equal(
            np.load(tmp_path / "out" / ds.path.values[i]), ds.normalized.values[i]
        )


def test_existing_output_needs_overwrite_and_failures_leave_nothing(store, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(EmbstoreError, match="exists"):
        embstore.export(store, tmp_path / "out", format="npy-tree")
    with pytest.raises(EmbstoreError, match="no .* variable 'nope'"):
        embstore.export(store, tmp_path / "new", format="pt", variable="nope")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

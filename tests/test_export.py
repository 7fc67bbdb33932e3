from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embstore
from embstore.errors import EmbstoreError
from embstore.formats import FORMATS
from embstore.store import StoreWriter


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


def test_pt_export_is_a_path_to_tensor_dict(pt_file, tmp_path):
    file, data = pt_file
    embstore.ingest([file], store=tmp_path / "s.zarr", layout="mimic-echo")
    embstore.export(tmp_path / "s.zarr", tmp_path / "out.pt", format="pt")
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert sorted(loaded) == sorted(data)
    for key, vector in data.items():
        np.testing.assert_array_equal(loaded[key].numpy(), vector)


def test_hdf5_opens_with_plain_xarray(store, tmp_path):
    embstore.normalize_store(store)
    embstore.export(store, tmp_path / "x.h5", format="hdf5", variable="normalized")
    ds = xr.open_dataset(tmp_path / "x.h5")
    np.testing.assert_array_equal(ds.normalized.values, embstore.open(store).normalized.values)
    assert ds.subject.values[0] == "00270001"


def test_existing_output_needs_overwrite_and_failures_leave_nothing(store, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(EmbstoreError, match="exists"):
        embstore.export(store, tmp_path / "out", format="npy-tree")
    with pytest.raises(EmbstoreError, match="no .* variable 'nope'"):
        embstore.export(store, tmp_path / "new", format="pt", variable="nope")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


paths = st.lists(
    st.from_regex(r"[a-z0-9]{1,6}(/[a-z0-9_]{1,6}){0,2}\.npy", fullmatch=True),
    min_size=1,
    max_size=12,
    unique=True,
)


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), keys=paths, dim=st.integers(1, 6))
def test_round_trip_numpy_store_export_equal(tmp_path_factory, data, keys, dim):
    vectors = data.draw(
        hnp.arrays(np.float32, (len(keys), dim), elements=st.floats(-1e6, 1e6, width=32))
    )
    keys = [
        k for k in keys if not any(other.startswith(k[:-4] + "/") for other in keys)
    ]  # no file/dir clash
    vectors = vectors[: len(keys)]
    root: Path = tmp_path_factory.mktemp("rt")
    StoreWriter(root / "s.zarr", feature_size=dim, row_chunk=4).append(keys, vectors)
    for fmt in FORMATS:  # every format of the registry round-trips
        embstore.export(root / "s.zarr", root / fmt, format=fmt)
        back = root / f"back-{fmt}.zarr"
        embstore.ingest([root / fmt], store=back)
        ds = embstore.open(back)
        order = {p: i for i, p in enumerate(keys)}
        rows = [order[p] for p in ds.path.values]
        assert sorted(ds.path.values.tolist()) == sorted(keys)
        np.testing.assert_array_equal(ds.embedding.values, vectors[rows])

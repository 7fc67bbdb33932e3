"""The ``hdf5`` format (a netCDF4/HDF5 dataset): the shared round trip, plain xarray opens it,
and the keys HDF5 cannot hold."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import embstore
from embstore.errors import EmbstoreError
from embstore.testing import make_keyed_store
from embstore.testing.roundtrip import FormatRoundTripTests


class TestHdf5RoundTrip(FormatRoundTripTests):
    format = "hdf5"
    keeps_any_key = False  # HDF5 strings cannot hold NUL

    def exported_keys(self, out: Path) -> list[str]:
        with xr.open_dataset(out) as ds:
            return ds.path.values.tolist()


def test_hdf5_opens_with_plain_xarray(store, tmp_path):
    embstore.normalize_store(store)
    embstore.export(store, tmp_path / "x.h5", format="hdf5", variable="normalized")
    ds = xr.open_dataset(tmp_path / "x.h5")
    np.testing.assert_array_equal(ds.normalized.values, embstore.open(store).normalized.values)
    assert ds.subject.values[0] == "00270001"


@pytest.mark.parametrize(
    ("fmt", "keys", "match"),
    [
        ("hdf5", ["a\x00b"], "NUL"),
        ("hdf5", ["\x00"], "NUL"),
    ],
    ids=["hdf5-nul", "hdf5-only-nul"],
)
def test_keys_a_format_cannot_hold_are_refused(tmp_path, fmt, keys, match):
    store = make_keyed_store(tmp_path, ["ok", *keys])
    with pytest.raises(EmbstoreError, match=match):
        embstore.export(store, tmp_path / "out", format=fmt)
    assert not (tmp_path / "out").exists()

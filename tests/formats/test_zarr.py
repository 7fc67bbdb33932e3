"""The ``zarr`` format (a plain Zarr v3 dataset): the shared round trip, and plain xarray opens
it with every label and the provenance."""

import json
from pathlib import Path

import numpy as np
import xarray as xr

import embstore
from embstore.testing.roundtrip import FormatRoundTripTests


class TestZarrRoundTrip(FormatRoundTripTests):
    format = "zarr"
    keeps_any_key = True

    def exported_keys(self, out: Path) -> list[str]:
        return xr.open_zarr(out, consolidated=False).path.values.tolist()


def test_zarr_export_opens_with_plain_xarray(store, tmp_path):
    embstore.normalize_store(store, exclude_subjects=["00270001"])
    embstore.export(store, tmp_path / "n.zarr", format="zarr", variable="normalized")
    ds = xr.open_zarr(tmp_path / "n.zarr", consolidated=False)
    orig = embstore.open(store)
    np.testing.assert_array_equal(ds.normalized.values, orig.normalized.values)
    assert {"path", "subject", "age_mo", "category"} <= set(ds.coords)
    assert ds.subject.values.tolist() == orig.subject.values.tolist()
    assert (
        json.loads(ds.attrs["embstore"])["schema_version"]
        == embstore.provenance(orig)["schema_version"]
    )
    prov = json.loads(ds.normalized.attrs["embstore"])
    assert prov["exclude_subjects"] == ["00270001"]

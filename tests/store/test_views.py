"""The xarray idioms of issue 11 on ``embstore.open`` and on a subset round-tripped through
netCDF (``to_netcdf`` then ``xarray.open_dataset``)."""

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import embstore
from embstore.errors import EmbstoreError
from embstore.store.views import prepare_dataset, provenance, select_rows

SUBJECT = "00280001"


@pytest.fixture
def normalized_store(store: Path) -> Path:
    embstore.normalize_store(store, exclude_subjects=["00270001"])
    return store


def _round_trip(ds: xr.Dataset, tmp_path: Path) -> xr.Dataset:
    """Every row but the first, written to netCDF and read back with plain xarray."""
    file = tmp_path / "subset.nc"
    ds.isel(sample=slice(1, None)).to_netcdf(file, engine="h5netcdf")
    return xr.open_dataset(file, engine="h5netcdf")


@pytest.fixture(params=["open", "netcdf"], ids=["embstore.open", "netcdf-round-trip"])
def dataset(request, normalized_store, tmp_path) -> xr.Dataset:
    ds = embstore.open(normalized_store)
    return ds if request.param == "open" else _round_trip(ds, tmp_path)


def test_labels_are_numpy_and_embeddings_stay_lazy(normalized_store):
    ds = embstore.open(normalized_store)
    for name in ("path", "subject", "age_mo", "category", "nonfinite"):
        assert ds[name].chunks is None, name  # not dask: numpy, read on first use
        assert type(ds[name].data) is np.ndarray, name
    for name in ("path", "subject", "category"):
        values = ds[name].values
        assert values.dtype == object and all(type(v) is str for v in values), name
        assert values.astype(str).dtype.kind == "U"  # what fails on zarr's StringDType
    assert ds.age_mo.dtype == np.int32 and ds.nonfinite.dtype == bool
    assert isinstance(ds.embedding.data, da.Array) and isinstance(ds.normalized.data, da.Array)


def test_where_drop_selects_one_subject(dataset):
    x = embstore.prepare_dataset(dataset)
    rows = dataset.where(dataset.subject == SUBJECT, drop=True)
    expected = x.subject.values == SUBJECT
    assert rows.sizes["sample"] == expected.sum() > 0
    assert set(rows.subject.values.tolist()) == {SUBJECT}
    np.testing.assert_array_equal(rows.embedding.values, x.embedding.values[expected])


def test_boolean_isel_and_query(dataset):
    older = dataset.isel(sample=dataset.age_mo > 7)
    assert older.sizes["sample"] == int((dataset.age_mo.values > 7).sum()) > 0
    assert (older.age_mo.values > 7).all()
    queried = dataset.query(sample="age_mo > 7")
    np.testing.assert_array_equal(queried.path.values, older.path.values)
    np.testing.assert_array_equal(queried.embedding.values, older.embedding.values)


@pytest.mark.parametrize("by", ["coord", "name"], ids=["groupby(ds.age_mo)", "groupby('subject')"])
def test_groupby_a_label(dataset, by):
    label = "age_mo" if by == "coord" else "subject"
    grouped = dataset.embedding.groupby(dataset[label] if by == "coord" else label).mean()
    values, x = dataset[label].values, dataset.embedding.values
    first = values[0]
    np.testing.assert_allclose(
        grouped.sel({label: first}).values,
        x[values == first].mean(axis=0),
        rtol=1e-6,
        atol=1e-6,  # float32 sums in another order (flox's): near-zero means differ by ~1 ulp
    )
    assert grouped.sizes[label] == len(set(values.tolist()))


def test_sel_by_path_one_and_many(normalized_store, tmp_path):
    for ds in (
        embstore.open(normalized_store),
        prepare_dataset(_round_trip(embstore.open(normalized_store), tmp_path)),
    ):
        paths = ds.path.values
        one = ds.sel(path=paths[3])
        assert "sample" not in one.embedding.dims
        np.testing.assert_array_equal(one.embedding.values, ds.embedding.values[3])
        many = ds.sel(path=[paths[5], paths[2]])
        assert many.path.values.tolist() == [paths[5], paths[2]]
        np.testing.assert_array_equal(many.embedding.values, ds.embedding.values[[5, 2]])
        assert list(ds.embedding.dims) == ["sample", "feature"]  # sample stays the dim name
        with pytest.raises(KeyError):
            ds.sel(path="no/such/path.npy")


def test_attributes_survive_netcdf_and_zarr_of_a_subset(normalized_store, tmp_path):
    ds = embstore.open(normalized_store)
    subset = ds.where(ds.subject == SUBJECT, drop=True)
    subset.to_netcdf(tmp_path / "a.nc", engine="h5netcdf")
    subset.to_zarr(tmp_path / "a.zarr", consolidated=False)
    back_nc = xr.open_dataset(tmp_path / "a.nc", engine="h5netcdf")
    back_zarr = xr.open_zarr(tmp_path / "a.zarr", consolidated=False)
    for back in (back_nc, back_zarr):
        assert provenance(back) == provenance(ds) and provenance(back)["rows"] == 48
        assert provenance(back.normalized)["exclude_subjects"] == ["00270001"]
        assert back.emb.provenance == ds.emb.provenance
        assert back.normalized.emb.provenance == provenance(ds.normalized)
        np.testing.assert_array_equal(back.embedding.values, subset.embedding.values)
        assert back.path.values.tolist() == subset.path.values.tolist()


def test_provenance_is_a_json_string_attr_and_decodes(normalized_store):
    ds = embstore.open(normalized_store)
    assert isinstance(ds.attrs["embstore"], str) and isinstance(
        ds.normalized.attrs["embstore"], str
    )
    meta = provenance(ds)
    assert meta["feature_size"] == 16 and meta["provenance"][0]["action"] == "create"
    assert provenance({"embstore": {"a": 1}}) == {"a": 1} and provenance(xr.Dataset()) == {}
    with pytest.raises(EmbstoreError, match="not valid JSON"):
        provenance({"embstore": "{oops"})


def test_prepare_dataset_is_idempotent(normalized_store):
    ds = embstore.open(normalized_store)
    again = prepare_dataset(ds)
    xr.testing.assert_identical(again, ds)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"subject": SUBJECT}, lambda s, a, c: s == SUBJECT),
        ({"age_mo": slice(7, 8)}, lambda s, a, c: (a >= 7) & (a <= 8)),
        ({"age_mo": slice(8, None)}, lambda s, a, c: a >= 8),
        ({"category": ["category000", "category002"]}, lambda s, a, c: c != "category001"),
        (
            {"subject": SUBJECT, "age_mo": slice(6, 7), "category": ["category001"]},
            lambda s, a, c: (s == SUBJECT) & (a <= 7) & (c == "category001"),
        ),
    ],
    ids=["scalar", "range", "open-range", "list", "combined"],
)
def test_accessor_rows(dataset, criteria, expected):
    s, a, c = (dataset[n].values for n in ("subject", "age_mo", "category"))
    mask = expected(s, a, c)
    rows = dataset.emb.rows(**criteria)
    assert rows.sizes["sample"] == mask.sum() > 0
    np.testing.assert_array_equal(rows.path.values, dataset.path.values[mask])
    xr.testing.assert_identical(select_rows(dataset, **criteria), rows)


def test_accessor_rows_unknown_label_is_named(dataset):
    with pytest.raises(EmbstoreError, match="no label 'colour'"):
        dataset.emb.rows(colour="red")


def test_accessor_normalize_is_lazy_and_matches_the_function(store):
    ds = embstore.open(store)
    out = ds.emb.normalize(exclude_subjects=["00270001"])
    assert isinstance(out.normalized.data, da.Array)
    expected = embstore.normalize(ds, exclude_subjects=["00270001"])
    np.testing.assert_array_equal(out.normalized.values, expected.normalized.values)
    assert out.normalized.emb.provenance["exclude_subjects"] == ["00270001"]


def test_prepare_dataset_works_in_memory_and_leaves_its_input_alone():
    raw = xr.Dataset(
        {"embedding": (("sample", "feature"), np.ones((2, 3), np.float32), {"embstore": {"b": 2}})},
        coords={"path": ("sample", np.array(["a", "b"], dtype="T")), "age_mo": ("sample", [1, 2])},
        attrs={"embstore": {"a": [1, {"x": 2}]}},
    )
    ds = prepare_dataset(raw)
    assert raw.attrs["embstore"] == {"a": [1, {"x": 2}]} and raw.embedding.attrs["embstore"] == {
        "b": 2
    }
    assert provenance(ds) == {"a": [1, {"x": 2}]} and provenance(ds.embedding) == {"b": 2}
    assert ds.path.dtype == object and ds.sel(path="b").age_mo.item() == 2

"""The store core on Icechunk: appends, labels, names, schema, and what readers see."""

import importlib
from pathlib import Path

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

import embstore
from embstore.errors import DuplicatePathError, SchemaError, StoreError
from embstore.store import StoreWriter, choose_row_chunk, open_repository
from embstore.store.layout import COORD_CHUNK
from embstore.store.schema import load_schema


def _rows(n, dim=4, start=0):
    return [f"r{i:05d}" for i in range(start, start + n)], np.arange(
        start * dim, (start + n) * dim, dtype="f4"
    ).reshape(n, dim)


def _plain_reader(store: Path) -> xr.Dataset:
    """What the README promises a reader with only xarray and icechunk."""
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    return xr.open_zarr(repo.readonly_session("main").store, consolidated=False)


def test_xarray_and_icechunk_alone_open_the_store_with_labels_as_coordinates(store):
    ds = _plain_reader(store)
    assert ds.embedding.dims == ("sample", "feature")
    assert ds.embedding.dtype == np.float32
    assert {"path", "subject", "age_mo", "category", "nonfinite"} <= set(ds.coords)
    assert ds.sizes["sample"] == 48
    assert ds.attrs["embstore"]["schema_version"] == 2
    np.testing.assert_array_equal(ds.embedding.values, embstore.open(store).embedding.values)


def test_open_returns_python_strings_that_astype_str_accepts(store):
    ds = embstore.open(store)
    assert ds.path.dtype == object
    assert isinstance(ds.subject.values[0], str)
    assert ds.subject.astype(str).values.dtype.kind == "U"


@pytest.mark.parametrize(
    ("dim", "rows"),
    [(768, 4096), (1024, 4096), (1408, 2048), (4, COORD_CHUNK)],
    ids=["768", "1024", "1408", "tiny"],
)
def test_row_chunk_is_a_power_of_two_of_8_to_16_mib(dim, rows):
    chosen = choose_row_chunk(dim)
    assert chosen == rows
    assert COORD_CHUNK % chosen == 0
    if dim >= 768:
        assert 8 * 2**20 <= chosen * dim * 4 <= 16 * 2**20


def test_every_append_is_one_version_with_a_message_and_metadata(tmp_path):
    path = tmp_path / "s"
    writer = StoreWriter(path, feature_size=4, row_chunk=4)
    writer.start_run("ingest", sources=["emb/"])
    writer.append(*_rows(6))
    writer.append(*_rows(3, start=6))
    writer.finish_run("complete")
    versions = embstore.log(path)
    assert [v.message for v in versions] == [
        "ingest complete: 9 rows added",
        "ingest: +3 rows",
        "ingest: +6 rows",
        "create store (4-d vectors)",
    ]
    assert [v.rows for v in versions] == [9, 9, 6, None]
    appended = versions[1].metadata
    assert appended["rows_added"] == 3 and appended["sources"] == ["emb/"]
    assert appended["action"] == "append" and appended["embstore_version"] == embstore.__version__
    assert embstore.open(path, version=versions[2].id).sizes["sample"] == 6


def test_append_skips_duplicates_within_and_across_batches(tmp_path):
    writer = StoreWriter(tmp_path / "s", feature_size=4, row_chunk=4)
    paths, vectors = _rows(6)
    assert writer.append(paths + [paths[0]], np.vstack([vectors, vectors[:1]])).added == 6
    result = writer.append(paths[3:] + ["new"], np.vstack([vectors[3:], vectors[:1]]))
    assert (result.added, sorted(result.duplicates)) == (1, sorted(paths[3:]))
    ds = embstore.open(tmp_path / "s")
    assert ds.path.values.tolist() == paths + ["new"]
    np.testing.assert_array_equal(ds.embedding.values[:6], vectors)


def test_on_duplicate_error_commits_nothing_of_the_batch(tmp_path):
    writer = StoreWriter(tmp_path / "s", feature_size=4, on_duplicate="error")
    paths, vectors = _rows(3)
    writer.append(paths, vectors)
    versions = len(embstore.log(tmp_path / "s"))
    with pytest.raises(DuplicatePathError, match="r00001"):
        writer.append(["fresh", "r00001"], vectors[:2])
    assert embstore.open(tmp_path / "s").sizes["sample"] == 3
    assert len(embstore.log(tmp_path / "s")) == versions


def test_a_new_label_column_is_missing_for_older_rows(tmp_path):
    writer = StoreWriter(tmp_path / "s", feature_size=4)
    writer.append(*_rows(2), {"subject": ["a", "b"], "age_mo": [3, 4]})
    writer.append(*_rows(2, start=2), {"study": ["s1", "s2"]})
    ds = embstore.open(tmp_path / "s")
    assert ds.study.values.tolist() == ["", "", "s1", "s2"]
    assert ds.subject.values.tolist() == ["a", "b", "", ""]
    assert ds.age_mo.values.tolist() == [3, 4, -1, -1]
    assert "study" in _plain_reader(tmp_path / "s").coords


def test_rows_appended_after_a_normalize_are_nan_in_the_variable(store, npy_tree):
    embstore.normalize_store(store)
    StoreWriter(store).append(["late"], np.ones((1, 16)))
    ds = embstore.open(store)
    assert np.isnan(ds.normalized.values[-1]).all() and not np.isnan(ds.normalized.values[0]).any()


def test_tokens_are_a_3d_variable_with_one_sample_per_chunk(tmp_path):
    writer = StoreWriter(tmp_path / "s", feature_size=4)
    tokens = np.arange(2 * 3 * 4, dtype="f2").reshape(2, 3, 4)
    writer.append(*_rows(2), extra={"tokens": tokens})
    writer.append(*_rows(1, start=2))  # no tokens: NaN for this row
    ds = embstore.open(tmp_path / "s")
    assert ds.tokens.dims == ("sample", "token", "feature") and ds.tokens.dtype == np.float16
    assert ds.tokens.data.chunksize == (1, 3, 4)
    np.testing.assert_array_equal(ds.tokens.values[:2], tokens)
    assert np.isnan(ds.tokens.values[2]).all()
    with pytest.raises(embstore.BadInputError, match="tokens rows of shape"):
        writer.append(*_rows(1, start=3), extra={"tokens": np.zeros((1, 5, 4), "f2")})
    # the verbs that take a (sample, feature) variable say so about a 3-D one, in one line
    versions = len(embstore.log(tmp_path / "s"))
    for call in (
        lambda: embstore.normalize_store(tmp_path / "s", variable="tokens"),
        lambda: embstore.export(tmp_path / "s", tmp_path / "out", format="pt", variable="tokens"),
        lambda: embstore.inspect.inspect_store(tmp_path / "s", variable="tokens"),
    ):
        with pytest.raises(embstore.EmbstoreError, match="tokens") as caught:
            call()
        assert "\n" not in str(caught.value)
    assert len(embstore.log(tmp_path / "s")) == versions and not (tmp_path / "out").exists()


def test_a_label_cannot_take_the_name_of_a_variable(store):
    embstore.normalize_store(store)
    writer = StoreWriter(store)
    with pytest.raises(embstore.BadInputError, match="'normalized' is a variable"):
        writer.append(["new"], np.ones((1, 16)), {"normalized": ["x"]})
    assert embstore.validate(store).ok and embstore.open(store).sizes["sample"] == 48


def test_relabel_replaces_whole_columns_in_one_version(store):
    versions = len(embstore.log(store))
    writer = StoreWriter(store)
    writer.set_labels({"site": ["x"] * 48, "subject": ["s"] * 48})
    ds = embstore.open(store)
    assert set(ds.site.values) == {"x"} and set(ds.subject.values) == {"s"}
    assert len(embstore.log(store)) == versions + 1
    assert embstore.provenance(ds)["provenance"][-1]["columns"] == ["site", "subject"]
    with pytest.raises(StoreError, match="3 values for label 'site'"):
        writer.set_labels({"site": ["y"] * 3})


def test_feature_size_mismatch_is_refused(tmp_path):
    StoreWriter(tmp_path / "s", feature_size=4)
    with pytest.raises(StoreError, match="4-d vectors, got 8-d"):
        StoreWriter(tmp_path / "s", feature_size=8)


def test_not_a_store_errors_name_the_path_and_create_nothing(tmp_path):
    missing = tmp_path / "missing"
    for call in (
        lambda: embstore.open(missing),
        lambda: StoreWriter(missing),
        lambda: embstore.normalize_store(missing),
        lambda: embstore.log(missing),
        lambda: embstore.tag(missing, "x"),
        lambda: embstore.restore(missing, "x"),
    ):
        with pytest.raises(StoreError, match="does not exist"):
            call()
    assert not missing.exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty and is not an embstore store"):
        StoreWriter(tmp_path / "full", feature_size=4)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://bucket/x", "unsupported storage URL"),
        ("http://host/x", "unsupported storage URL"),
        ("s3:/bucket/x", "needs a bucket"),
    ],
    ids=["gcs", "http", "mangled"],
)
def test_other_urls_are_one_line_errors_never_local_folders(tmp_path, monkeypatch, url, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=message):
        StoreWriter(url, feature_size=4)
    with pytest.raises(StoreError, match="URL turned into a path"):
        StoreWriter(Path("s3://bucket/x"), feature_size=4)
    assert list(tmp_path.iterdir()) == []


def test_s3_store_round_trip_and_no_local_folder(s3_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = StoreWriter(s3_store, feature_size=4, row_chunk=4)
    writer.append(*_rows(10), {"subject": ["a"] * 10})
    ds = embstore.open(s3_store)
    np.testing.assert_array_equal(ds.embedding.values, _rows(10)[1])
    assert [v.rows for v in embstore.log(s3_store)][:1] == [10]
    assert list(tmp_path.iterdir()) == []


def test_schema_ships_inside_the_installed_package():
    schema_module = importlib.import_module("embstore.store.schema")
    package_dir = Path(schema_module.__file__).parents[1]
    assert (package_dir / "schemas" / "store-v2.schema.json").is_file()
    assert load_schema()["properties"]["attributes"]["properties"]["embstore"]["properties"][
        "schema_version"
    ] == {"const": 2, "description": "Version of this schema the store follows."}


def _commit_foreign_attrs(store: Path, change) -> None:
    """Another tool rewrites the root metadata through icechunk (a committed version)."""
    repo = open_repository(store)
    session = repo.writable_session("main")
    group = zarr.open_group(session.store, mode="a")
    attrs = dict(group.attrs)
    change(attrs)
    group.attrs.put(attrs)
    session.commit("another tool")


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda a: a["embstore"].update(schema_version="one"), SchemaError, "schema_version"),
        (lambda a: a.pop("embstore"), StoreError, "not an embstore store"),
        (lambda a: a["embstore"].update(rows=3), StoreError, "has 48 rows, the store 3"),
    ],
    ids=["garbled-attrs", "attrs-removed", "wrong-rows"],
)
def test_a_version_another_tool_broke_is_never_written_and_restore_recovers(
    store, npy_tree, change, error, message
):
    good = embstore.log(store)[0].id
    _commit_foreign_attrs(store, change)
    with pytest.raises(error, match=message):
        embstore.ingest([npy_tree], store=store, layout="babyview")
    with pytest.raises(error, match=message):
        embstore.normalize_store(store)
    assert embstore.log(store)[0].message == "another tool"  # nothing was committed
    embstore.restore(store, good)
    ds = embstore.open(store)
    assert ds.sizes["sample"] == 48 and embstore.validate(store, deep=True).ok


def test_a_failed_commit_leaves_the_last_version_and_a_rerun_completes(tmp_path, monkeypatch):
    path = tmp_path / "s"
    StoreWriter(path, feature_size=4, row_chunk=4).append(*_rows(6))

    def die(self):
        raise SystemExit("killed")

    monkeypatch.setattr(embstore.store.Transaction, "commit", die)
    with pytest.raises(SystemExit):
        StoreWriter(path).append(*_rows(5, start=100), {"study": ["x"] * 5})
    monkeypatch.undo()
    assert embstore.open(path).path.values.tolist() == _rows(6)[0]
    writer = StoreWriter(path)
    writer.append(*_rows(8, start=4))  # overlaps the 6 committed rows
    ds = embstore.open(path)
    assert ds.path.values.tolist() == _rows(12)[0]
    np.testing.assert_array_equal(ds.embedding.values, _rows(12)[1])
    assert "study" not in ds  # nothing of the dead batch survived
    assert embstore.validate(path, deep=True).ok

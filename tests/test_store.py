import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import embstore
from embstore import writer as writer_mod
from embstore.errors import DuplicatePathError, SchemaError, StoreError
from embstore.schema import load_schema
from embstore.store import (
    COORD_CHUNK,
    choose_row_chunk,
    read_state,
    repair,
    uncommitted_changes,
)
from embstore.writer import StoreWriter


def _rows(n, dim=4, start=0):
    return [f"r{i:05d}" for i in range(start, start + n)], np.arange(
        start * dim, (start + n) * dim, dtype="f4"
    ).reshape(n, dim)


def test_plain_xarray_opens_the_store_with_labels_as_coordinates(store):
    ds = xr.open_zarr(store)
    assert ds.embedding.dims == ("sample", "feature")
    assert ds.embedding.dtype == np.float32
    assert {"path", "subject", "age_mo", "category", "nonfinite"} <= set(ds.coords)
    assert ds.sizes["sample"] == 48
    assert ds.attrs["embstore"]["schema_version"] == 1


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


def test_append_skips_duplicates_within_and_across_batches(tmp_path):
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=4, row_chunk=4)
    paths, vectors = _rows(6)
    assert writer.append(paths + [paths[0]], np.vstack([vectors, vectors[:1]])).added == 6
    result = writer.append(paths[3:] + ["new"], np.vstack([vectors[3:], vectors[:1]]))
    assert (result.added, sorted(result.duplicates)) == (1, sorted(paths[3:]))
    ds = embstore.open(tmp_path / "s.zarr")
    assert ds.path.values.tolist() == paths + ["new"]
    np.testing.assert_array_equal(ds.embedding.values[:6], vectors)


def test_on_duplicate_error_commits_nothing_of_the_batch(tmp_path):
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=4, on_duplicate="error")
    paths, vectors = _rows(3)
    writer.append(paths, vectors)
    with pytest.raises(DuplicatePathError, match="r00001"):
        writer.append(["fresh", "r00001"], vectors[:2])
    assert embstore.open(tmp_path / "s.zarr").sizes["sample"] == 3


def test_a_new_label_column_is_missing_for_older_rows(tmp_path):
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=4)
    writer.append(*_rows(2), {"subject": ["a", "b"], "age_mo": [3, 4]})
    writer.append(*_rows(2, start=2), {"study": ["s1", "s2"]})
    ds = embstore.open(tmp_path / "s.zarr")
    assert ds.study.values.tolist() == ["", "", "s1", "s2"]
    assert ds.subject.values.tolist() == ["a", "b", "", ""]
    assert ds.age_mo.values.tolist() == [3, 4, -1, -1]
    assert "study" in xr.open_zarr(tmp_path / "s.zarr").coords


def test_a_label_cannot_take_the_name_of_a_variable(store):
    embstore.normalize_store(store)
    writer = StoreWriter(store)
    with pytest.raises(embstore.BadInputError, match="'normalized' is a variable"):
        writer.append(["new"], np.ones((1, 16)), {"normalized": ["x"]})
    assert embstore.validate(store).ok and embstore.open(store).sizes["sample"] == 48


def test_feature_size_mismatch_is_refused(tmp_path):
    StoreWriter(tmp_path / "s.zarr", feature_size=4)
    with pytest.raises(StoreError, match="4-d vectors, got 8-d"):
        StoreWriter(tmp_path / "s.zarr", feature_size=8)


def test_not_a_store_errors_name_the_path(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        embstore.open(tmp_path / "missing.zarr")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty and is not an embstore store"):
        StoreWriter(tmp_path / "full", feature_size=4)


def test_schema_ships_inside_the_installed_package():
    import embstore.schema

    package_dir = Path(embstore.schema.__file__).parent
    assert (package_dir / "schemas" / "store-v1.schema.json").is_file()
    assert load_schema()["properties"]["attributes"]["properties"]["embstore"]["properties"][
        "schema_version"
    ] == {"const": 1, "description": "Version of this schema the store follows."}


def test_a_store_that_breaks_the_schema_is_refused_for_writing(store):
    root = store / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"]["embstore"]["schema_version"] = "one"
    root.write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match="schema_version"):
        StoreWriter(store)
    assert not embstore.validate(store).ok


def _crash_after_writing_rows(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Append a batch but 'die' right before the commit (the root zarr.json replace)."""

    def die(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(writer_mod, "commit_root", die)
    with pytest.raises(SystemExit):
        StoreWriter(path).append(*_rows(5, start=100), {"study": ["x"] * 5})
    monkeypatch.undo()


def test_readers_never_see_rows_of_an_uncommitted_batch(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    StoreWriter(path, feature_size=4, row_chunk=4).append(*_rows(6))
    _crash_after_writing_rows(path, monkeypatch)
    assert zarr.open_array(str(path / "embedding")).shape[0] == 11  # on disk, uncommitted
    for ds in (embstore.open(path), xr.open_zarr(path)):
        assert ds.sizes["sample"] == 6
        assert ds.path.values.tolist() == _rows(6)[0]
    assert uncommitted_changes(path)
    report = embstore.validate(path)
    assert report.ok and any("interrupted write" in w for w in report.warnings)


def test_the_next_writer_repairs_and_completes_exactly_once(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    StoreWriter(path, feature_size=4, row_chunk=4).append(*_rows(6))
    _crash_after_writing_rows(path, monkeypatch)
    writer = StoreWriter(path)  # repairs on open
    assert not uncommitted_changes(path)
    writer.append(*_rows(8, start=4))  # overlaps the 6 committed rows
    ds = embstore.open(path)
    assert ds.path.values.tolist() == _rows(12)[0]
    np.testing.assert_array_equal(ds.embedding.values, _rows(12)[1])
    assert ds.study.values.tolist() == [""] * 12  # nothing of the dead batch survived
    assert embstore.validate(path).ok and repair(path) == []


def _concurrent_writer(path: str, worker: int, n_workers: int) -> None:
    writer = StoreWriter(path, feature_size=4, row_chunk=4)
    paths, vectors = _rows(60)
    order = np.random.default_rng(worker).permutation(60)  # every worker writes every path
    for start in range(0, 60, 7):
        idx = order[start : start + 7]
        writer.append([paths[i] for i in idx], vectors[idx], {"writer": [str(worker)] * len(idx)})


def test_concurrent_writers_store_every_path_exactly_once(tmp_path):
    path = str(tmp_path / "s.zarr")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_concurrent_writer, args=(path, w, 4)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ds = embstore.open(path)
    order = np.argsort(ds.path.values)
    assert sorted(ds.path.values.tolist()) == _rows(60)[0]
    np.testing.assert_array_equal(ds.embedding.values[order], _rows(60)[1])
    assert read_state(path).rows == 60 and embstore.validate(path).ok
    assert len(set(ds.writer.values.tolist())) > 1  # the writers really interleaved

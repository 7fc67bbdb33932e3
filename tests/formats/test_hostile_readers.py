"""A corpus of hostile and broken inputs for every reader, built in code.

Every input either loads correctly or fails with one line naming the file; nothing executes.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import example, given
from hypothesis import strategies as st

import embstore
from embstore.errors import BadInputError, EmbstoreError
from embstore.formats import FORMATS, detect, open_source
from embstore.labels_csv import read_labels_csv


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every row of ``path`` through its format's reader; the first bad row raises."""
    rows: dict[str, np.ndarray] = {}
    source = open_source(path)
    for batch in source.batches(batch_rows=64, feature_size=None, skip=lambda p: False):
        if batch.bad:
            raise BadInputError(batch.bad[0].source, batch.bad[0].problem)
        rows.update(zip(batch.paths, batch.vectors, strict=True))
    return rows


def fails_in_one_line(path: Path, *, match: str = "") -> str:
    with pytest.raises(EmbstoreError) as info:
        read_all(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text, text
    assert match in text, text
    return text


def _flip_bytes(file: Path, flips: list[tuple[int, int]]) -> None:
    """Overwrite the byte at each offset (modulo the size) with the given value."""
    data = bytearray(file.read_bytes())
    for at, value in flips:
        data[at % len(data)] = value
    file.write_bytes(bytes(data))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


VECTOR = np.arange(1, 9, dtype="f4")


# --- .npy trees ---------------------------------------------------------------------------------

NPY_BAD = {
    "empty": (b"", "empty file"),
    "garbage": (b"\x00garbage" * 20, "bad magic"),
    "truncated-data": (_npy_bytes(VECTOR)[:-5], "truncated"),
    "truncated-header": (_npy_bytes(VECTOR)[:20], "header"),
    "int32": (_npy_bytes(VECTOR.astype("i4")), "not a floating-point type"),
    "complex": (_npy_bytes(VECTOR.astype("c8")), "not a floating-point type"),
    "object-pickle": (_npy_bytes(np.array([{"a": 1}], dtype=object)), "pickles are never"),
    "structured": (_npy_bytes(np.zeros(3, "f4,i4")), "not a floating-point type"),
    "2-d": (_npy_bytes(np.ones((2, 4), "f4")), "1-D"),
    "fortran-2-d": (_npy_bytes(np.asfortranarray(np.ones((2, 4), "f4"))), "1-D"),
    "0-d": (_npy_bytes(np.float32(3)), "1-D"),
    "zero-length": (_npy_bytes(np.ones(0, "f4")), "empty vector"),
    "huge-header-v2": (b"\x93NUMPY\x02\x00" + (2**32 - 1).to_bytes(4, "little") + b"{}", "header"),
    "huge-header-text": (
        b"\x93NUMPY\x01\x00"
        + (20000).to_bytes(2, "little")
        + b"{'descr': '<f4', 'fortran_order': False, 'shape': (8,)}"
        + b" " * 19943
        + b"\n",
        "header",
    ),
    "header-not-a-dict": (b"\x93NUMPY\x01\x00\x06\x00[1,2]\n", "header"),
    "header-code": (b"\x93NUMPY\x01\x00\x12\x00__import__('os')\n", "header"),
}


@pytest.mark.parametrize(("data", "match"), NPY_BAD.values(), ids=NPY_BAD.keys())
def test_broken_npy_fails_in_one_line_naming_the_file(tmp_path, data, match):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "x.npy").write_bytes(data)
    fails_in_one_line(root, match=match)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f2", ">f8"])
def test_npy_of_any_float_byte_order_loads(tmp_path, dtype):
    root = tmp_path / "tree"
    root.mkdir()
    np.save(root / "x.npy", VECTOR.astype(dtype))
    np.testing.assert_array_equal(read_all(root)["x.npy"], VECTOR)


def test_a_file_that_cannot_be_opened_is_an_error_not_a_gap(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    np.save(root / "good.npy", VECTOR)
    (root / "dangling.npy").symlink_to(tmp_path / "nowhere.npy")
    fails_in_one_line(root, match="dangling.npy: cannot read")


def test_a_folder_that_cannot_be_listed_is_an_error_not_a_gap(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    (root / "locked").mkdir(parents=True)
    np.save(root / "good.npy", VECTOR)
    np.save(root / "locked" / "x.npy", VECTOR)
    if os.geteuid() == 0:  # root reads any folder: make listing this one fail as EACCES would
        real = os.scandir

        def scandir(path: str | os.PathLike[str] = ".") -> os.ScandirIterator:
            if Path(path).name == "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        (root / "locked").chmod(0)
    with pytest.raises(BadInputError) as info:
        embstore.ingest([root], store=tmp_path / "s.zarr")
    assert str(info.value) == f"{root / 'locked'}: cannot list folder (Permission denied)"
    assert not (tmp_path / "s.zarr").exists()


@given(
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), max_size=4),
)
def test_any_mangled_npy_loads_correctly_or_fails_in_one_line(tmp_path_factory, cut, flips):
    data = bytearray(_npy_bytes(VECTOR)[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    root = tmp_path_factory.mktemp("npy")
    (root / "x.npy").write_bytes(bytes(data))
    try:
        rows = read_all(root)
    except EmbstoreError as exc:
        assert "\n" not in str(exc) and str(root / "x.npy") in str(exc)
    else:  # what loads is what the bytes say, as numpy reads them
        np.testing.assert_array_equal(rows["x.npy"], np.load(root / "x.npy").astype("f4"))


# --- .pt files ----------------------------------------------------------------------------------


class Bomb:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _bomb_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pt" for name in ("zip", "legacy-torch", "raw-pickle")}
    torch.save({"a.npy": torch.ones(4), "x": Bomb(marker)}, files["zip"])
    torch.save(
        {"a.npy": torch.ones(4), "x": Bomb(marker)},
        files["legacy-torch"],
        _use_new_zipfile_serialization=False,
    )
    files["raw-pickle"].write_bytes(pickle.dumps(Bomb(marker), protocol=2))
    return files


@pytest.mark.parametrize("kind", ["zip", "legacy-torch", "raw-pickle"])
def test_pickle_bombs_are_refused_never_executed(tmp_path, kind):
    marker = tmp_path / "PWNED"
    file = _bomb_files(tmp_path, marker)[kind]
    assert detect(file) is FORMATS["pt"]
    text = fails_in_one_line(file)
    assert "refused" in text or "unreadable" in text
    with pytest.raises(EmbstoreError):
        embstore.ingest([file], store=tmp_path / "s.zarr")
    assert not marker.exists()


TENSORS_OK = {
    "float32": torch.arange(1.0, 9.0),
    "float16": torch.arange(1.0, 9.0).half(),
    "bfloat16": torch.arange(1.0, 9.0).bfloat16(),
    "float64": torch.arange(1.0, 9.0).double(),
    "requires-grad": torch.arange(1.0, 9.0).requires_grad_(),
    "parameter": torch.nn.Parameter(torch.arange(1.0, 9.0)),
    "strided-view": torch.arange(1.0, 17.0)[::2] * 0 + torch.arange(1.0, 9.0),
    "column-of-matrix": torch.arange(1.0, 9.0).repeat(2, 1).t()[:, 1],
}
TENSORS_BAD = {
    "int64": (torch.arange(8), "not a floating-point type"),
    "bool": (torch.ones(8, dtype=torch.bool), "not a floating-point type"),
    "uint8": (torch.ones(8, dtype=torch.uint8), "not a floating-point type"),
    "complex64": (torch.ones(8, dtype=torch.complex64), "not a floating-point type"),
    "sparse-coo": (torch.arange(1.0, 9.0).to_sparse(), "sparse_coo tensor"),
    "2-d": (torch.ones(2, 8), "1-D"),
    "0-d": (torch.tensor(1.0), "1-D"),
    "empty": (torch.ones(0), "empty vector"),
    "not-a-tensor": ([1.0, 2.0], "not a tensor"),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", TENSORS_OK)
def test_float_tensors_of_any_kind_load_exactly(tmp_path, name, legacy):
    file = tmp_path / "in.pt"
    torch.save({"a.npy": TENSORS_OK[name]}, file, _use_new_zipfile_serialization=not legacy)
    rows = read_all(file)
    np.testing.assert_array_equal(rows["a.npy"], np.arange(1, 9, dtype="f4"))


@pytest.mark.parametrize(("value", "match"), TENSORS_BAD.values(), ids=TENSORS_BAD.keys())
def test_unusable_values_are_one_line_naming_file_and_key(tmp_path, value, match):
    file = tmp_path / "in.pt"
    torch.save({"good.npy": torch.ones(8), "bad.npy": value}, file)
    text = fails_in_one_line(file, match=match)
    assert "'bad.npy'" in text


PT_BAD = {
    "empty": (b"", "unreadable"),
    "garbage": (b"PK\x03\x04" + b"\xff" * 64, "unreadable"),
    "not-a-dict": (None, "expected a dict"),
    "int-keys": ({1: torch.ones(4)}, "key is not a string"),
    "numpy-value": ({"a": np.ones(8, "f4")}, "refused"),  # unpickling it needs numpy's globals
}


@pytest.mark.parametrize(("content", "match"), PT_BAD.values(), ids=PT_BAD.keys())
def test_broken_pt_fails_in_one_line(tmp_path, content, match):
    file = tmp_path / "in.pt"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        torch.save([torch.ones(4)] if content is None else content, file)
    fails_in_one_line(file, match=match)


def test_truncated_pt_fails_in_one_line(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({f"{i}.npy": torch.ones(4) for i in range(5)}, good)
    data = good.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        file = tmp_path / f"cut{cut}.pt"
        file.write_bytes(data[:cut])
        fails_in_one_line(file)


@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3))
def test_any_mangled_pt_loads_correctly_or_fails_in_one_line(tmp_path_factory, flips):
    folder = tmp_path_factory.mktemp("pt")
    file = folder / "in.pt"
    torch.save({"a.npy": torch.arange(1.0, 9.0)}, file)
    _flip_bytes(file, flips)
    try:
        rows = read_all(file)
    except EmbstoreError as exc:
        assert "\n" not in str(exc) and str(file) in str(exc)
    else:
        assert list(rows) in (["a.npy"], []) or len(rows) == 1
        (key,) = rows
        loaded = torch.load(file, weights_only=True)[key]
        np.testing.assert_array_equal(rows[key], loaded.float().numpy())


# --- HDF5 / netCDF ------------------------------------------------------------------------------


def test_hdf5_from_netcdf_tools_loads(tmp_path):
    """Written with h5netcdf's own API (netCDF4 dimension scales), not by embstore."""
    file = tmp_path / "tool.nc"
    with h5netcdf.File(file, "w") as f:
        f.dimensions = {"sample": 3, "feature": 4}
        emb = f.create_variable("embedding", ("sample", "feature"), "f8")
        emb[:] = np.arange(12).reshape(3, 4)
        path = f.create_variable("path", ("sample",), h5py.string_dtype())
        path[:] = ["a.npy", "b/c.npy", "é.npy"]
        subject = f.create_variable("subject", ("sample",), h5py.string_dtype())
        subject[:] = ["s1", "s2", "s3"]
    store = tmp_path / "s.zarr"
    embstore.ingest([file], store=store)
    ds = embstore.open(store)
    assert ds.path.values.tolist() == ["a.npy", "b/c.npy", "é.npy"]
    assert ds.subject.values.tolist() == ["s1", "s2", "s3"]
    np.testing.assert_array_equal(ds.embedding.values, np.arange(12).reshape(3, 4))


def _h5py_file(tmp_path: Path, **datasets: np.ndarray) -> Path:
    file = tmp_path / "raw.h5"
    with h5py.File(file, "w") as f:
        for name, data in datasets.items():
            f[name] = data
    return file


def test_plain_h5py_file_without_dimensions_is_one_line(tmp_path):
    file = _h5py_file(tmp_path, embedding=np.ones((3, 4), "f4"), path=np.array([b"a", b"b", b"c"]))
    fails_in_one_line(file)


def _netcdf(tmp_path: Path, name: str = "in.h5", **variables: tuple) -> Path:
    file = tmp_path / name
    coords = {k: v for k, v in variables.items() if k != "embedding"}
    xr.Dataset({"embedding": variables["embedding"]}, coords=coords).to_netcdf(
        file, engine="h5netcdf"
    )
    return file


EMB = (("sample", "feature"), np.ones((2, 4), "f4"))
PATHS = ("sample", np.array(["a", "b"], dtype=object))
HDF5_BAD = {
    "no-path": ({"embedding": EMB}, "'path' labels"),
    "int-paths": ({"embedding": EMB, "path": ("sample", np.array([1, 2]))}, "not strings"),
    "transposed": (
        {"embedding": (("feature", "sample"), np.ones((4, 2), "f4")), "path": PATHS},
        "(sample, feature)",
    ),
    "int-embedding": (
        {"embedding": (("sample", "feature"), np.ones((2, 4), "i4")), "path": PATHS},
        "not a floating-point type",
    ),
    "float-age": (
        {"embedding": EMB, "path": PATHS, "age_mo": ("sample", np.array([1.5, 2.0]))},
        "label 'age_mo' holds float64 values",
    ),
    "int-label": (
        {"embedding": EMB, "path": PATHS, "site": ("sample", np.array([1, 2]))},
        "'label site' holds int64 values",
    ),
}


@pytest.mark.parametrize(("variables", "match"), HDF5_BAD.values(), ids=HDF5_BAD.keys())
def test_wrong_typed_hdf5_fails_in_one_line(tmp_path, variables, match):
    fails_in_one_line(_netcdf(tmp_path, **variables), match=match)


def test_byte_string_paths_are_decoded(tmp_path):
    file = _netcdf(tmp_path, embedding=EMB, path=("sample", np.array([b"a", b"b"])))
    assert sorted(read_all(file)) == ["a", "b"]


@pytest.mark.parametrize("cut", [0, 8, 600, -200])
def test_truncated_or_garbage_hdf5_fails_in_one_line(tmp_path, cut):
    good = _netcdf(tmp_path, "good.h5", embedding=EMB, path=PATHS)
    file = tmp_path / "cut.h5"
    file.write_bytes(good.read_bytes()[:cut] if cut else b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    fails_in_one_line(file)


@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=2))
def test_any_mangled_hdf5_loads_correctly_or_fails_in_one_line(tmp_path_factory, flips):
    folder = tmp_path_factory.mktemp("h5")
    file = _netcdf(folder, embedding=EMB, path=PATHS)
    _flip_bytes(file, flips)
    try:
        rows = read_all(file)
    except EmbstoreError as exc:
        assert "\n" not in str(exc) and str(file) in str(exc)
    else:
        assert len(rows) == 2


# --- Zarr ---------------------------------------------------------------------------------------


def test_a_subset_written_by_plain_xarray_is_ingested(store, tmp_path):
    embstore.export(store, tmp_path / "full.zarr", format="zarr")
    xr.open_zarr(tmp_path / "full.zarr", consolidated=False).isel(sample=slice(0, 10)).to_zarr(
        tmp_path / "sub.zarr", zarr_format=3, consolidated=False
    )
    assert detect(tmp_path / "sub.zarr") is FORMATS["zarr"]
    embstore.ingest([tmp_path / "sub.zarr"], store=tmp_path / "back.zarr")
    back, orig = embstore.open(tmp_path / "back.zarr"), embstore.open(store)
    assert back.path.values.tolist() == orig.path.values[:10].tolist()
    assert back.subject.values.tolist() == orig.subject.values[:10].tolist()
    assert back.age_mo.values.tolist() == orig.age_mo.values[:10].tolist()
    np.testing.assert_array_equal(back.embedding.values, orig.embedding.values[:10])


@pytest.mark.parametrize(
    "meta", [b"", b"{", b"[]", b'{"zarr_format": 3, "node_type": "array"}', b"\xff\xfe"]
)
def test_garbage_zarr_metadata_fails_in_one_line(tmp_path, meta):
    folder = tmp_path / "bad.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_bytes(meta)
    fails_in_one_line(folder)


# --- CSV labels ---------------------------------------------------------------------------------

CSV = "path,site\na.npy,Zürich\nb.npy,São Paulo\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_csv_in_utf8_or_with_a_bom_is_read(tmp_path, encoding):
    file = tmp_path / "labels.csv"
    file.write_bytes(CSV.encode(encoding))
    table = read_labels_csv(file)
    assert table.lookup("b.npy") == {"site": "São Paulo"}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (CSV.encode("latin-1"), "not utf-8 text at byte"),
        (b"", "unreadable CSV"),
        (b"a,b\n1,2,3,4\n5\n", "no 'path' column"),
        (b'path,"unclosed\na,b\n', "unreadable CSV"),
        (b"path,embedding\na,b\n", "'embedding' cannot be a label name"),
    ],
    ids=["latin-1", "empty", "ragged", "bad-quote", "reserved-column"],
)
def test_broken_csv_fails_in_one_line_naming_it(tmp_path, data, match):
    file = tmp_path / "labels.csv"
    file.write_bytes(data)
    with pytest.raises(EmbstoreError) as info:
        read_labels_csv(file)
    assert "\n" not in str(info.value) and match in str(info.value)


@given(
    target=st.sampled_from(["zarr.json", "embedding/zarr.json", "path/zarr.json", "embedding/c"]),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_any_mangled_zarr_loads_correctly_or_fails_in_one_line(tmp_path_factory, target, flips):
    folder = tmp_path_factory.mktemp("zarr") / "in.zarr"
    xr.Dataset({"embedding": EMB}, coords={"path": PATHS}).to_zarr(
        folder, zarr_format=3, consolidated=False
    )
    file = folder / target
    if file.is_dir():  # the chunk file of a 2-D array sits one level down
        file = next(p for p in file.rglob("*") if p.is_file())
    _flip_bytes(file, flips)
    try:
        rows = read_all(folder)
    except EmbstoreError as exc:
        assert "\n" not in str(exc) and str(folder) in str(exc)
    else:  # what loads is what plain xarray reads from the same bytes
        plain = xr.open_zarr(folder, consolidated=False)
        expected = dict(zip(plain.path.values.tolist(), plain.embedding.values, strict=True))
        assert sorted(rows) == sorted(expected)
        for key, vector in rows.items():
            np.testing.assert_array_equal(vector, expected[key].astype("f4"))


@given(
    data=st.one_of(
        st.binary(max_size=80),
        st.text(alphabet='path,ab"\n\r\x00é', max_size=60).map(str.encode),
    )
)
@example(data=b"path,\n")  # an unnamed column
@example(data=b"path,1x\na,b\n")  # a column no label can be named
def test_any_csv_loads_or_fails_in_one_line_naming_it(tmp_path_factory, data):
    file = tmp_path_factory.mktemp("csv") / "labels.csv"
    file.write_bytes(data)
    try:
        table = read_labels_csv(file)
    except EmbstoreError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(file)), str(exc)
    else:
        assert table.key == "path"

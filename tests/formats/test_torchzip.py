"""The fast ``.pt`` reader gives what ``torch.load(weights_only=True)`` gives, or refuses."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embstore.errors import BadInputError
from embstore.formats import torchzip
from embstore.formats.torchzip import read_vector_dict

SETTINGS = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FAST_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.fixture
def fast_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the reader falls back to ``torch.load``."""

    def no_fallback(file: Path) -> None:
        raise AssertionError(f"{file} fell back to torch.load")

    monkeypatch.setattr(torchzip, "_read_with_torch", no_fallback)


def assert_same_as_torch(file: Path) -> str:
    """Either our reading equals ``torch.load``'s, or we raised a one-line error naming the file.

    Returns ``"read"`` or ``"refused"``.
    """
    try:
        ours = read_vector_dict(file)
    except BadInputError as exc:
        assert str(file) in str(exc) and "\n" not in str(exc)
        return "refused"
    with warnings.catch_warnings():  # torch warns about pickle protocols it did not write
        warnings.simplefilter("ignore", UserWarning)
        theirs = torch.load(file, map_location="cpu", weights_only=True)  # loads if ours did
    assert isinstance(theirs, dict)
    assert ours.keys == sorted(k for k in theirs if isinstance(k, str))
    assert len(ours.other_keys) == sum(not isinstance(k, str) for k in theirs)
    size = ours.feature_size()
    problems = ours.problems(size)
    good = [i for i in range(len(ours.keys)) if i not in problems]
    rows = ours.rows(good, size) if good else np.empty((0, size or 0), "f4")
    assert rows.dtype == np.float32 and rows.shape == (len(good), size or 0)
    for row, i in zip(rows, good, strict=True):
        value = theirs[ours.keys[i]]
        assert value.dtype.is_floating_point and value.shape == (size,)
        np.testing.assert_array_equal(row, value.detach().to(torch.float32).numpy())
    for i in problems:
        value = theirs[ours.keys[i]]
        assert not (
            isinstance(value, torch.Tensor)
            and value.dtype.is_floating_point
            and value.shape == (size,)
        )
    return "read"


def test_bench_like_dict_is_read_without_torch(tmp_path: Path, fast_only: None) -> None:
    x = torch.randn(50, 24)
    file = tmp_path / "v.pt"
    torch.save({f"p10/s{i // 4:03d}/{i:04d}.mp4": x[i].clone() for i in range(50)}, file)
    assert assert_same_as_torch(file) == "read"
    ours = read_vector_dict(file)
    np.testing.assert_array_equal(ours.rows(np.arange(50), 24), x.numpy())


@pytest.mark.parametrize("dtype", FAST_DTYPES, ids=str)
def test_float_dtypes_are_read_natively(tmp_path: Path, fast_only: None, dtype: Any) -> None:
    file = tmp_path / "d.pt"
    values = torch.tensor([[1.5, -2.25, 3e-3, 65504.0], [0.0, -0.0, 1e-7, -7.0]], dtype=dtype)
    torch.save({"a": values[0].clone(), "b": values[1].clone()}, file)
    assert assert_same_as_torch(file) == "read"


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int8, torch.bool, torch.complex64, torch.uint8], ids=str
)
def test_other_dtypes_go_through_torch_as_bad_rows(tmp_path: Path, dtype: Any) -> None:
    file = tmp_path / "d.pt"
    torch.save({"a": torch.ones(4, dtype=dtype), "b": torch.ones(4)}, file)
    assert assert_same_as_torch(file) == "read"
    ours = read_vector_dict(file)
    assert ours.problems(4) == {0: f"dtype {dtype} is not a floating-point type"}


VIEWS = {
    "row": lambda x: x[1],
    "column": lambda x: x[:, 2],
    "slice": lambda x: x[2, 3:9],
    "every third": lambda x: x[0, ::3],
    "transposed row": lambda x: x.t()[4],
    "expanded": lambda x: x[0, :1].expand(6),
    "2-D": lambda x: x[:2],
    "0-D": lambda x: x[0, 0],
    "empty": lambda x: x[0, :0],
}


@pytest.mark.parametrize("view", VIEWS, ids=list(VIEWS))
def test_views_and_strides(tmp_path: Path, fast_only: None, view: str) -> None:
    x = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    file = tmp_path / "v.pt"
    torch.save({"v": VIEWS[view](x), "w": x[5]}, file)  # x[5] shares the storage
    assert assert_same_as_torch(file) == "read"


def test_many_tensors_share_a_storage_in_any_key_order(tmp_path: Path, fast_only: None) -> None:
    x = torch.randn(40, 8)
    keys = [f"k{(i * 17) % 40:02d}" for i in range(40)]  # key order unlike storage order
    file = tmp_path / "s.pt"
    torch.save({k: x[i] for i, k in enumerate(keys)} | {"zz": x[3, :8]}, file)
    assert assert_same_as_torch(file) == "read"
    reversed_file = tmp_path / "r.pt"
    torch.save({f"k{39 - i:02d}": x[i] for i in range(40)}, reversed_file)
    assert assert_same_as_torch(reversed_file) == "read"


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {7: torch.ones(3), ("a", 1): torch.ones(3), "x": torch.ones(3)},
        {"nested": {"a": torch.ones(3)}, "list": [torch.ones(3)], "x": torch.zeros(3)},
        OrderedDict([("b", torch.ones(2)), ("a", torch.zeros(2))]),
        {"n": None, "i": 3, "s": "text", "x": torch.ones(2)},
        {"set": {1, 2}, "bytes": bytearray(b"ab"), "c": 1j, "x": torch.ones(2)},
    ],
    ids=["empty", "non-str keys", "nested", "OrderedDict", "plain values", "builtins"],
)
def test_containers(tmp_path: Path, obj: dict) -> None:
    file = tmp_path / "c.pt"
    torch.save(obj, file)
    assert assert_same_as_torch(file) == "read"


def test_not_a_dict_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "l.pt"
    torch.save([torch.ones(3)], file)
    with pytest.raises(BadInputError, match=r"l\.pt: expected a dict \{path: tensor\}, got list"):
        read_vector_dict(file)


def test_legacy_format_goes_through_torch(tmp_path: Path) -> None:
    file = tmp_path / "legacy.pt"
    torch.save(
        {"a": torch.randn(5), "b": torch.randn(5)}, file, _use_new_zipfile_serialization=False
    )
    assert assert_same_as_torch(file) == "read"


def rezip(src: Path, dst: Path, *, replace: dict[str, bytes] | None = None, **kwargs: Any) -> None:
    """Copy a ``torch.save`` archive record by record, replacing some (by name suffix)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", **kwargs) as zout:
        for info in zin.infolist():
            suffix = info.filename.split("/", 1)[1]
            zout.writestr(info.filename, replace.get(suffix, zin.read(info)))


def test_big_endian_and_compressed_archives(tmp_path: Path) -> None:
    src = tmp_path / "src.pt"
    torch.save({"a": torch.randn(6), "b": torch.randn(6, dtype=torch.float64)}, src)
    big = tmp_path / "big.pt"
    rezip(src, big, replace={"byteorder": b"big"})
    assert assert_same_as_torch(big) == "read"
    deflated = tmp_path / "deflated.pt"
    rezip(src, deflated, compression=zipfile.ZIP_DEFLATED)
    assert assert_same_as_torch(deflated) in ("read", "refused")


class _Storage:
    def __init__(self, key: str, numel: int, kind: Any = torch.FloatStorage) -> None:
        self.key, self.numel, self.kind = key, numel, kind


class _Record:
    """Pickles as torch's tensor-rebuild call with whatever fields a test chooses."""

    def __init__(self, storage: _Storage, offset: Any, shape: Any, stride: Any) -> None:
        self.fields = (storage, offset, shape, stride, False, OrderedDict())

    def __reduce__(self) -> tuple:
        return torch._utils._rebuild_tensor_v2, self.fields


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


def write_pt(file: Path, obj: Any, storages: dict[str, bytes], *, pkl: bytes | None = None) -> None:
    """A ``torch.save``-shaped archive around a hand-made pickle."""
    if pkl is None:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=2).dump(obj)
        pkl = buffer.getvalue()
    with zipfile.ZipFile(file, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", b"3\n")


FOUR = np.arange(4, dtype="f4").tobytes()


@pytest.mark.parametrize(
    ("offset", "shape", "stride", "numel"),
    [
        (0, (4,), (1,), 4),
        (2, (2,), (1,), 4),
        (0, (10**12,), (1,), 4),
        (0, (3,), (2,), 4),
        (-1, (4,), (1,), 4),
        (0, (-4,), (1,), 4),
        (0, (4,), (-1,), 4),
        (0, (4,), (1,), 10**9),
        (0, (2, 2), (2, 1), 4),
        (0, (3,), (1,), 0),
        ("0", (4,), (1,), 4),
        (0, [4], [1], 4),
    ],
    ids=[
        "fits",
        "offset fits",
        "huge shape",
        "stride past the end",
        "negative offset",
        "negative size",
        "negative stride",
        "storage larger than its record",
        "2-D",
        "empty storage",
        "str offset",
        "list shape",
    ],
)
def test_hand_made_records(
    tmp_path: Path, offset: Any, shape: Any, stride: Any, numel: int
) -> None:
    file = tmp_path / "h.pt"
    storage = _Storage("0", numel)
    write_pt(file, {"a": _Record(storage, offset, shape, stride)}, {"0": FOUR})
    outcome = assert_same_as_torch(file)
    if (offset, shape, stride, numel) in [(0, (4,), (1,), 4), (2, (2,), (1,), 4)]:
        assert outcome == "read"
    if shape == (10**12,) or numel == 10**9:
        assert outcome == "refused"


def test_missing_storage_record(tmp_path: Path) -> None:
    file = tmp_path / "m.pt"
    write_pt(file, {"a": _Record(_Storage("7", 4), 0, (4,), (1,))}, {"0": FOUR})
    assert assert_same_as_torch(file) == "refused"


class _Call:
    """Pickles as a call of ``func(*args)``: what a hostile file asks the loader to run."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


@pytest.mark.parametrize(
    "func", [os.system, eval, exec, os.remove, pickle.loads], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("container", ["zip", "legacy pickle"])
def test_code_is_never_run(tmp_path: Path, func: Any, container: str) -> None:
    marker = tmp_path / "ran"
    arg: Any = {
        "system": f"touch {marker}",
        "eval": f"open({str(marker)!r}, 'w')",
        "exec": f"open({str(marker)!r}, 'w')",
        "remove": str(tmp_path / "keep"),
        "loads": pickle.dumps(0),
    }[func.__name__]
    (tmp_path / "keep").write_text("")
    file = tmp_path / "evil.pt"
    obj = {"a": _Call(func, arg), "b": torch.ones(2)}
    if container == "zip":
        buffer = io.BytesIO()
        pickle.Pickler(buffer, protocol=2).dump(obj)
        write_pt(file, None, {}, pkl=buffer.getvalue())
    else:
        file.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(BadInputError, match=r"evil\.pt: refused") as info:
        read_vector_dict(file)
    assert "\n" not in str(info.value)
    assert not marker.exists() and (tmp_path / "keep").exists()


def test_unusual_torch_globals_go_through_torch(tmp_path: Path) -> None:
    file = tmp_path / "p.pt"
    torch.save({"a": torch.nn.Parameter(torch.ones(3)), "b": torch.ones(3)}, file)
    assert assert_same_as_torch(file) == "read"


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"PK\x03\x04" + b"\0" * 40, b"\x80\x02}q\x00."], ids=repr
)
def test_garbage_is_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    file = tmp_path / "g.pt"
    file.write_bytes(content)
    assert assert_same_as_torch(file) in ("refused", "read")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"nope\.pt: cannot read"):
        read_vector_dict(tmp_path / "nope.pt")


# -- properties ------------------------------------------------------------------------------

VIEW_KINDS = ["clone", "row", "column", "slice", "step", "expand", "scalar", "2-D", "not tensor"]


def _view(base: torch.Tensor, kind: str, i: int, j: int) -> Any:
    dim = base.shape[1]
    return {
        "clone": lambda: base[i].clone(),
        "row": lambda: base[i],
        "column": lambda: base[:, j],
        "slice": lambda: base[i, j:],
        "step": lambda: base[i, ::2],
        "expand": lambda: base[i, j : j + 1].expand(dim),
        "scalar": lambda: base[i, j],
        "2-D": lambda: base[i:],
        "not tensor": lambda: [base[i]],
    }[kind]()


@st.composite
def tensor_dicts(draw: st.DrawFn) -> dict:
    dim = draw(st.integers(1, 9))
    base = torch.arange(dim * 7, dtype=torch.float32).reshape(7, dim) / 3
    base = base.to(draw(st.sampled_from(FAST_DTYPES)))
    out: dict = {}
    for _ in range(draw(st.integers(0, 12))):
        key = draw(st.one_of(st.text(max_size=6), st.integers(0, 5)))
        kind = draw(st.sampled_from(VIEW_KINDS))
        i, j = draw(st.integers(0, 6)), draw(st.integers(0, dim - 1))
        out[key] = _view(base, kind, i, j)
    return out


@SETTINGS
@given(obj=tensor_dicts())
def test_property_equal_to_torch_load(tmp_path: Path, obj: dict) -> None:
    file = tmp_path / "p.pt"
    torch.save(obj, file)
    assert assert_same_as_torch(file) == "read"


@pytest.fixture(scope="module")
def valid_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    file = tmp_path_factory.mktemp("pt") / "ok.pt"
    x = torch.randn(6, 4)
    torch.save({"a": x[0].clone(), "b": x[1:3], "c": x[:, 1], "d": x[4]}, file)
    return file.read_bytes()


@SETTINGS
@given(data=st.data())
def test_property_mutated_archives(
    tmp_path: Path, valid_archive: bytes, data: st.DataObject
) -> None:
    raw = bytearray(valid_archive)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))), label="cut")
    file = tmp_path / "mutated.pt"
    file.write_bytes(bytes(raw[:cut]))
    assert assert_same_as_torch(file) in ("read", "refused")


@SETTINGS
@given(data=st.data())
def test_property_mutated_pickles(
    tmp_path: Path, valid_archive: bytes, data: st.DataObject
) -> None:
    """Pickle-level damage (the archive itself intact): equal, refused, or an opcode torch lacks."""
    src = tmp_path / "src.pt"
    src.write_bytes(valid_archive)
    with zipfile.ZipFile(src) as z:
        pkl = bytearray(z.read(next(n for n in z.namelist() if n.endswith("/data.pkl"))))
    for _ in range(data.draw(st.integers(1, 2), label="edits")):
        pkl[data.draw(st.integers(0, len(pkl) - 1), label="at")] = data.draw(st.integers(0, 255))
    file = tmp_path / "mutated.pt"
    rezip(src, file, replace={"data.pkl": bytes(pkl)})
    try:
        assert assert_same_as_torch(file) in ("read", "refused")
    except pickle.UnpicklingError as exc:
        # torch's pure-Python unpickler implements a subset of the opcodes CPython's does
        assert "Unsupported operand" in str(exc)

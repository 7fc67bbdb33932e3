"""The row-key policy (embstore.keys) and where ingest enforces it."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import embstore
from embstore.errors import BadInputError
from embstore.keys import MAX_COMPONENT_BYTES, check_keys, key_problem

GOOD = ["a", "p10/s1/a.mp4", "x.npy", "é/ü/日本.npy", "a b/c-d_e", "..a/b..", "a" * 255]
BAD = {
    "empty": ("", "is empty"),
    "absolute": ("/etc/passwd", "absolute"),
    "dotdot": ("a/../../x", "'..'"),
    "dot": ("a/./b", "'.'"),
    "double-slash": ("a//b", "empty component"),
    "trailing-slash": ("a/", "empty component"),
    "nul": ("a\x00b", "control character"),
    "newline": ("a\nb", "control character"),
    "escape": ("a\x1b[31m", "control character"),
    "c1-control": ("a\x85b", "control character"),
    "surrogate": (os.fsdecode(b"caf\xe9.npy"), "not valid UTF-8"),
    "long-component": ("d/" + "é" * 128, "256 bytes"),
    "bytes": (b"a/b", "not a string"),
    "int": (3, "not a string"),
}


@pytest.mark.parametrize("key", GOOD, ids=range(len(GOOD)))
def test_good_keys_pass(key):
    assert key_problem(key) is None


@pytest.mark.parametrize(("key", "problem"), BAD.values(), ids=BAD.keys())
def test_bad_keys_are_named(key, problem):
    assert problem in key_problem(key)


def test_check_keys_raises_one_line_naming_source_and_key_or_lists_with_skip_bad():
    with pytest.raises(BadInputError) as info:
        check_keys(["ok", "a\nb"], source="in.pt")
    assert str(info.value) == "in.pt: row key 'a\\nb' holds the control character '\\n'"
    assert "\n" not in str(info.value)
    found = check_keys(["ok", "a\nb", "/x"], source="in.pt", skip_bad=True)
    assert [v.index for v in found] == [1, 2]


@given(st.text(max_size=40))
def test_policy_accepts_exactly_the_safe_relative_paths(key):
    problem = key_problem(key)
    parts = key.split("/")
    safe = (
        bool(key)
        and not key.startswith("/")
        and all(p not in ("", ".", "..") for p in parts)
        and all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in key)
        and all(len(p.encode("utf-8", "surrogatepass")) <= MAX_COMPONENT_BYTES for p in parts)
    )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        safe = False
    assert (problem is None) == safe, (key, problem)
    if problem is None:  # an accepted key stays inside any folder it is joined to
        assert posixpath.normpath(key) == key
        assert not posixpath.isabs(key) and not key.startswith("..")


@given(st.lists(st.sampled_from("ab/.\x00\n"), max_size=8).map("".join))
def test_keys_from_separators_and_dots(key):
    problem = key_problem(key)
    if problem is None:
        assert posixpath.normpath(key) == key and ".." not in key.split("/")


# --- enforced at ingest, for every format -----------------------------------------------------


def _pt(tmp_path: Path, keys: list[str]) -> Path:
    file = tmp_path / "in.pt"
    torch.save({k: torch.ones(4) for k in keys}, file)
    return file


def _npy_tree(tmp_path: Path, keys: list[str]) -> Path:
    root = tmp_path / "tree"
    for key in keys:
        file = root / os.fsencode(key).decode("utf-8", "surrogateescape")
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, np.ones(4, "f4"))
    return root


def _hdf5(tmp_path: Path, keys: list[str]) -> Path:
    import xarray as xr

    file = tmp_path / "in.h5"
    xr.Dataset(
        {"embedding": (("sample", "feature"), np.ones((len(keys), 4), "f4"))},
        coords={"path": ("sample", np.array(keys, dtype=object))},
    ).to_netcdf(file, engine="h5netcdf")
    return file


def _zarr(tmp_path: Path, keys: list[str]) -> Path:
    import xarray as xr

    folder = tmp_path / "in.zarr"
    xr.Dataset(
        {"embedding": (("sample", "feature"), np.ones((len(keys), 4), "f4"))},
        coords={"path": ("sample", np.array(keys, dtype=object))},
    ).to_zarr(folder, zarr_format=3, consolidated=False)
    return folder


BUILDERS = {"pt": _pt, "hdf5": _hdf5, "zarr": _zarr}


@pytest.mark.parametrize("fmt", BUILDERS, ids=BUILDERS)
@pytest.mark.parametrize("key", ["../escape.npy", "/abs.npy", "a/./b.npy", "a\x1bb.npy"])
def test_ingest_refuses_bad_keys_in_one_line_and_skip_bad_lists_them(tmp_path, fmt, key):
    source = BUILDERS[fmt](tmp_path, ["good.npy", key])
    with pytest.raises(BadInputError) as info:
        embstore.ingest([source], store=tmp_path / "s.zarr")
    assert str(info.value).startswith(f"{source}: row key {key!r}")
    assert not (tmp_path / "s.zarr").exists()  # nothing of the failing batch was written
    report = embstore.ingest([source], store=tmp_path / "s.zarr", skip_bad=True)
    assert report.rows_added == 1 and len(report.bad) == 1 and repr(key) in str(report.bad[0])
    assert embstore.open(tmp_path / "s.zarr").path.values.tolist() == ["good.npy"]


def test_ingest_refuses_a_non_utf8_file_name_in_a_tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    np.save(root / "good.npy", np.ones(4, "f4"))
    np.save(root / os.fsdecode(b"caf\xe9.npy"), np.ones(4, "f4"))
    with pytest.raises(BadInputError, match=r"row key 'caf\\udce9.npy' is not valid UTF-8"):
        embstore.ingest([root], store=tmp_path / "s.zarr")
    report = embstore.ingest([root], store=tmp_path / "s.zarr", skip_bad=True)
    assert report.rows_added == 1 and len(report.bad) == 1


def test_ingest_refuses_a_control_character_in_a_tree_file_name(tmp_path):
    root = _npy_tree(tmp_path, ["good.npy", "sub/a\x1bb.npy"])
    with pytest.raises(BadInputError) as info:
        embstore.ingest([root], store=tmp_path / "s.zarr")
    assert (
        str(info.value) == f"{root}: row key 'sub/a\\x1bb.npy' holds the control character '\\x1b'"
    )


def test_the_format_names_the_cli_reads_are_the_registry_in_order():
    from embstore.formats import FORMATS, NAMES

    assert list(FORMATS) == list(NAMES)

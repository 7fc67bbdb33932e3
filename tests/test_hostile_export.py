"""Exports of stores holding hostile keys: nothing is written outside OUT, N rows give N
files (entries) or a one-line refusal before anything is written, and ``overwrite`` keeps
the old output until the new one is complete."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import embstore
from embstore.errors import EmbstoreError
from embstore.formats import FORMATS
from embstore.formats.npy_tree import target_of
from embstore.store import StoreWriter


def make_store(folder: Path, keys: list[str], dim: int = 4) -> Path:
    """A store holding ``keys`` as written by another tool: no key policy applied."""
    path = folder / "s.zarr"
    vectors = np.arange(len(keys) * dim, dtype="f4").reshape(len(keys), dim)
    StoreWriter(path, feature_size=dim).append(keys, vectors)
    return path


def snapshot(folder: Path) -> list[tuple[str, int]]:
    """Every entry under ``folder`` (relative path, size): to see nothing else was written."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            found.append((str(full.relative_to(folder)), full.lstat().st_size))
    return sorted(found)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


HOSTILE = {
    "parent": (["ok", "../escape"], "outside the output folder"),
    "deep-parent": (["ok", "a/../../escape"], "outside the output folder"),
    "absolute": (["ok", "/tmp/escape"], "outside the output folder"),
    "same-file-suffix": (["x", "x.npy"], "would both be written to 'x.npy'"),
    "same-file-dot": (["a/./b", "a/b"], "would both be written to 'a/b.npy'"),
    "same-file-slashes": (["a//b.npy", "a/b.npy"], "would both be written to"),
    "file-and-folder": (["d.npy", "d.npy/e"], "would be a file and a folder"),
    "nul": (["a\x00b"], "NUL"),
    "long-component": (["d/" + "x" * 256], "over 255 bytes"),
}


@pytest.mark.parametrize(("keys", "match"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_keys_are_refused_before_anything_is_written(tmp_path, keys, match):
    store = make_store(tmp_path, keys)
    before = snapshot(tmp_path)
    with pytest.raises(EmbstoreError) as info:
        embstore.export(store, tmp_path / "out", format="npy-tree")
    assert match in str(info.value) and "\n" not in str(info.value)
    assert snapshot(tmp_path) == before  # no OUT, no temp folder, nothing outside


def test_keys_that_normalize_inside_are_written_inside(tmp_path):
    store = make_store(tmp_path, ["a/../b", "./c", "e/f/"])
    embstore.export(store, tmp_path / "out", format="npy-tree")
    assert files_under(tmp_path / "out") == ["b.npy", "c.npy", "e/f/.npy"]


@pytest.mark.parametrize(
    ("fmt", "keys", "match"),
    [
        ("hdf5", ["a\x00b"], "NUL"),
        ("hdf5", ["\x00"], "NUL"),
    ],
    ids=["hdf5-nul", "hdf5-only-nul"],
)
def test_keys_a_format_cannot_hold_are_refused(tmp_path, fmt, keys, match):
    store = make_store(tmp_path, ["ok", *keys])
    with pytest.raises(EmbstoreError, match=match):
        embstore.export(store, tmp_path / "out", format=fmt)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["pt", "zarr"])
def test_any_string_key_round_trips_through_dict_and_zarr_exports(tmp_path, fmt):
    keys = ["../x", "/abs", "a\x00b", "x", "x.npy", "d.npy", "d.npy/e", "\n"]
    store = make_store(tmp_path, keys)
    embstore.export(store, tmp_path / "out", format=fmt)
    if fmt == "pt":
        assert sorted(torch.load(tmp_path / "out", weights_only=True)) == sorted(keys)
    else:
        assert sorted(xr.open_zarr(tmp_path / "out", consolidated=False).path.values) == sorted(
            keys
        )


keys_strategy = st.lists(
    st.lists(st.sampled_from(["a", "b", ".", "..", "", "x.npy", "é"]), min_size=1, max_size=4).map(
        "/".join
    ),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=30)
@given(keys=keys_strategy)
def test_n_rows_give_n_files_inside_out_or_a_refusal(tmp_path_factory, keys):
    root = tmp_path_factory.mktemp("export")
    (root / "inner").mkdir()
    store = make_store(root / "inner", keys)
    before = snapshot(root)
    out = root / "inner" / "out"
    try:
        embstore.export(store, out, format="npy-tree")
    except EmbstoreError as exc:
        assert "\n" not in str(exc)
        assert snapshot(root) == before
        return
    written = files_under(out)
    assert len(written) == len(keys)
    assert [e for e in snapshot(root) if not e[0].startswith("inner/out")] == before
    ds = embstore.open(store)
    for key, vector in zip(ds.path.values, ds.embedding.values, strict=True):
        target = out / target_of(key)
        np.testing.assert_array_equal(np.load(target), vector)


@settings(max_examples=12)
@given(keys=st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True))
def test_every_format_writes_n_entries_or_refuses(tmp_path_factory, keys):
    root = tmp_path_factory.mktemp("any")
    store = make_store(root, keys)
    for name in FORMATS:
        out = root / f"out-{name}"
        try:
            embstore.export(store, out, format=name)
        except EmbstoreError as exc:
            assert "\n" not in str(exc) and not out.exists()
            continue
        if name == "npy-tree":
            assert len(files_under(out)) == len(keys)
        elif name == "pt":
            assert len(torch.load(out, weights_only=True)) == len(keys)
        else:
            opened = (
                xr.open_zarr(out, consolidated=False) if name == "zarr" else xr.open_dataset(out)
            )
            assert sorted(opened.path.values.tolist()) == sorted(keys)
            opened.close()


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(store, tmp_path, monkeypatch):
    out = tmp_path / "out"
    embstore.export(store, out, format="npy-tree")
    before = {f: (out / f).read_bytes() for f in files_under(out)}
    embstore.normalize_store(store)
    calls = []
    real_save = np.save

    def failing_save(file, array):  # the disk fills up after a few files
        calls.append(1)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        real_save(file, array)

    monkeypatch.setattr("embstore.formats.npy_tree.np.save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        embstore.export(store, out, format="npy-tree", variable="normalized", overwrite=True)
    assert {f: (out / f).read_bytes() for f in files_under(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["emb", "out", "s.zarr"]
    )  # no temp left
    monkeypatch.undo()
    embstore.export(store, out, format="npy-tree", variable="normalized", overwrite=True)
    assert files_under(out) == sorted(before)
    assert {f: (out / f).read_bytes() for f in files_under(out)} != before


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


@pytest.mark.parametrize("where", ["{store}", "{store}/inside", "{parent}"])
def test_an_export_never_replaces_or_enters_the_store(store, tmp_path, where):
    before = snapshot(tmp_path)
    out = Path(where.format(store=store, parent=tmp_path))
    with pytest.raises(EmbstoreError, match="store"):
        embstore.export(store, out, format="npy-tree", overwrite=True)
    assert snapshot(tmp_path) == before

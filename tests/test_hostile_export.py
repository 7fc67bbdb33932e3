"""Exports of stores holding hostile keys: nothing is written outside OUT, N rows give N
files (entries) or a one-line refusal before anything is written, and ``overwrite`` keeps
the old output until the new one is complete."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embstore
from embstore.errors import EmbstoreError
from embstore.formats.npy_tree import target_of
from embstore.testing import make_keyed_store
from embstore.testing.roundtrip import files_under, snapshot

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
    store = make_keyed_store(tmp_path, keys)
    before = snapshot(tmp_path)
    with pytest.raises(EmbstoreError) as info:
        embstore.export(store, tmp_path / "out", format="npy-tree")
    assert match in str(info.value) and "\n" not in str(info.value)
    assert snapshot(tmp_path) == before  # no OUT, no temp folder, nothing outside


def test_keys_that_normalize_inside_are_written_inside(tmp_path):
    store = make_keyed_store(tmp_path, ["a/../b", "./c", "e/f/"])
    embstore.export(store, tmp_path / "out", format="npy-tree")
    assert files_under(tmp_path / "out") == ["b.npy", "c.npy", "e/f/.npy"]


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
    store = make_keyed_store(root / "inner", keys)
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


@pytest.mark.parametrize("where", ["{store}", "{store}/inside", "{parent}"])
def test_an_export_never_replaces_or_enters_the_store(store, tmp_path, where):
    before = snapshot(tmp_path)
    out = Path(where.format(store=store, parent=tmp_path))
    with pytest.raises(EmbstoreError, match="store"):
        embstore.export(store, out, format="npy-tree", overwrite=True)
    assert snapshot(tmp_path) == before

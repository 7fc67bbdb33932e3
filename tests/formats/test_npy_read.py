"""The lean ``.npy`` read path stores what ``np.load`` reads, and names every bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embstore

GOOD = {
    "a_1.npy": np.arange(6, dtype="<f4"),
    "b_2.npy": np.arange(6, dtype="<f8") / 7,  # other dtypes take the checked path
    "c_3.npy": np.arange(6, dtype=">f4") * 2,
    "d_4.npy": np.arange(6, dtype="<f2"),
    "e_5.npy": -np.arange(6, dtype="<f4"),
}
BAD = {
    "f_6.npy": (lambda f: f.write_bytes(f.read_bytes()[:-3]), "truncated"),
    "g_7.npy": (lambda f: f.write_bytes(f.read_bytes() + b"\0"), "truncated"),
    "h_8.npy": (lambda f: np.save(f, np.ones(5, "f4")), "vector has 5 values"),
    "i_9.npy": (lambda f: np.save(f, np.ones((2, 3), "f4")), "expected a 1-D vector"),
    "j_10.npy": (lambda f: np.save(f, np.ones(6, "i4")), "not a floating-point type"),
    "k_11.npy": (lambda f: np.save(f, np.array([None] * 6)), "holds Python objects"),
    "l_12.npy": (lambda f: f.write_bytes(b""), "empty file"),
}


@pytest.mark.parametrize("batch_rows", [2, 1000], ids=["small batches", "one batch"])
def test_mixed_tree_matches_np_load(tmp_path: Path, batch_rows: int) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    for name, vector in GOOD.items():
        np.save(root / name, vector)
    for name, (make, _) in BAD.items():
        np.save(root / name, np.zeros(6, "f4"))
        make(root / name)
    report = embstore.ingest(
        [root],
        store=tmp_path / "s.zarr",
        pattern=r"(?P<subject>\w)_(?P<age_mo>\d+)\.npy",
        skip_bad=True,
        batch_rows=batch_rows,
    )
    problems = {Path(b.source).name: b.problem for b in report.bad}
    assert set(problems) == set(BAD)
    for name, (_, expected) in BAD.items():
        assert expected in problems[name]
    ds = embstore.open(tmp_path / "s.zarr")
    stored = dict(zip(ds.path.values.astype(object), ds.embedding.values, strict=True))
    assert set(stored) == set(GOOD)
    for name, vector in GOOD.items():
        np.testing.assert_array_equal(stored[name], vector.astype("f4"))


def test_walk_files_gives_sorted_relative_posix_paths(tmp_path: Path) -> None:
    from embstore._fs import walk_files

    for rel in ["top.npy", "a/b/c.npy", "a/x.npy", "b/skip.txt", "a/b/d/e.npy"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = walk_files(tmp_path, lambda p: p.endswith(".npy"))
    assert found == ["a/b/c.npy", "a/b/d/e.npy", "a/x.npy", "top.npy"]

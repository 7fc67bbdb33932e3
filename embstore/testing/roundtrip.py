"""The round-trip tests every format reuses (zarr-python's ``StoreTests`` pattern).

A format's test module subclasses :class:`FormatRoundTripTests`, names the format and says how
to list what an export wrote; pytest then runs every test below for that format::

    class TestPt(FormatRoundTripTests):
        format = "pt"
        keeps_any_key = True

        def exported_keys(self, out):
            return list(torch.load(out, weights_only=True))

Needs pytest and hypothesis (the ``dev`` extra); nothing else in embstore imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._export import export
from .._ingest import ingest
from ..errors import EmbstoreError
from ..store import StoreWriter
from ..store.read import open_store
from .data import make_keyed_store

#: Keys no file system path can hold as they are (parents, absolute, NUL, a newline, a clash).
HOSTILE_KEYS = ["../x", "/abs", "a\x00b", "x", "x.npy", "d.npy", "d.npy/e", "\n"]

_relative_paths = st.lists(
    st.from_regex(r"[a-z0-9]{1,6}(/[a-z0-9_]{1,6}){0,2}\.npy", fullmatch=True),
    min_size=1,
    max_size=12,
    unique=True,
)


def snapshot(folder: Path) -> list[tuple[str, int]]:
    """Every entry under ``folder`` (relative path, size): to see nothing else was written."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            found.append((str(full.relative_to(folder)), full.lstat().st_size))
    return sorted(found)


def files_under(folder: Path) -> list[str]:
    """The files under ``folder``, relative and sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


#: Each subclass runs the same property on its own format: a different executor by design.
_SHARED = [HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]


class FormatRoundTripTests:
    """numpy -> store -> export -> ingest -> equal, and N rows -> N entries or a refusal."""

    #: The format's name in ``embstore.formats.FORMATS``.
    format: ClassVar[str]
    #: Whether the format keeps any string as a key (a dict, a dataset), or maps keys to files.
    keeps_any_key: ClassVar[bool] = False

    def exported_keys(self, out: Path) -> list[str]:
        """The row keys (or file names) the export at ``out`` holds, in any order."""
        raise NotImplementedError

    def _out(self, root: Path) -> Path:
        return root / f"out-{self.format}"

    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        suppress_health_check=_SHARED,
    )
    @given(data=st.data(), keys=_relative_paths, dim=st.integers(1, 6))
    def test_round_trip_numpy_store_export_ingest_equal(
        self, tmp_path_factory: pytest.TempPathFactory, data: Any, keys: list[str], dim: int
    ) -> None:
        vectors = data.draw(
            hnp.arrays(np.float32, (len(keys), dim), elements=st.floats(-1e6, 1e6, width=32))
        )
        keys = [
            k for k in keys if not any(other.startswith(k[:-4] + "/") for other in keys)
        ]  # no file/dir clash
        vectors = vectors[: len(keys)]
        root = tmp_path_factory.mktemp("rt")
        StoreWriter(root / "s.zarr", feature_size=dim, row_chunk=4).append(keys, vectors)
        export(root / "s.zarr", self._out(root), format=self.format)
        ingest([self._out(root)], store=root / "back.zarr")
        ds = open_store(root / "back.zarr")
        order = {p: i for i, p in enumerate(keys)}
        rows = [order[p] for p in ds.path.values]
        assert sorted(ds.path.values.tolist()) == sorted(keys)
        np.testing.assert_array_equal(ds.embedding.values, vectors[rows])

    @settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=_SHARED)
    @given(keys=st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True))
    def test_n_rows_give_n_entries_or_a_one_line_refusal(
        self, tmp_path_factory: pytest.TempPathFactory, keys: list[str]
    ) -> None:
        root = tmp_path_factory.mktemp("any")
        store = make_keyed_store(root, keys)
        out = self._out(root)
        try:
            export(store, out, format=self.format)
        except EmbstoreError as exc:
            assert "\n" not in str(exc) and not out.exists()
            return
        written = self.exported_keys(out)
        assert len(written) == len(keys)
        if self.keeps_any_key:
            assert sorted(written) == sorted(keys)

    def test_hostile_keys_round_trip_or_are_refused_before_writing(self, tmp_path: Path) -> None:
        store = make_keyed_store(tmp_path, HOSTILE_KEYS)
        out = self._out(tmp_path)
        if self.keeps_any_key:
            export(store, out, format=self.format)
            assert sorted(self.exported_keys(out)) == sorted(HOSTILE_KEYS)
            return
        before = snapshot(tmp_path)
        with pytest.raises(EmbstoreError) as refused:
            export(store, out, format=self.format)
        assert "\n" not in str(refused.value)
        assert snapshot(tmp_path) == before

    def test_an_existing_output_is_replaced_only_with_overwrite(self, tmp_path: Path) -> None:
        first = make_keyed_store(tmp_path / "a", ["a/1", "b/2"])
        second = make_keyed_store(tmp_path / "b", ["c/3"])
        out = self._out(tmp_path)
        export(first, out, format=self.format)
        before = snapshot(tmp_path)
        with pytest.raises(EmbstoreError, match="exists"):
            export(second, out, format=self.format)
        assert snapshot(tmp_path) == before
        export(second, out, format=self.format, overwrite=True)
        assert len(self.exported_keys(out)) == 1

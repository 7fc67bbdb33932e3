"""History as a state machine (issue 18): random sequences of append, normalize (fresh and
overwrite), label, tag, gc, restore and a crash mid-write, checked after every step against
a plain Python model of what the newest version and every tag must contain.

Derandomized and bounded for CI; ``pytest -m long`` runs a longer search (not run by default).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from icechunk.store import IcechunkStore

import embstore
from embstore.errors import EmbstoreError
from embstore.store import StoreWriter, parse_age

DIM = 8
ZERO = parse_age("0s")


@dataclass
class Content:
    """What one version holds: rows in order, a label column, the normalized coverage."""

    paths: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    site: list[str] | None = None
    normalized_rows: int | None = None  # rows the 'normalized' variable covers, if present


class Crash(BaseException):
    """Stands for a kill -9 in the middle of writing chunks."""


class History(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="embstore-machine-"))
        self.store = self.tmp / "s"
        self.writer = StoreWriter(self.store, feature_size=DIM, row_chunk=4)
        self.model = Content()
        self.tags: dict[str, Content] = {}
        self.counter = 0

    def teardown(self) -> None:
        try:
            self.check_tags()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- writes ------------------------------------------------------------------------

    def _rows(self, n: int) -> tuple[list[str], np.ndarray]:
        paths = [f"p/{self.counter + i:04d}.npy" for i in range(n)]
        vectors = np.arange(self.counter, self.counter + n, dtype="f4")[:, None] * np.ones(DIM)
        vectors = vectors + np.arange(DIM, dtype="f4") / 10
        self.counter += n
        return paths, vectors.astype("f4")

    @rule(n=st.integers(1, 6))
    def append(self, n: int) -> None:
        paths, vectors = self._rows(n)
        labels = {"subject": [f"s{i % 2}" for i in range(n)]}
        self.writer.append(paths, vectors, labels)
        self.model.paths += paths
        self.model.vectors += list(vectors)
        if self.model.site is not None:
            self.model.site += [""] * n

    @rule(n=st.integers(1, 6), after=st.integers(0, 3))
    def crash_mid_append(self, n: int, after: int) -> None:
        paths, vectors = self._rows(n)
        writes = {"n": 0}
        real = IcechunkStore.set

        async def dying(store: IcechunkStore, key: str, value) -> None:
            writes["n"] += 1
            if writes["n"] > after:
                raise Crash(key)
            await real(store, key, value)

        with mock.patch.object(IcechunkStore, "set", dying), pytest.raises(Crash):
            StoreWriter(self.store).append(paths, vectors)
        self.writer = StoreWriter(self.store)  # a new process after the kill

    @rule(overwrite=st.booleans())
    def normalize(self, overwrite: bool) -> None:
        exists = self.model.normalized_rows is not None
        if not self.model.paths:
            return
        if exists and not overwrite:
            with pytest.raises(EmbstoreError):
                embstore.normalize_store(self.store)
            return
        embstore.normalize_store(self.store, overwrite=overwrite)
        self.model.normalized_rows = len(self.model.paths)

    @precondition(lambda self: self.model.paths)
    @rule()
    def label(self) -> None:
        values = [f"site{i % 3}" for i in range(len(self.model.paths))]
        self.writer.set_labels({"site": np.asarray(values, dtype=object)})
        self.model.site = values

    @rule(name=st.sampled_from(["a", "b", "c"]))
    def tag(self, name: str) -> None:
        if name in self.tags:
            with pytest.raises(EmbstoreError, match="exists"):
                embstore.tag(self.store, name)
            return
        if not self.model.paths:
            return
        embstore.tag(self.store, name)
        self.tags[name] = copy.deepcopy(self.model)

    @rule()
    def gc(self) -> None:
        embstore.gc(self.store, older_than=ZERO, safety_margin=ZERO)
        self.check_tags()

    @precondition(lambda self: self.tags)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.tags)))
        embstore.restore(self.store, name)
        self.model = copy.deepcopy(self.tags[name])
        self.writer = StoreWriter(self.store)

    # -- checks ------------------------------------------------------------------------

    def check(self, version: str | None, want: Content) -> None:
        ds = embstore.open(self.store, version=version)
        assert ds["path"].values.tolist() == want.paths, version
        if want.paths:
            np.testing.assert_array_equal(ds.embedding.values, np.stack(want.vectors))
        if want.site is not None:
            assert ds["site"].values.tolist() == want.site, version
        else:
            assert "site" not in ds.coords
        if want.normalized_rows is None:
            assert "normalized" not in ds.data_vars, version
        else:
            assert "normalized" in ds.data_vars, version
            covered = ds["normalized"].values[: want.normalized_rows]
            assert np.isfinite(covered).all(), version

    def check_tags(self) -> None:
        listed = {t for v in embstore.log(self.store) for t in v.tags}
        assert listed == set(self.tags)
        for name, content in self.tags.items():
            self.check(name, content)

    @invariant()
    def newest_matches_the_model(self) -> None:
        if self.model.paths:
            self.check(None, self.model)


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def test_history_machine() -> None:
    History.TestCase.settings = _settings(examples=10, steps=10)
    History.TestCase().runTest()


@pytest.mark.long
def test_history_machine_long() -> None:
    History.TestCase.settings = _settings(examples=60, steps=20)
    History.TestCase().runTest()

"""Stores with planted defects and a normalized variable, for the quality tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.store import StoreWriter


@pytest.fixture
def defective(tmp_path: Path) -> tuple[Path, np.ndarray, list[str]]:
    """40 x 6 rows with planted defects; feature 4 is constant."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    x[:, 4] = 0.0
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    x[11] = 0.0
    x[20] = x[2]
    x[33] = x[2]
    paths = [f"c/s{i % 4}_{6 + i // 4}_month_level_avg.npy" for i in range(40)]
    labels = {
        "subject": [f"s{i % 4}" for i in range(40)],
        "age_mo": [6 + i // 4 for i in range(40)],
    }
    StoreWriter(tmp_path / "d.zarr", feature_size=6, row_chunk=8).append(paths, x, labels)
    return tmp_path / "d.zarr", x, paths


@pytest.fixture
def normalized(store: Path) -> tuple[Path, str]:
    """The shared ``store`` with a ``normalized`` variable that leaves one subject out."""
    excluded = sorted(set(embstore.open(store).subject.values))[0]
    embstore.normalize_store(store, exclude_subjects=[excluded])
    return store, excluded

"""Stores with planted defects and a normalized variable, for the quality tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.testing import make_defective_store


@pytest.fixture
def defective(tmp_path: Path) -> tuple[Path, np.ndarray, list[str]]:
    """40 x 6 rows with planted defects; feature 4 is constant."""
    x, paths = make_defective_store(tmp_path / "d.zarr")
    return tmp_path / "d.zarr", x, paths


@pytest.fixture
def normalized(store: Path) -> tuple[Path, str]:
    """The shared ``store`` with a ``normalized`` variable that leaves one subject out."""
    excluded = sorted(set(embstore.open(store).subject.values))[0]
    embstore.normalize_store(store, exclude_subjects=[excluded])
    return store, excluded

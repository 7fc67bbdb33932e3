"""Shared builders: small stores and source trees made in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import embstore
from embstore.samples import make_npy_tree, make_pt_dict

# Property tests are reproducible: the same examples on every run and every machine.
settings.register_profile(
    "embstore",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("embstore")


@pytest.fixture
def npy_tree(tmp_path: Path) -> Path:
    """A babyview-layout tree: 3 categories x 4 subjects x 4 ages, 16-d float32."""
    root = tmp_path / "emb"
    make_npy_tree(root, n_subjects=4, n_categories=3, ages=range(6, 10), dim=16)
    return root


@pytest.fixture
def store(tmp_path: Path, npy_tree: Path) -> Path:
    """A store ingested from ``npy_tree`` with 8-row chunks (so everything spans chunks)."""
    path = tmp_path / "s.zarr"
    embstore.ingest([npy_tree], store=path, layout="babyview", batch_rows=10, row_chunk=8)
    return path


@pytest.fixture
def pt_file(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    file = tmp_path / "vitl_embeddings_p10.pt"
    return file, make_pt_dict(file, folder="p10", dim=16)

"""Shared fixtures: thin wrappers around the builders of :mod:`embstore.testing`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from embstore.testing import (
    S3_TEST_ENV,
    local_s3_server,
    make_npy_tree,
    make_pt_dict,
    make_store,
    new_bucket,
)

# Property tests are reproducible: the same examples on every run and every machine.
settings.register_profile(
    "embstore",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("embstore")


@pytest.fixture(autouse=True, scope="session")
def _label_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The label cache (embstore.store.label_cache) of the tests lives in a temp folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EMBSTORE_CACHE_DIR", str(tmp_path_factory.mktemp("embstore-cache")))
    yield
    mp.undo()


@pytest.fixture
def npy_tree(tmp_path: Path) -> Path:
    """A babyview-layout tree: 3 categories x 4 subjects x 4 ages, 16-d float32."""
    root = tmp_path / "emb"
    make_npy_tree(root, n_subjects=4, n_categories=3, ages=range(6, 10), dim=16)
    return root


@pytest.fixture
def store(tmp_path: Path, npy_tree: Path) -> Path:
    """A store ingested from ``npy_tree`` with 8-row chunks (so everything spans chunks)."""
    return make_store(tmp_path / "s.zarr", npy_tree, write_tree=False)


@pytest.fixture
def pt_file(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    file = tmp_path / "vitl_embeddings_p10.pt"
    return file, make_pt_dict(file, folder="p10", dim=16)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local S3-compatible server (moto) on 127.0.0.1 for the whole test session."""
    with local_s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``s3://`` store URL in its own bucket; the AWS environment points at moto."""
    for key, value in {**S3_TEST_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    return f"s3://{new_bucket(s3_endpoint)}/stores/s"

"""Grouped reductions that xarray users write, on a store: one small graph (flox), right values."""

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import embstore
from embstore.store import StoreWriter

# the project of the embstore under test (tests may sit in subfolders of another checkout)
ROOT = Path(embstore.__file__).resolve().parents[1]
if not (ROOT / "pyproject.toml").exists():  # an installed embstore: this checkout's
    ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


def test_flox_and_faiss_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "flox" in names
    assert any(d.startswith("faiss-cpu") for d in project["optional-dependencies"]["ann"])
    assert any(d.startswith("faiss-cpu") for d in project["optional-dependencies"]["dev"])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 2000
    paths = [f"c{i % 7}/s{i % 13}_{6 + i % 5}_{i}.npy" for i in range(n)]
    labels = {
        "category": [f"c{i % 7}" for i in range(n)],
        "subject": [f"s{i % 13}" for i in range(n)],
        "age_mo": [6 + i % 5 for i in range(n)],
    }
    path = tmp_path / "g.store"
    StoreWriter(path, feature_size=6, row_chunk=128).append(
        paths, rng.standard_normal((n, 6)).astype(np.float32), labels
    )
    return path


def test_multi_key_groupby_mean_is_one_small_graph_matching_pandas(store):
    ds = embstore.open(store)
    lazy = ds.embedding.groupby(["age_mo", "category"]).mean()
    chunks = len(ds.embedding.data.chunks[0])
    assert chunks == 16
    tasks = len(lazy.data.__dask_graph__())
    assert tasks <= 6 * chunks  # a few per chunk, whatever the number of groups
    with xr.set_options(use_flox=False):  # what xarray does without flox: 70K tasks on 33K rows
        plain = ds.embedding.groupby(["age_mo", "category"]).mean()
    assert tasks * 4 < len(plain.data.__dask_graph__())
    got = lazy.compute()
    x = ds.embedding.values.astype(np.float64)
    expected = pd.DataFrame(x).groupby([ds.age_mo.values, ds.category.values]).mean()
    for (age, category), row in expected.iterrows():
        value = got.sel(age_mo=age, category=category).values
        np.testing.assert_allclose(value, row.to_numpy(), rtol=1e-5, atol=1e-6)
    assert got.sizes["age_mo"] == 5 and got.sizes["category"] == 7

"""``ds.emb.torch_dataset``: rows for a probe (that opening and selecting rows never import
torch is checked in test_ann.py, in the same subprocess as exact search)."""

import numpy as np
import pytest
import torch

import embstore
from embstore.errors import EmbstoreError


def test_vectors_and_class_indices(store):
    ds = embstore.open(store).emb.rows(category=["category001", "category002"])
    data = ds.emb.torch_dataset(variable="embedding", label="category")
    assert len(data) == ds.sizes["sample"]
    assert data.classes == ["category001", "category002"]
    x, y = data[3]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), ds.embedding.values[3])
    assert data.classes[int(y)] == ds.category.values[3]
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    xb, yb = next(iter(loader))
    assert xb.shape == (5, ds.sizes["feature"]) and yb.shape == (5,)
    assert data.paths.tolist() == ds.path.values.tolist()


def test_nonfinite_rows_are_left_out_and_errors_name_things(store):
    ds = embstore.open(store)
    ds["embedding"] = ds.embedding.load()
    ds.embedding.values[2, 0] = np.nan
    data = ds.emb.torch_dataset()
    assert len(data) == ds.sizes["sample"] - 1 and isinstance(data[0], torch.Tensor)
    assert len(ds.emb.torch_dataset(drop_nonfinite=False)) == ds.sizes["sample"]
    with pytest.raises(EmbstoreError, match="no label 'colour'"):
        ds.emb.torch_dataset(label="colour")
    with pytest.raises(EmbstoreError, match="'normalised'"):
        ds.emb.torch_dataset(variable="normalised")

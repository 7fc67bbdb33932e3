"""``ds.emb.torch_dataset(...)``: a store's rows as a :class:`torch.utils.data.Dataset`.

Imported only when asked for (torch costs ~2 s to import): for training probes on a subset,
e.g. ``ds.emb.rows(category=[...]).emb.torch_dataset(variable="normalized", label="category")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import Dataset

from .errors import EmbstoreError
from .store import SAMPLE
from .store.variables import check_fresh


class EmbeddingDataset(Dataset):
    """Rows of one ``(sample, feature)`` variable, with a label as class indices.

    ``dataset[i]`` is ``(vector, target)`` (``float32`` tensor, ``int64`` tensor) when a
    label is given, else the vector alone. ``classes`` lists the label's values in target
    order (sorted); ``paths`` the rows' paths.
    """

    def __init__(self, vectors: np.ndarray, targets: np.ndarray | None, classes: list[Any],
                 paths: np.ndarray) -> None:  # fmt: skip
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.targets = None if targets is None else torch.from_numpy(targets.astype(np.int64))
        self.classes = classes
        self.paths = paths

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __getitem__(self, i: int) -> Any:
        if self.targets is None:
            return self.vectors[i]
        return self.vectors[i], self.targets[i]


def torch_dataset(
    ds: xr.Dataset,
    *,
    variable: str = "embedding",
    label: str | None = None,
    drop_nonfinite: bool = True,
    allow_stale: bool = False,
) -> EmbeddingDataset:
    """``ds[variable]`` as a torch ``Dataset`` of ``(vector, class index)`` (see the class).

    The rows of ``ds`` are read into memory once (select them first with ``ds.emb.rows``).
    Rows flagged non-finite (or holding NaN/Inf in ``variable``) are left out unless
    ``drop_nonfinite=False``. A stale derived ``variable`` is refused unless ``allow_stale``.

    Examples
    --------
    >>> import torch
    >>> ds = embstore.open("bv.store")
    >>> train = ds.emb.rows(subject=["00270001", "00280001"]).emb.torch_dataset(label="category")
    >>> len(train), train.classes
    (16, ['ball', 'cup'])
    >>> loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True)
    >>> vectors, targets = next(iter(loader))
    >>> tuple(vectors.shape), targets.dtype
    ((8, 8), torch.int64)
    """
    if variable not in ds.data_vars or ds[variable].ndim != 2 or ds[variable].dims[0] != SAMPLE:
        have = [str(n) for n, v in ds.data_vars.items() if v.ndim == 2 and v.dims[0] == SAMPLE]
        raise EmbstoreError(f"no (sample, feature) variable {variable!r} (have: {', '.join(have)})")
    if label is not None and (label not in ds.coords or ds[label].dims != (SAMPLE,)):
        have = sorted(str(n) for n, c in ds.coords.items() if c.dims == (SAMPLE,))
        raise EmbstoreError(f"no label {label!r} (labels: {', '.join(have)})")
    check_fresh(ds, variable, allow_stale=allow_stale)
    vectors = np.asarray(ds[variable].values, dtype=np.float32)
    keep: np.ndarray = np.ones(len(vectors), dtype=bool)
    if drop_nonfinite:
        keep = np.asarray(np.isfinite(vectors).all(axis=1))
    paths = np.asarray(ds["path"].values, dtype=object) if "path" in ds.coords else np.array([])
    targets, classes = None, []
    if label is not None:
        codes, uniques = pd.factorize(np.asarray(ds[label].values)[keep], sort=True)
        targets, classes = codes, list(uniques)
    return EmbeddingDataset(vectors[keep], targets, classes, paths[keep] if len(paths) else paths)

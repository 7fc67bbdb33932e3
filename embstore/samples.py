"""Generated sample data in the real on-disk layouts (for the demo, tests and benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def make_npy_tree(
    root: str | os.PathLike[str],
    *,
    n_subjects: int = 4,
    n_categories: int = 3,
    ages: range = range(6, 10),
    dim: int = 16,
    seed: int = 0,
    dtype: str = "float32",
) -> list[Path]:
    """Write ``<root>/<category>/<subject>_<age_mo>_month_level_avg.npy`` files; return them.

    Subjects are ``00270001``-style ids (leading zeros kept); every subject has a vector for
    every category and age. Values have a per-feature offset and scale, like real embeddings.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    offset = rng.normal(0.0, 1.0, dim)
    scale = rng.uniform(0.1, 0.7, dim)
    files = []
    for c in range(n_categories):
        folder = root / f"category{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(n_subjects):
            for age in ages:
                vector = (offset + scale * rng.standard_normal(dim)).astype(dtype)
                file = folder / f"{(s + 27) * 10000 + 1:08d}_{age}_month_level_avg.npy"
                np.save(file, vector)
                files.append(file)
    return files


def make_pt_dict(
    file: str | os.PathLike[str],
    *,
    folder: str = "p10",
    n_subjects: int = 3,
    studies: int = 2,
    videos: int = 2,
    dim: int = 16,
    seed: int = 0,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """Write a ``{p<subject>/s<study>/<study>_<n>.mp4: tensor[dim]}`` dict with ``torch.save``.

    Returns the same vectors as numpy arrays, keyed like the file.
    """
    import torch

    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    base = int(folder.lstrip("p")) * 1_000_000
    for s in range(n_subjects):
        subject = f"p{base + 1000 * s + 37:08d}"
        for t in range(studies):
            study = f"{90000000 + 1000 * s + t}"
            for v in range(videos):
                data[f"{prefix}{subject}/s{study}/{study}_{v + 1:04d}.mp4"] = rng.standard_normal(
                    dim
                ).astype(np.float32)
    torch.save({k: torch.from_numpy(v.copy()) for k, v in data.items()}, file)
    return data

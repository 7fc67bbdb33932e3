"""Pictures of a store for notebooks and ``embstore inspect --report`` (matplotlib figures).

Every function takes the dataset and explicit row indices (see
:func:`embstore.inspect.sample_rows`), reads only those rows, and returns a
:class:`matplotlib.figure.Figure` without touching pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .inspect import PCA, Summary
from .store.layout import SAMPLE

_MAX_CATEGORIES = 20


def _rows(ds: xr.Dataset, variable: str, rows: Sequence[int]) -> np.ndarray:
    return np.asarray(ds[variable].isel({SAMPLE: np.asarray(rows)}).values, dtype=np.float64)


def plot_cosine_heatmap(
    ds: xr.Dataset, rows: Sequence[int], *, variable: str = "embedding", order_by: str | None = None
) -> Figure:
    """Cosine similarity between the given rows (in the given order, e.g. sorted by a label)."""
    x = _rows(ds, variable, rows)
    unit = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(unit @ unit.T, vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title(
        f"cosine similarity of {len(rows)} sampled rows"
        + (f", ordered by {order_by}" if order_by else "")
    )
    ax.set_xlabel("row")
    ax.set_ylabel("row")
    return fig


def plot_distributions(
    ds: xr.Dataset, summary: Summary, rows: Sequence[int], *, variable: str = "embedding"
) -> Figure:
    """Histogram of the values of sampled rows, and the variance of every dimension (all rows)."""
    x = _rows(ds, variable, rows)
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.hist(x[np.isfinite(x)].ravel(), bins=100, color="tab:blue")
    left.set_title(f"values of {len(rows)} sampled rows")
    left.set_xlabel("value")
    left.set_ylabel("count")
    var = summary.features["var"].values
    right.plot(np.arange(len(var)), var, lw=0.8, color="tab:orange")
    right.set_yscale("log" if (var > 0).all() else "linear")
    right.set_title(f"variance per dimension (all {summary.rows} rows)")
    right.set_xlabel("dimension")
    right.set_ylabel("variance")
    return fig


def plot_pca(
    ds: xr.Dataset,
    model: PCA,
    rows: Sequence[int],
    *,
    variable: str = "embedding",
    color_by: str | None = None,
) -> Figure:
    """2-D PCA scatter of sampled rows coloured by a label, and the explained-variance curve."""
    points = model.transform(_rows(ds, variable, rows))
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    if color_by is not None and color_by in ds.coords:
        labels = np.asarray(ds[color_by].values)[np.asarray(rows)]
        _scatter_by(fig, left, points, labels, color_by)
    else:
        left.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7)
    ratio = model.explained_variance_ratio
    left.set_xlabel(f"PC1 ({ratio[0]:.1%})")
    left.set_ylabel(f"PC2 ({ratio[1]:.1%})" if len(ratio) > 1 else "PC2")
    left.set_title(f"PCA of {len(rows)} sampled rows (axes fit on all rows)")
    shown = min(len(ratio), 100)
    right.plot(np.arange(1, shown + 1), np.cumsum(ratio[:shown]), marker=".", lw=1)
    right.set_ylim(0, 1.02)
    right.set_xlabel("components")
    right.set_ylabel("cumulative explained variance")
    right.set_title("explained variance")
    return fig


def _scatter_by(fig: Figure, ax, points: np.ndarray, labels: np.ndarray, name: str) -> None:
    if labels.dtype.kind in "iuf":
        known = labels >= 0 if labels.dtype.kind in "iu" else np.isfinite(labels)
        if (~known).any():
            ax.scatter(points[~known, 0], points[~known, 1], s=8, c="lightgrey", label="unknown")
        sc = ax.scatter(points[known, 0], points[known, 1], s=8, c=labels[known], cmap="viridis")
        fig.colorbar(sc, ax=ax, label=name)
        return
    values, counts = np.unique(labels.astype(str), return_counts=True)
    top = set(values[np.argsort(counts)[::-1][:_MAX_CATEGORIES]])
    for value in sorted(top):
        mask = labels.astype(str) == value
        ax.scatter(points[mask, 0], points[mask, 1], s=8, label=value or "unknown")
    rest = ~np.isin(labels.astype(str), list(top))
    if rest.any():
        ax.scatter(points[rest, 0], points[rest, 1], s=8, c="lightgrey", label="other")
    ax.legend(title=name, fontsize=6, markerscale=1.5, loc="best", ncol=2)


def plot_profiles(ds: xr.Dataset, rows: Sequence[int], *, variable: str = "embedding") -> Figure:
    """The vectors of a few rows, dimension by dimension."""
    x = _rows(ds, variable, rows)
    paths = (
        np.asarray(ds["path"].values, dtype=object)[np.asarray(rows)]
        if "path" in ds.coords
        else rows
    )
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    for vector, path in zip(x, paths, strict=True):
        ax.plot(vector, lw=0.7, alpha=0.8, label=str(path)[-40:])
    ax.set_xlabel("dimension")
    ax.set_ylabel("value")
    ax.set_title(f"embedding profiles of {len(rows)} rows")
    ax.legend(fontsize=6, loc="upper right")
    return fig


def plot_norms(summary: Summary) -> Figure:
    """Histogram of the L2 norm of every finite row."""
    norms = summary.norms.values
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(norms[np.isfinite(norms)], bins=60, color="tab:green")
    ax.set_xlabel("L2 norm")
    ax.set_ylabel("rows")
    ax.set_title(f"L2 norms of all {int(np.isfinite(norms).sum())} finite rows")
    return fig

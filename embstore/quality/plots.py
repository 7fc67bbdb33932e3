"""Pictures of a store for notebooks and ``embstore inspect --report`` (matplotlib figures).

Every function takes the dataset and explicit row indices (see
:func:`embstore.quality.stats.sample_rows`), reads only those rows, and returns a
:class:`matplotlib.figure.Figure` without touching pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..store import SAMPLE
from .stats import DEPARTURE, MAX_COLOUR_GROUPS, PCA, Summary, group_departures, known

#: Row indices: a list or a numpy array of them.
Rows = Sequence[int] | np.ndarray
_MAX_CATEGORIES = MAX_COLOUR_GROUPS
#: Bands a number with more than :data:`MAX_COLOUR_GROUPS` values is cut into (heatmap).
_BANDS = 8
#: Most tick labels drawn along a heatmap axis (groups in between are unlabelled).
_MAX_TICKS = 24
#: Subjects drawn by :func:`plot_before_after` (those with most rows, plus every excluded one).
_MAX_SUBJECTS = 40
#: Groups drawn by :func:`plot_profiles`.
PROFILE_GROUPS = 4


def _rows(ds: xr.Dataset, variable: str, rows: Rows) -> np.ndarray:
    return np.asarray(ds[variable].isel({SAMPLE: np.asarray(rows)}).values, dtype=np.float64)


def _label_text(values: np.ndarray) -> np.ndarray:
    return np.where(known(values), np.asarray(values).astype(str), "(missing)")


def plot_cosine_heatmap(
    ds: xr.Dataset, rows: Rows, *, variable: str = "embedding", order_by: str | None = None
) -> Figure:
    """Cosine similarity between the given rows, in the given order; with ``order_by`` (the
    label the rows are sorted by) lines mark where its value changes and ticks name the value."""
    x = _rows(ds, variable, rows)
    unit = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    similarity = unit @ unit.T
    # colours span the 1st-99th percentile of the pairs: a common offset (every pair near 0.9)
    # would otherwise leave one flat colour and hide the blocks
    pairs = similarity[~np.eye(len(similarity), dtype=bool)]
    low, high = np.percentile(pairs, [1, 99]) if len(pairs) else (-1.0, 1.0)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        similarity, vmin=low, vmax=max(high, low + 1e-6), cmap="viridis", interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="cosine similarity (1st-99th percentile)", shrink=0.8)
    title = f"cosine similarity of {len(rows)} sampled rows"
    if order_by is not None:
        values = np.asarray(ds[order_by].values)[np.asarray(rows)]
        text = _groups(values, _BANDS) if _many(values) else _label_text(values)
        if len(np.unique(text)) <= MAX_COLOUR_GROUPS:  # more: lines would hide the picture
            _group_ticks(ax, text)
        ax.set_xlabel(f"rows, ordered by {order_by}")
        ax.set_ylabel(order_by)
        title += f", ordered by {order_by}"
    else:
        ax.set_xlabel("row")
        ax.set_ylabel("row")
    ax.set_title(title)
    return fig


def _many(values: np.ndarray) -> bool:
    """A number with more values than a picture can tell apart (drawn as bands)."""
    given = known(values)
    return values.dtype.kind in "iuf" and len(np.unique(values[given])) > MAX_COLOUR_GROUPS


def _group_ticks(ax: Axes, values: np.ndarray) -> None:
    """Boundary lines between runs of equal values, and a tick at the middle of each run."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for edge in starts[1:]:
        ax.axhline(edge - 0.5, color="white", lw=0.9)
        ax.axvline(edge - 0.5, color="white", lw=0.9)
    keep = np.arange(len(starts))[:: max(1, int(np.ceil(len(starts) / _MAX_TICKS)))]
    centres = (starts[keep] + ends[keep] - 1) / 2
    names = [str(values[s])[:14] for s in starts[keep]]
    ax.set_yticks(centres, names, fontsize=7)
    ax.set_xticks(centres, names, fontsize=7, rotation=90)


def plot_distributions(
    ds: xr.Dataset, summary: Summary, rows: Rows, *, variable: str = "embedding"
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
    finite = var[np.isfinite(var)]
    wide = len(finite) and (finite > 0).all() and finite.max() > 100 * finite.min()
    right.set_yscale("log" if wide else "linear")  # log only where the range needs it
    right.set_title(f"variance per dimension (all {summary.rows} rows)")
    right.set_xlabel("dimension")
    right.set_ylabel("variance")
    return fig


def plot_pca(
    ds: xr.Dataset,
    model: PCA,
    rows: Rows,
    *,
    variable: str = "embedding",
    color_by: str | None = None,
    fraction: float = 0.95,
) -> Figure:
    """2-D PCA scatter of sampled rows coloured by a label, and the cumulative explained
    variance up to the components explaining ``fraction`` of it (or the full rank)."""
    points = model.transform(_rows(ds, variable, rows))
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    if color_by is not None:
        labels = np.asarray(ds[color_by].values)[np.asarray(rows)]
        _scatter_by(fig, left, points, labels, color_by)
    else:
        left.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7)
    ratio = model.explained_variance_ratio
    left.set_xlabel(f"PC1 ({ratio[0]:.1%})")
    left.set_ylabel(f"PC2 ({ratio[1]:.1%})" if len(ratio) > 1 else "PC2")
    left.set_title(f"PCA of {len(rows)} sampled rows (axes fit on all rows)")
    _explained_variance(right, model, fraction)
    return fig


def _explained_variance(ax: Axes, model: PCA, fraction: float) -> None:
    needed = model.components_for(fraction)
    shown = min(max(needed + max(needed // 10, 2), 2), len(model.explained_variance_ratio))
    cumulative = np.cumsum(model.explained_variance_ratio[:shown])
    ax.plot(np.arange(1, shown + 1), cumulative, marker="." if shown <= 60 else None, lw=1.2)
    reached = cumulative[needed - 1]
    ax.axhline(fraction, color="grey", ls="--", lw=0.8)
    ax.axvline(needed, color="tab:red", ls=":", lw=1)
    what = f"{reached:.0%} of the variance" + (", the full rank" if needed >= model.rank else "")
    ax.text(
        0.97,
        0.05,
        f"{needed} components: {what}",
        transform=ax.transAxes,
        ha="right",
        color="tab:red",
    )
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0.5, shown + 0.5)
    ax.set_xlabel(f"components (rank {model.rank} of {len(model.explained_variance_ratio)})")
    ax.set_ylabel("cumulative explained variance")
    ax.set_title(f"explained variance, up to {fraction:.0%} or the full rank")


def _scatter_by(fig: Figure, ax: Axes, points: np.ndarray, labels: np.ndarray, name: str) -> None:
    given = known(labels)
    if labels.dtype.kind in "iuf":
        if (~given).any():
            ax.scatter(points[~given, 0], points[~given, 1], s=8, c="lightgrey", label="missing")
            ax.legend(fontsize=7, loc="best")
        sc = ax.scatter(points[given, 0], points[given, 1], s=8, c=labels[given], cmap="viridis")
        fig.colorbar(sc, ax=ax, label=name)
        return
    text = _label_text(labels)
    values, counts = np.unique(text, return_counts=True)
    top = values[np.lexsort((values, -counts))][:_MAX_CATEGORIES]
    for value in sorted(top):
        mask = text == value
        ax.scatter(points[mask, 0], points[mask, 1], s=8, label=value)
    rest = ~np.isin(text, top)
    if rest.any():
        other = f"{len(values) - len(top)} more"
        ax.scatter(points[rest, 0], points[rest, 1], s=8, c="lightgrey", label=other)
    ax.legend(title=name, fontsize=6, markerscale=1.5, loc="best", ncol=2)


def plot_profiles(
    ds: xr.Dataset,
    rows: Rows,
    *,
    variable: str = "embedding",
    group_by: str | None = None,
    groups: int = PROFILE_GROUPS,
    chosen: Sequence[str] | None = None,
) -> Figure:
    """Per-dimension mean ± std of the sampled rows of the ``groups`` largest groups of
    ``group_by`` (or of the ``chosen`` ones, e.g. :func:`departing_groups`; one panel each),
    over the mean ± std of all sampled rows in grey."""
    x = _rows(ds, variable, rows)
    x = np.where(np.isfinite(x), x, np.nan)
    text = _profile_text(ds, rows, group_by, groups)
    if chosen is None:
        values, counts = np.unique(text, return_counts=True)
        chosen = list(values[np.lexsort((values, -counts))][:groups])
    if group_by is not None and ds[group_by].dtype.kind in "iuf":  # numbers in their order
        raw = np.asarray(ds[group_by].values)[np.asarray(rows)]
        chosen = sorted(chosen, key=lambda v: (v == "(missing)", raw[text == v].min()))
    everyone = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    order = np.argsort(everyone[0], kind="stable")  # a smooth curve to see groups depart from
    x, everyone = x[:, order], (everyone[0][order], everyone[1][order])
    fig = Figure(figsize=(11, 1.9 * len(chosen) + 0.8), layout="constrained")
    axes = fig.subplots(len(chosen), 1, sharex=True, sharey=True, squeeze=False).ravel()
    dims = np.arange(x.shape[1])
    for ax, value, colour in zip(axes, chosen, _COLOURS, strict=False):
        part = x[text == value]
        mean, std = np.nanmean(part, axis=0), np.nanstd(part, axis=0)
        ax.fill_between(dims, mean - std, mean + std, color=colour, alpha=0.3, lw=0)
        ax.plot(dims, mean, color=colour, lw=0.9, label=f"mean ± std, {len(part)} rows")
        ax.plot(dims, everyone[0], color="black", lw=0.8, label="mean of all sampled rows")
        for bound in (everyone[0] - everyone[1], everyone[0] + everyone[1]):
            ax.plot(dims, bound, color="black", lw=0.6, ls=":")
        title = f"{group_by} = {value}" if group_by else value
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("value")
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("dimension, sorted by the mean of all sampled rows (dotted: ± std)")
    by = f", by {group_by}" if group_by else ""
    fig.suptitle(f"per-dimension mean ± std of {len(rows)} sampled rows{by}")
    return fig


_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def _profile_text(ds: xr.Dataset, rows: Rows, group_by: str | None, groups: int) -> np.ndarray:
    if group_by is None:
        return np.full(len(rows), "all rows")
    return _groups(np.asarray(ds[group_by].values)[np.asarray(rows)], groups)


def departing_groups(
    ds: xr.Dataset,
    rows: Rows,
    *,
    variable: str = "embedding",
    group_by: str | None = None,
    groups: int = PROFILE_GROUPS,
) -> list[str]:
    """The (at most ``groups``) groups of ``group_by`` whose mean vector departs from all
    sampled rows beyond noise (:func:`~embstore.quality.stats.group_departures` above
    :data:`~embstore.quality.stats.DEPARTURE`), most departing first; ``[]`` when none does,
    so that a report shows only panels that differ."""
    if group_by is None:
        return []
    text = _profile_text(ds, rows, group_by, groups)
    departures = group_departures(_rows(ds, variable, rows), text)
    return [str(g) for g in departures[departures > DEPARTURE].index[:groups]]


def _groups(values: np.ndarray, groups: int) -> np.ndarray:
    """Group names per row: the values, or for a number with many values, ``groups`` ranges
    of about equal size (e.g. ``6-11``)."""
    given = known(values)
    if values.dtype.kind not in "iuf" or len(np.unique(values[given])) <= groups:
        return _label_text(values)
    edges = np.unique(np.quantile(values[given], np.linspace(0, 1, groups + 1)))
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    lows = [values[given & (bins == b)] for b in range(len(edges) - 1)]
    names = np.array([_span(v) for v in lows], dtype=object)
    return np.where(given, names[bins], "(missing)").astype(str)


def _span(values: np.ndarray) -> str:
    if not len(values):
        return ""
    low, high = values.min(), values.max()
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


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


def plot_before_after(
    ds: xr.Dataset,
    rows: Rows,
    *,
    variable: str,
    source: str,
    excluded_subjects: Sequence[str] = (),
    categories: Sequence[str] | None = None,
) -> Figure:
    """The same sampled rows before (``source``) and after (``variable``) normalization, each
    projected on its own first two principal axes (fit on these rows), and below how far each
    subject's mean sits from the statistics' mean after normalization. Subjects left out of
    the statistics are marked in red; with ``categories`` (the list the statistics were
    limited to) rows of other categories are marked apart, as "outside the categories list"."""
    subjects = (
        np.asarray(ds["subject"].values).astype(str)[np.asarray(rows)]
        if "subject" in ds.coords
        else np.full(len(rows), "")
    )
    excluded = np.isin(subjects, np.asarray(list(excluded_subjects), dtype=str))
    outside = np.zeros(len(rows), dtype=bool)
    if categories is not None and "category" in ds.coords:
        cats = np.asarray(ds["category"].values).astype(str)[np.asarray(rows)]
        outside = ~np.isin(cats, np.asarray(list(categories), dtype=str)) & ~excluded
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    axes = fig.subplot_mosaic([[source, variable], ["subjects", "subjects"]], height_ratios=[5, 3])
    after = np.empty((0, 0))
    for name in (source, variable):
        ax = axes[name]
        x = _rows(ds, name, rows)
        x = x[:, np.isfinite(x).all(axis=0)]
        after = x
        centred = x - x.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T
        share = s[:2] ** 2 / max((s**2).sum(), 1e-300)
        kept = ~excluded & ~outside
        ax.scatter(points[kept, 0], points[kept, 1], s=8, alpha=0.6, label="in the statistics")
        if outside.any():
            ax.scatter(
                points[outside, 0],
                points[outside, 1],
                s=14,
                marker="^",
                color="grey",
                label=f"outside the categories list ({int(outside.sum())} rows)",
            )
        if excluded.any():
            ax.scatter(
                points[excluded, 0],
                points[excluded, 1],
                s=22,
                marker="x",
                color="tab:red",
                label=f"excluded: {', '.join(sorted(set(subjects[excluded])))[:60]}",
            )
        ax.set_title(f"{name} ({'before' if name == source else 'after'})")
        ax.set_xlabel(f"PC1 ({share[0]:.1%})")
        ax.set_ylabel(f"PC2 ({share[1]:.1%})" if len(share) > 1 else "PC2")
        ax.legend(fontsize=7, loc="best")
    assert after is not None  # the loop ran over (source, variable)
    _subject_offsets(axes["subjects"], after, subjects, set(subjects[excluded]), variable)
    fig.suptitle(f"{len(rows)} sampled rows before and after normalization (axes fit on them)")
    return fig


def _subject_offsets(
    ax: Axes, x: np.ndarray, subjects: np.ndarray, excluded: set[str], variable: str
) -> None:
    """Per subject: RMS over dimensions of its mean normalized vector (in std units), with the
    level that noise alone gives for that many rows (1/sqrt(n)) as a tick."""
    names, counts = np.unique(subjects, return_counts=True)
    order = np.lexsort((names, -counts))
    shown = list(names[order][:_MAX_SUBJECTS])
    shown += sorted(excluded - set(shown))
    offsets = [float(np.sqrt(np.mean(x[subjects == n].mean(axis=0) ** 2))) for n in shown]
    noise = [1 / np.sqrt((subjects == n).sum()) for n in shown]
    colours = ["tab:red" if n in excluded else "tab:blue" for n in shown]
    where = np.arange(len(shown))
    ax.bar(where, offsets, color=colours)
    ax.scatter(where, noise, marker="_", s=200, color="black", label="noise level of n rows")
    ax.set_xticks(where, [n or "(missing)" for n in shown], rotation=90 if len(shown) > 8 else 0)
    ax.set_ylim(0, 1.3 * max([*offsets, *noise, 1e-12]))  # room for the legend
    ax.set_xlabel("subject (red: excluded from the statistics)")
    ax.set_ylabel("RMS of the mean (std)")
    ax.set_title(f"how far each subject's mean {variable} vector sits from the statistics' mean")
    ax.legend(fontsize=7, loc="upper right")

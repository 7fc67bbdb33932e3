"""Health checks and statistics of a store's vectors, in one lazy pass over every row.

``health(ds)`` and ``summary(ds)`` return plain data (pandas / xarray); the ``plot_*``
functions in :mod:`embstore.plots` draw them, and :func:`inspect_store` ties both together for
``embstore inspect``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .errors import EmbstoreError
from .normalize import constant_features
from .store import FEATURE, SAMPLE
from .views import provenance

#: A feature is of "extreme scale" when its std is this many times above or below the median
#: feature std.
EXTREME_FACTOR = 100.0
#: Example paths listed per failed check.
EXAMPLES = 10

_FINGERPRINT_SEED = 20261122


def __getattr__(name: str) -> Any:
    """``embstore.inspect.plot_*``: the figures live in :mod:`embstore.plots` (matplotlib is
    imported only when a picture is asked for)."""
    if name.startswith("plot_"):
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Scan:
    """Everything one pass over a variable computes (numpy, in memory; O(rows + features))."""

    variable: str
    rows: int
    paths: np.ndarray
    nan_rows: np.ndarray
    inf_rows: np.ndarray
    zero_rows: np.ndarray
    norms: np.ndarray
    fingerprints: np.ndarray
    features: xr.Dataset  # mean, std, min, max, var over finite rows (dim feature)
    provenance: dict[str, Any] = field(default_factory=dict)


def _variable(ds: xr.Dataset, variable: str) -> xr.DataArray:
    if variable not in ds.data_vars or ds[variable].dims != (SAMPLE, FEATURE):
        choices = [str(n) for n, v in ds.data_vars.items() if v.dims == (SAMPLE, FEATURE)]
        msg = f"no (sample, feature) variable {variable!r} (have: {', '.join(choices)})"
        raise EmbstoreError(msg)
    return ds[variable]


def scan(ds: xr.Dataset, *, variable: str = "embedding") -> Scan:
    """Read every chunk of ``variable`` once and compute row flags, norms and feature stats.

    Per-feature statistics use float64 accumulators over the finite rows only (a single NaN
    row would otherwise poison every feature).
    """
    data = _variable(ds, variable)
    x = data.data if isinstance(data.data, da.Array) else da.from_array(np.asarray(data.data))
    dim = x.shape[1]
    finite_rows = da.isfinite(x).all(axis=1)
    clean = da.where(finite_rows[:, None], x, 0).astype(np.float64)
    masked = da.where(finite_rows[:, None], x, np.nan).astype(np.float64)
    rng = np.random.default_rng(_FINGERPRINT_SEED)
    projection = rng.standard_normal((dim, 2))  # two random projections identify equal rows
    # one pass: every reduction below is chunk-wise (dask's nanvar combines per-chunk moments)
    with warnings.catch_warnings():  # all-NaN features get NaN stats; the checks report them
        warnings.simplefilter("ignore", RuntimeWarning)
        parts = dask.compute(
            da.isnan(x).any(axis=1),
            da.isinf(x).any(axis=1),
            (x == 0).all(axis=1),
            da.sqrt((clean**2).sum(axis=1)),
            clean @ projection,
            da.nanmean(masked, axis=0),
            da.nanvar(masked, axis=0),
            da.nanmin(masked, axis=0),
            da.nanmax(masked, axis=0),
        )
    nan_rows, inf_rows, zero_rows, norms, fingerprints, mean_, var, fmin, fmax = parts
    nonfinite = nan_rows | inf_rows
    norms = np.where(nonfinite, np.nan, norms)
    features = xr.Dataset(
        {
            "mean": (FEATURE, mean_),
            "std": (FEATURE, np.sqrt(var)),
            "var": (FEATURE, var),
            "min": (FEATURE, fmin.astype(np.float64)),
            "max": (FEATURE, fmax.astype(np.float64)),
        }
    )
    paths = (
        np.asarray(ds["path"].values, dtype=object)
        if "path" in ds.coords
        else np.arange(len(norms))
    )
    variable_provenance = provenance(data)
    return Scan(
        variable,
        int(x.shape[0]),
        paths,
        nan_rows,
        inf_rows,
        zero_rows,
        norms,
        fingerprints,
        features,
        variable_provenance,
    )


def _duplicate_groups(sc: Scan, x: xr.DataArray) -> list[np.ndarray]:
    """Groups of row indices holding identical vectors (finite rows; exact comparison)."""
    candidates = ~(sc.nan_rows | sc.inf_rows)
    idx = np.flatnonzero(candidates)
    if len(idx) < 2:
        return []
    frame = pd.DataFrame(sc.fingerprints[idx], index=idx)
    dup = frame.duplicated(keep=False).to_numpy()
    if not dup.any():
        return []
    groups = []
    for _, group in frame[dup].groupby([0, 1]):
        rows = group.index.to_numpy()
        values = np.asarray(x.isel({SAMPLE: rows}).values)  # only the few candidate rows
        _, inverse, counts = np.unique(values, axis=0, return_inverse=True, return_counts=True)
        groups += [rows[inverse.ravel() == k] for k in np.flatnonzero(counts > 1)]
    return sorted(groups, key=lambda g: g[0])


def health(
    ds: xr.Dataset | Scan,
    *,
    variable: str = "embedding",
    extreme_factor: float = EXTREME_FACTOR,
    source: xr.Dataset | None = None,
) -> pd.DataFrame:
    """Health checks over every row: one row per check with ``passed``, ``count``, ``examples``.

    Checks: rows with NaN, rows with Inf, all-zero rows, duplicate vectors (rows equal to an
    earlier row), dead dimensions (zero variance) and dimensions whose std is more than
    ``extreme_factor`` times above or below the median feature std.

    Examples
    --------
    >>> checks = embstore.inspect.health(embstore.open("bv.zarr"))  # doctest: +SKIP
    >>> checks[~checks.passed]                                       # doctest: +SKIP
    """
    if isinstance(ds, Scan):
        sc, data = ds, (source if source is not None else None)
        if data is None:
            raise EmbstoreError("health(scan) needs source=<the dataset> to verify duplicates")
    else:
        sc, data = scan(ds, variable=variable), ds
    groups = _duplicate_groups(sc, data[sc.variable])
    std = sc.features["std"].values
    median = float(np.median(std[std > 0])) if (std > 0).any() else 0.0
    n_finite = int((~(sc.nan_rows | sc.inf_rows)).sum())
    dead = np.flatnonzero(constant_features(sc.features["mean"].values, std, n_finite))
    alive = np.ones(len(std), bool)
    alive[dead] = False
    extreme = np.flatnonzero(
        alive & ((std > median * extreme_factor) | (std < median / extreme_factor))
    )
    repeats = np.concatenate([g[1:] for g in groups]) if groups else np.array([], dtype=int)

    def check(name: str, found: np.ndarray, what: str, label: Any) -> dict[str, Any]:
        found = np.sort(found)
        return {
            "check": name,
            "passed": len(found) == 0,
            "count": len(found),
            "what": what,
            "indices": found.tolist(),
            "examples": [label(i) for i in found[:EXAMPLES]],
        }

    def row(i: int) -> str:
        return f"{sc.paths[i]} (row {i})"

    def feature(i: int) -> str:
        return f"feature {i}"

    checks = [
        check("nan_rows", np.flatnonzero(sc.nan_rows), "rows holding NaN", row),
        check("inf_rows", np.flatnonzero(sc.inf_rows), "rows holding +-Inf", row),
        check("zero_rows", np.flatnonzero(sc.zero_rows), "rows that are all zeros", row),
        check("duplicate_rows", repeats, "rows equal to an earlier row", row),
        check("dead_dimensions", dead, "features with (numerically) zero variance", feature),
        check(
            "extreme_dimensions",
            extreme,
            f"features whose std is >{extreme_factor:g}x off the median std ({median:.3g})",
            feature,
        ),
    ]
    return pd.DataFrame(checks).set_index("check")


@dataclass
class Summary:
    """Statistics of a variable: per-feature stats, row norms, and counts per label."""

    variable: str
    rows: int
    features: xr.Dataset
    norms: xr.DataArray
    counts: dict[str, pd.Series]
    provenance: dict[str, Any]

    def norm_stats(self) -> pd.Series:
        finite = self.norms.values[np.isfinite(self.norms.values)]
        if not len(finite):
            return pd.Series(dtype=float)
        q = np.percentile(finite, [0, 1, 50, 99, 100])
        return pd.Series(
            {
                "mean": finite.mean(),
                "std": finite.std(),
                "min": q[0],
                "p1": q[1],
                "median": q[2],
                "p99": q[3],
                "max": q[4],
            }
        )


def summary(
    ds: xr.Dataset | Scan, *, variable: str = "embedding", source: xr.Dataset | None = None
) -> Summary:
    """Per-feature mean/std/min/max, L2 norms and counts per subject / age_mo / category."""
    sc = ds if isinstance(ds, Scan) else scan(ds, variable=variable)
    labels = ds if isinstance(ds, xr.Dataset) else source
    counts = {}
    if labels is not None:
        for name in ("subject", "age_mo", "category"):
            if name in labels.coords:
                counts[name] = (
                    pd.Series(np.asarray(labels[name].values)).value_counts().sort_index()
                )
    norms = xr.DataArray(
        sc.norms, dims=(SAMPLE,), coords={"path": (SAMPLE, sc.paths)}, name="l2_norm"
    )
    return Summary(sc.variable, sc.rows, sc.features, norms, counts, sc.provenance)


def sample_rows(
    ds: xr.Dataset, n: int, *, seed: int = 0, order_by: str | None = None
) -> np.ndarray:
    """A deterministic, bounded sample of finite row indices (sorted by ``order_by`` if given)."""
    rows = ds.sizes[SAMPLE]
    finite = (
        ~np.asarray(ds["nonfinite"].values, dtype=bool)
        if "nonfinite" in ds.coords
        else np.ones(rows, bool)
    )
    candidates = np.flatnonzero(finite)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
    if order_by is not None and order_by in ds.coords:
        keys = np.asarray(ds[order_by].values)[chosen]
        chosen = chosen[np.argsort(keys, kind="stable")]
    return chosen


@dataclass
class PCA:
    """Principal axes from the exact covariance of every finite row (one pass, float64)."""

    mean: np.ndarray
    components: np.ndarray  # (k, features)
    explained_variance_ratio: np.ndarray  # (features,), all of them, descending

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T


def pca(ds: xr.Dataset, *, variable: str = "embedding", n_components: int = 2) -> PCA:
    """PCA without loading the store: accumulates the D x D covariance chunk by chunk.

    Exact (not randomized) and memory-bounded by D^2 float64 (8 MB at 1024 features).
    """
    data = _variable(ds, variable)
    x = data.data if isinstance(data.data, da.Array) else da.from_array(np.asarray(data.data))
    finite_rows = da.isfinite(x).all(axis=1)
    clean = da.where(finite_rows[:, None], x, 0).astype(np.float64)
    n = finite_rows.sum()
    mean = (clean.sum(axis=0) / n).compute()
    centered = da.where(finite_rows[:, None], clean - mean, 0)
    cov, count = dask.compute(centered.T @ centered, n)
    values, vectors = np.linalg.eigh(cov / max(int(count), 1))
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    total = values.sum()
    ratio = values / total if total > 0 else np.zeros_like(values)
    return PCA(mean, vectors[:, :n_components].T, ratio)


@dataclass
class InspectResult:
    """What :func:`inspect_store` found (and wrote)."""

    store: str
    variable: str
    health: pd.DataFrame
    summary: Summary
    report: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.health["passed"].all())

    def to_dict(self) -> dict[str, Any]:
        features = self.summary.features
        return {
            "store": self.store,
            "variable": self.variable,
            "rows": self.summary.rows,
            "passed": self.passed,
            "checks": {
                name: {k: _plain(v) for k, v in row.items()} for name, row in self.health.iterrows()
            },
            "features": {
                name: features[name].values.tolist() for name in ("mean", "std", "min", "max")
            },
            "norms": {k: float(v) for k, v in self.summary.norm_stats().items()},
            "counts": {
                k: {str(i): int(c) for i, c in v.items()} for k, v in self.summary.counts.items()
            },
            "provenance": self.summary.provenance,
            "report": self.report,
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def inspect_store(
    store: str | os.PathLike[str],
    *,
    variable: str = "embedding",
    report: str | os.PathLike[str] | None = None,
    sample: int = 500,
    seed: int = 0,
    color_by: str = "age_mo",
    extreme_factor: float = EXTREME_FACTOR,
) -> InspectResult:
    """Health checks and statistics over every row of ``variable`` (one lazy pass), and with
    ``report`` a folder of PNGs plus a self-contained ``report.html``.

    Pictures use a deterministic sample of at most ``sample`` rows (``seed``); the checks and
    statistics always cover every row.
    """
    from .store import open_store

    ds = open_store(store)
    sc = scan(ds, variable=variable)
    checks = health(sc, source=ds, extreme_factor=extreme_factor)
    stats = summary(sc, source=ds)
    result = InspectResult(str(store), variable, checks, stats)
    if report is not None:
        from .report import write_report

        result.report = str(
            write_report(ds, result, report, sample=sample, seed=seed, color_by=color_by)
        )
    return result

"""Health checks, statistics and PCA of a store's vectors, in one lazy pass over every row.

``health(ds)``, ``summary(ds)`` and ``pca(ds)`` return plain data (pandas / xarray / numpy);
:mod:`embstore.quality.plots` draws them and :mod:`embstore.quality.report` writes the report.
This module imports neither.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .._normalize import constant_features
from .._progress import Progress, count_rows
from ..errors import EmbstoreError
from ..labels import MISSING_AGE, MISSING_STR
from ..store import FEATURE, SAMPLE
from ..store.lazy import scan_blocks
from ..store.views import provenance

#: A feature is of "extreme scale" when its std is this many times above or below the median
#: feature std.
EXTREME_FACTOR = 100.0
#: Example paths listed per failed check.
EXAMPLES = 10

_FINGERPRINT_SEED = 20261122
#: Labels tried first when no colour is asked for (in this order).
_PREFERRED = {"age_mo": 0, "category": 1, "study": 2, "subject": 3}
#: Most groups a string label may have to colour pictures by default (more draw a mesh of
#: separator lines and an unreadable legend); numbers are drawn as bands whatever their count.
MAX_COLOUR_GROUPS = 20
#: A group's mean "departs" when the RMS over features of its z-score (against the mean of
#: all sampled rows, in standard errors of a group that size) exceeds this; noise gives ~1.
DEPARTURE = 2.0


@dataclass
class Scan:
    """Everything one pass over a variable computes (numpy, in memory; O(rows + features),
    plus the D x D covariance when asked for)."""

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
    covariance: np.ndarray | None = None  # (features, features), over finite rows


def _variable(ds: xr.Dataset, variable: str) -> xr.DataArray:
    if variable not in ds.data_vars or ds[variable].dims != (SAMPLE, FEATURE):
        choices = [str(n) for n, v in ds.data_vars.items() if v.dims == (SAMPLE, FEATURE)]
        msg = f"no (sample, feature) variable {variable!r} (have: {', '.join(choices)})"
        raise EmbstoreError(msg)
    return ds[variable]


def _dask(data: xr.DataArray) -> da.Array:
    return data.data if isinstance(data.data, da.Array) else da.from_array(np.asarray(data.data))


def variable_provenance(ds: xr.Dataset, variable: str) -> dict[str, Any]:
    """How ``variable`` was made.

    A derived variable (``normalized``) carries its own record (source, excluded subjects,
    rows used...). The stored vectors carry none: their history is the store's run log, so
    this returns the model and the runs that added rows (ingest, extract).
    """
    own = provenance(ds[variable])
    if own:
        return own
    meta = provenance(ds)
    runs = [
        {k: v for k, v in entry.items() if k != "run_id"}
        for entry in meta.get("provenance", [])
        if entry.get("action") != "normalize"
    ]
    found = {k: meta[k] for k in ("model", "created", "feature_size") if meta.get(k) is not None}
    return {**found, "runs": runs} if runs else found


def _reference(x: da.Array) -> np.ndarray:
    """Mean of the finite rows of the first chunk: the covariance is accumulated around it, so
    a large common offset does not cancel catastrophically."""
    n = x.chunks[0][0] if x.shape[0] else 0
    head = np.asarray(x[:n].compute(), dtype=np.float64)
    head = head[np.isfinite(head).all(axis=1)]
    return head.mean(axis=0) if len(head) else np.zeros(x.shape[1])


def scan(
    ds: xr.Dataset,
    *,
    variable: str = "embedding",
    covariance: bool = False,
    progress: Progress | None = None,
) -> Scan:
    """Read every chunk of ``variable`` once and compute row flags, norms and feature stats.

    Per-feature statistics use float64 accumulators over the finite rows only (a single NaN
    row would otherwise poison every feature). With ``covariance`` the same pass also sums the
    D x D second moments (memory: D^2 float64, 8 MB at 1024 features) for :func:`pca`.
    ``progress(done, total)`` counts rows read.
    """
    data = _variable(ds, variable)
    raw = _dask(data)
    shift = _reference(raw) if covariance else np.zeros(raw.shape[1])
    x = count_rows(scan_blocks(raw), progress)  # a few stored chunks a task (issue 18)
    finite_rows = da.isfinite(x).all(axis=1)
    clean = da.where(finite_rows[:, None], x, 0).astype(np.float64)
    masked = da.where(finite_rows[:, None], x, np.nan).astype(np.float64)
    rng = np.random.default_rng(_FINGERPRINT_SEED)
    projection = rng.standard_normal((x.shape[1], 2))  # two random projections: equal rows
    shifted = da.where(finite_rows[:, None], clean - shift, 0)
    moments = (shifted.T @ shifted, shifted.sum(axis=0)) if covariance else ()
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
            *moments,
        )
    nan_rows, inf_rows, zero_rows, norms, fingerprints, mean_, var, fmin, fmax = parts[:9]
    nonfinite = nan_rows | inf_rows
    features = xr.Dataset(
        {
            "mean": (FEATURE, mean_),
            "std": (FEATURE, np.sqrt(var)),
            "var": (FEATURE, var),
            "min": (FEATURE, fmin.astype(np.float64)),
            "max": (FEATURE, fmax.astype(np.float64)),
        }
    )
    paths = np.asarray(ds["path"].values, dtype=object) if "path" in ds.coords else None
    return Scan(
        variable,
        int(x.shape[0]),
        paths if paths is not None else np.arange(len(norms)),
        nan_rows,
        inf_rows,
        zero_rows,
        np.where(nonfinite, np.nan, norms),
        fingerprints,
        features,
        variable_provenance(ds, variable),
        _covariance(*parts[9:], rows=int((~nonfinite).sum())) if covariance else None,
    )


def _covariance(gram: np.ndarray, total: np.ndarray, *, rows: int) -> np.ndarray:
    """Covariance from the sums of shifted rows and of their outer products."""
    n = max(rows, 1)
    centre = total / n  # the mean minus the shift
    return gram / n - np.outer(centre, centre)


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
    >>> checks = embstore.inspect.health(embstore.open("bv.store"))
    >>> bool(checks.passed.all()), checks[~checks.passed].index.tolist()
    (True, [])
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
    #: labels left out of ``counts`` because they group rows as another does: kept -> aliases
    aliases: dict[str, list[str]] = field(default_factory=dict)

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


def labels(ds: xr.Dataset) -> list[str]:
    """The label columns of a store: every per-row coordinate but ``path`` and ``nonfinite``."""
    return [
        str(name)
        for name, coord in ds.coords.items()
        if coord.dims == (SAMPLE,) and name not in ("path", "nonfinite")
    ]


def known(values: np.ndarray) -> np.ndarray:
    """Which values of a label are given (not the missing marker, not NaN)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values != MISSING_AGE
    if values.dtype.kind == "f":
        return np.isfinite(values)
    return np.array([v is not None and str(v) != MISSING_STR for v in values], dtype=bool)


def check_label(ds: xr.Dataset, name: str | None) -> str | None:
    """``name`` if it is a label of ``ds``; with ``None``, the first label (age, category,
    study, subject, then the others, aliases skipped) that has values and either is a number
    (drawn as bands) or has at most :data:`MAX_COLOUR_GROUPS` values; ``None`` if none has.

    Raises :class:`EmbstoreError` naming the labels there are.
    """
    names = labels(ds)
    if name is None:
        kept = list(redundant_labels(ds))
        preferred = sorted(kept, key=lambda n: (n not in _PREFERRED, _PREFERRED.get(n, 0)))
        return next((n for n in preferred if _colourable(np.asarray(ds[n].values))), None)
    if name not in names:
        msg = f"color_by={name!r} is not a label; labels: {', '.join(sorted(names)) or '(none)'}"
        raise EmbstoreError(msg)
    return name


def _colourable(values: np.ndarray) -> bool:
    given = known(values)
    if not given.any():
        return False
    return values.dtype.kind in "iuf" or len(pd.unique(values[given])) <= MAX_COLOUR_GROUPS


def redundant_labels(ds: xr.Dataset) -> dict[str, list[str]]:
    """Labels that split the rows into the same groups, merged: ``{kept: [aliases]}`` in the
    labels' order (``subject`` keeps ``subject_id`` when every subject has one id).

    The shorter name is kept. Labels with a single value (e.g. all missing) are never merged.
    """
    names = labels(ds)
    codes = {n: pd.factorize(np.asarray(ds[n].values))[0] for n in names}
    kept: dict[str, list[str]] = {}
    for name in sorted(names, key=lambda n: (len(n), n)):
        twin = next((k for k in kept if _same_groups(codes[k], codes[name])), None)
        if twin is None:
            kept[name] = []
        else:
            kept[twin].append(name)
    return {n: kept[n] for n in names if n in kept}


def _same_groups(a: np.ndarray, b: np.ndarray) -> bool:
    groups = int(a.max(initial=0)) + 1
    if groups < 2 or groups != int(b.max(initial=0)) + 1:
        return False
    return len(np.unique(a.astype(np.int64) * groups + b)) == groups


def group_departures(x: np.ndarray, groups: np.ndarray, *, min_rows: int = 3) -> pd.Series:
    """Per group: the RMS over features of ``(group mean - mean of all rows) / (std of all
    rows / sqrt(group rows))``, most departing first. Noise alone gives about 1; groups
    with fewer than ``min_rows`` rows are left out."""
    x = np.where(np.isfinite(x), x, np.nan)
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    std = np.where(std > 0, std, np.inf)
    found = {}
    for value in pd.unique(groups):
        part = x[groups == value]
        if len(part) >= min_rows:
            z = (np.nanmean(part, axis=0) - mean) / (std / np.sqrt(len(part)))
            found[value] = float(np.sqrt(np.nanmean(z**2)))
    return pd.Series(found, dtype=float).sort_values(ascending=False, kind="stable")


def summary(
    ds: xr.Dataset | Scan, *, variable: str = "embedding", source: xr.Dataset | None = None
) -> Summary:
    """Per-feature mean/std/min/max, L2 norms and rows per value of every label (missing
    values first as ``(missing)``, then most rows first, ties in the values' order)."""
    sc = ds if isinstance(ds, Scan) else scan(ds, variable=variable)
    frame = ds if isinstance(ds, xr.Dataset) else source
    counts = {}
    merged = redundant_labels(frame) if frame is not None else {}
    for name in merged:
        assert frame is not None
        values = pd.Series(np.asarray(frame[name].values))
        table = values[known(values.to_numpy())].value_counts()
        table = table.iloc[np.lexsort((table.index.to_numpy(), -table.to_numpy()))]
        table.index = table.index.astype(str)  # ties in the values' own order (6 before 10)
        missing = int((~known(values.to_numpy())).sum())
        if missing:  # first, so that a long tail never hides it
            table = pd.concat([pd.Series({"(missing)": missing}), table])
        counts[name] = table
    norms = xr.DataArray(
        sc.norms, dims=(SAMPLE,), coords={"path": (SAMPLE, sc.paths)}, name="l2_norm"
    )
    aliases = {k: v for k, v in merged.items() if v}
    return Summary(sc.variable, sc.rows, sc.features, norms, counts, sc.provenance, aliases)


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
    """Principal axes from the exact covariance of every finite row (float64)."""

    mean: np.ndarray
    components: np.ndarray  # (k, features)
    explained_variance_ratio: np.ndarray  # (features,), all of them, descending

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T

    @property
    def rank(self) -> int:
        """Components with non-negligible variance."""
        ratio = self.explained_variance_ratio
        return int((ratio > max(ratio[0], 0) * 1e-10).sum()) if len(ratio) else 0

    def components_for(self, fraction: float = 0.95) -> int:
        """Fewest components explaining ``fraction`` of the variance (at most the rank)."""
        cumulative = np.cumsum(self.explained_variance_ratio)
        return min(int(np.searchsorted(cumulative, fraction - 1e-12) + 1), max(self.rank, 1))


def pca(ds: xr.Dataset | Scan, *, variable: str = "embedding", n_components: int = 2) -> PCA:
    """PCA without loading the store: the D x D covariance is accumulated chunk by chunk.

    Exact (not randomized). Pass a :class:`Scan` made with ``covariance=True`` to reuse its
    pass over the rows.
    """
    sc = ds if isinstance(ds, Scan) else scan(ds, variable=variable, covariance=True)
    if sc.covariance is None:
        raise EmbstoreError("pca(scan) needs a scan made with covariance=True")
    values, vectors = np.linalg.eigh(sc.covariance)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    total = values.sum()
    ratio = values / total if total > 0 else np.zeros_like(values)
    return PCA(sc.features["mean"].values, vectors[:, :n_components].T, ratio)


@dataclass
class InspectResult:
    """What :func:`inspect_store` found (and wrote)."""

    store: str
    variable: str
    health: pd.DataFrame
    summary: Summary
    report: str | None = None
    color_by: str | None = None

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

"""``embstore inspect``: the checks and statistics of one variable, and optionally the report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._progress import Progress
from ..errors import EmbstoreError
from .stats import EXTREME_FACTOR, Summary, check_label, health, scan, summary


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


def inspect_store(
    store: str | os.PathLike[str],
    *,
    variable: str = "embedding",
    report: str | os.PathLike[str] | None = None,
    sample: int = 500,
    seed: int = 0,
    color_by: str | None = None,
    extreme_factor: float = EXTREME_FACTOR,
    progress: Progress | None = None,
) -> InspectResult:
    """Health checks and statistics over every row of ``variable`` (one lazy pass), and with
    ``report`` a folder of PNGs plus a self-contained ``report.html``.

    Parameters
    ----------
    store
        The store.
    variable
        A (sample, feature) variable, e.g. ``"normalized"``.
    report
        Folder for the pictures and ``report.html`` (none written when ``None``).
    sample, seed
        Pictures use a deterministic sample of at most ``sample`` rows; the checks and
        statistics always cover every row.
    color_by
        Label that colours the PCA and orders the heatmap; by default the first of age_mo,
        subject, category (then any other label) that has values. An unknown label raises
        :class:`~embstore.errors.EmbstoreError` listing the labels there are.
    extreme_factor
        See :func:`~embstore.quality.stats.health`.
    progress
        ``progress(done, total)`` in rows read.

    Examples
    --------
    >>> result = embstore.inspect.inspect_store("bv.zarr", report="bv-report")  # doctest: +SKIP
    >>> result.passed                                                           # doctest: +SKIP
    True
    """
    from ..store import open_store

    ds = open_store(store)
    try:  # before the long pass: a typo fails at once
        colour = check_label(ds, color_by)
    except EmbstoreError as exc:
        raise EmbstoreError(f"{store}: {exc}") from None
    sc = scan(ds, variable=variable, covariance=report is not None, progress=progress)
    checks = health(sc, source=ds, extreme_factor=extreme_factor)
    stats = summary(sc, source=ds)
    result = InspectResult(str(store), variable, checks, stats, color_by=colour)
    if report is not None:
        from .report import write_report

        result.report = str(write_report(ds, result, sc, report, sample=sample, seed=seed))
    return result

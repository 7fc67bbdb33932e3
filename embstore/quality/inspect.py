"""``embstore inspect``: the checks and statistics of one variable, and optionally the report."""

from __future__ import annotations

import os

import pandas as pd

from .._progress import Progress
from ..errors import EmbstoreError
from ..store.location import StoreLike
from ..store.repo import reads_store
from ..store.variables import stale_reasons
from .stats import EXTREME_FACTOR, InspectResult, check_label, health, scan, summary


@reads_store
def inspect_store(
    store: StoreLike,
    *,
    variable: str = "embedding",
    report: str | os.PathLike[str] | None = None,
    sample: int = 500,
    seed: int = 0,
    color_by: str | None = None,
    extreme_factor: float = EXTREME_FACTOR,
    progress: Progress | None = None,
    version: str | None = None,
    scheduler: str | None = None,
) -> InspectResult:
    """Health checks and statistics over every row of ``variable`` (one lazy pass), and with
    ``report`` a folder of PNGs plus a self-contained ``report.html``. A derived variable whose
    inputs changed since it was computed fails the ``stale`` check.

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
    version
        Inspect an older version (a tag or a version id).
    scheduler
        Run the pass on a dask cluster (``"local:4"`` or a scheduler address); the numbers
        are the same as with the default threads.

    Examples
    --------
    >>> result = embstore.inspect.inspect_store("bv.store", report="bv-report")
    >>> result.passed
    True
    """
    from ..scheduler import dask_scheduler
    from ..store import open_store

    ds = open_store(store, version=version)
    try:  # before the long pass: a typo fails at once
        colour = check_label(ds, color_by)
    except EmbstoreError as exc:
        raise EmbstoreError(f"{store}: {exc}") from None
    with dask_scheduler(scheduler):
        sc = scan(ds, variable=variable, covariance=report is not None, progress=progress)
    checks = health(sc, source=ds, extreme_factor=extreme_factor)
    checks = with_stale_check(checks, stale_reasons(ds, variable, store=store))
    stats = summary(sc, source=ds)
    result = InspectResult(str(store), variable, checks, stats, color_by=colour)
    if report is not None:
        from .report import write_report

        result.report = str(write_report(ds, result, sc, report, sample=sample, seed=seed))
    return result


def with_stale_check(checks: pd.DataFrame, reasons: list[str]) -> pd.DataFrame:
    """``checks`` with a ``stale`` row: failed, with the reasons as examples, when a derived
    variable's inputs changed since it was computed (so ``--strict`` fails on it)."""
    row = {
        "passed": not reasons,
        "count": len(reasons),
        "what": "derived variable whose inputs changed since it was computed",
        "indices": [],
        "examples": list(reasons),
    }
    extra = pd.DataFrame([row], index=pd.Index(["stale"], name=checks.index.name))
    return pd.concat([checks, extra[checks.columns]])

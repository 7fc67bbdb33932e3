"""``embstore inspect``: the checks and statistics of one variable, and optionally the report."""

from __future__ import annotations

import os

from .._progress import Progress
from ..errors import EmbstoreError
from .stats import EXTREME_FACTOR, InspectResult, check_label, health, scan, summary


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

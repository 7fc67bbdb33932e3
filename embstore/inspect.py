"""``embstore.inspect``: the documented spelling of :mod:`embstore.quality` for notebooks.

``embstore.inspect.health(ds)``, ``.summary``, ``.pca``, ``.inspect_store`` and the
``plot_*`` figures (matplotlib is imported only when a picture is asked for).
"""

from __future__ import annotations

from typing import Any

from .quality.inspect import InspectResult, inspect_store
from .quality.stats import (
    EXTREME_FACTOR,
    PCA,
    Scan,
    Summary,
    check_label,
    health,
    labels,
    pca,
    sample_rows,
    scan,
    summary,
    variable_provenance,
)

__all__ = [
    "EXTREME_FACTOR",
    "PCA",
    "InspectResult",
    "Scan",
    "Summary",
    "check_label",
    "health",
    "inspect_store",
    "labels",
    "pca",
    "sample_rows",
    "scan",
    "summary",
    "variable_provenance",
]


def __getattr__(name: str) -> Any:
    """``embstore.inspect.plot_*`` from :mod:`embstore.quality.plots` (imported on first use)."""
    if name.startswith("plot_"):
        from .quality import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

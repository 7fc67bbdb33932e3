"""The whole job on generated data: what ``embstore demo`` (the README's first command) runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._export import ExportReport, export
from ._ingest import IngestReport, ingest
from ._normalize import NormalizeReport, normalize_store
from ._progress import Progress
from .testing.data import make_npy_tree


@dataclass
class DemoResult:
    tree: Path
    files: int
    store: Path
    ingest: IngestReport
    normalize: NormalizeReport
    export: ExportReport


def run_demo(
    directory: str | os.PathLike[str],
    *,
    n_subjects: int = 6,
    n_categories: int = 20,
    ages: range = range(6, 16),
    dim: int = 768,
    progress: Progress | None = None,
) -> DemoResult:
    """Generate ``<dir>/embeddings/<category>/<subject>_<age>_month_level_avg.npy``, ingest it
    into ``<dir>/store``, normalize with the first subject excluded from the statistics,
    and export the normalized vectors to ``<dir>/normalized`` (same relative paths).

    Re-running is safe: existing rows are skipped and the outputs are replaced.
    """
    directory = Path(directory)
    tree, store = directory / "embeddings", directory / "store"
    files = make_npy_tree(
        tree, n_subjects=n_subjects, n_categories=n_categories, ages=ages, dim=dim
    )
    ingested = ingest(
        [tree], store=store, layout="babyview", model="demo-random", progress=progress
    )
    excluded = files[0].name.split("_")[0]
    normalized = normalize_store(
        store, exclude_subjects=[excluded], overwrite=True, progress=progress
    )
    exported = export(
        store,
        directory / "normalized",
        format="npy-tree",
        variable="normalized",
        overwrite=True,
        progress=progress,
    )
    return DemoResult(tree, len(files), store, ingested, normalized, exported)

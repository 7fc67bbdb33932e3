"""Seed 000 end to end on generated data: what ``embstore demo --seed000 DIR`` runs.

Head-camera videos and a YOLOE-like detections table are generated, then the lab's whole
pipeline runs through embstore: object crops embedded with a (tiny, random) DINOv3 ->
mean per category, subject and age-month -> feature-wise normalization with subject 00270001
left out of the statistics -> the notebook's own file tree,
``<category>/<subject>_<age_mo>_month_level_avg.npy``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._aggregate import AggregateReport, aggregate
from ._export import ExportReport, export
from ._normalize import NormalizeReport, normalize_store
from .errors import EmbstoreError
from .extraction.image_extract import ImageExtractConfig, ImageExtractReport, extract_images
from .testing.images import make_headcam_detections, make_tiny_image_model

#: The notebook's file names, as a path template for ``aggregate``.
MONTH_LEVEL_TEMPLATE = "{category}/{subject}_{age_mo}_month_level_avg"
EXCLUDED_SUBJECT = "00270001"


@dataclass
class CropsDemoResult:
    """What :func:`run_seed000_demo` made and did."""

    directory: Path
    detections: Path
    crops_store: Path
    months_store: Path
    normalized: Path
    extract: ImageExtractReport
    aggregate: AggregateReport
    normalize: NormalizeReport
    export: ExportReport


def run_seed000_demo(
    directory: str | os.PathLike[str],
    *,
    subjects: Sequence[str] = ("00270001", "00280001", "00290001", "00300001"),
    ages: Sequence[int] = (8, 9, 10),
    categories: Sequence[str] = ("ball", "cup", "dog", "shoe", "book"),
    checkpoint: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CropsDemoResult:
    """Generate videos and detections under ``directory`` and run seed 000's pipeline on them.

    ``checkpoint`` is a local DINOv3 (or any image model) folder; by default a tiny random
    DINOv3 is saved into ``directory/model``. ``directory`` must be new or empty (the
    month-level store is a new store made from one version of the crops store).
    """
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise EmbstoreError(f"{root}: not empty; the seed-000 demo needs a new folder")
    model = Path(checkpoint) if checkpoint else make_tiny_image_model(root / "model", "dinov3")
    table = make_headcam_detections(root, subjects=subjects, ages=ages, categories=categories)
    crops_store, months_store = root / "crops.store", root / "months.store"
    config = ImageExtractConfig(checkpoint=model, detections=table, batch_size=32)
    extracted = extract_images(root / "videos", store=crops_store, config=config, progress=progress)
    aggregated = aggregate(
        crops_store,
        months_store,
        by=("category", "subject", "age_mo"),
        path_template=MONTH_LEVEL_TEMPLATE,
    )
    normalized = normalize_store(months_store, exclude_subjects=[EXCLUDED_SUBJECT], overwrite=True)
    exported = export(
        months_store,
        root / "normalized",
        format="npy-tree",
        variable="normalized",
        overwrite=True,
    )
    return CropsDemoResult(
        root,
        table,
        crops_store,
        months_store,
        root / "normalized",
        extracted,
        aggregated,
        normalized,
        exported,
    )


__all__ = ["MONTH_LEVEL_TEMPLATE", "CropsDemoResult", "run_seed000_demo"]

"""``extract_images``: images or detection crops -> an image encoder -> rows of a store.

DataLoader workers decode (each video once), cut the crops and run the model's own processor;
the main process runs the encoder on batches and appends the rows through
:func:`embstore.writer` (exactly once by key, commits in whole chunks). A killed run loses
at most the uncommitted rows: re-running the same call embeds only the keys not stored.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset

from ..errors import BadInputError
from ..formats.base import BadRow
from ..store.layout import row_chunk_for_ingest
from ..store.loop import writer
from .crops import Crop, frames_of, image_folder, read_detections
from .images import ImageEncoder

log = logging.getLogger(__name__)

#: Extraction settings that must match for two runs to share a store (they define the numbers).
DEFINING = ("family", "checkpoint_sha256", "architecture", "pooling", "processor", "dtype")


@dataclass
class ImageExtractConfig:
    """How :func:`extract_images` embeds (what ``embstore extract-images`` parses).

    Parameters
    ----------
    checkpoint
        A local Hugging Face folder: weights, ``config.json``, ``preprocessor_config.json``.
    family, pooling, dtype, processor_backend
        See :class:`~embstore.extraction.images.ImageEncoder`.
    detections
        A detections table (CSV or Parquet; see :mod:`embstore.extraction.crops`); its paths
        are relative to the input folder. Without it every image under the folder is
        embedded whole.
    path_column, label_columns, key_columns
        The table's path column (default: ``path``, ``video``, ``image`` or ``file``), the
        columns kept as labels (default: all but path, frame/time and box), and columns
        appended to keys to tell apart rows on the same box.
    pattern
        For a folder of images: a regex whose named groups label each relative path.
    batch_size, num_workers, device
        Crops per forward pass, DataLoader worker processes, ``cuda``/``cpu`` (default: cuda
        when available).
    commit_rows
        Rows per commit (default: one row chunk of the store).
    limit
        Embed at most this many crops (not counting stored ones).
    """

    checkpoint: str | os.PathLike[str]
    family: str | None = None
    pooling: str = "cls"
    dtype: str = "float32"
    processor_backend: str | None = None
    detections: str | os.PathLike[str] | None = None
    path_column: str | None = None
    label_columns: Sequence[str] | None = None
    key_columns: Sequence[str] = ()
    pattern: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    device: str | None = None
    commit_rows: int | None = None
    limit: int | None = None


@dataclass
class ImageExtractReport:
    """What :func:`extract_images` did."""

    store: str
    inputs: int = 0
    added: int = 0
    already_stored: int = 0
    bad: list[BadRow] = field(default_factory=list)
    crops: int = 0
    seconds: float = 0.0
    rows: int = 0

    def summary(self) -> str:
        rate = self.crops / self.seconds if self.seconds else 0.0
        text = (
            f"embedded {self.added} of {self.inputs} crops ({rate:.1f} crops/s); "
            f"{self.already_stored} already stored"
        )
        return (
            text
            + (f", {len(self.bad)} bad (skipped)" if self.bad else "")
            + f"; store has {self.rows}"
        )


class CropStream(IterableDataset[dict[str, Any]]):
    """Yields batches of processed crops: ``{"keys", "labels", "pixels", "bad"}``.

    Runs in DataLoader workers (an iterable dataset): worker ``i`` of ``n`` takes every
    ``n``-th media file, decodes it once, cuts its crops and runs ``processor`` on them.
    """

    def __init__(self, root: Path, crops: Sequence[Crop], processor: Any, batch: int) -> None:
        groups: dict[str, list[Crop]] = defaultdict(list)
        for crop in crops:
            groups[crop.media].append(crop)
        self.root, self.media, self.processor, self.batch = (
            root,
            list(groups.items()),
            processor,
            batch,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        mine = self.media if info is None else self.media[info.id :: info.num_workers]
        pending: list[tuple[Crop, Any]] = []
        bad: list[tuple[str, str]] = []
        for media, crops in mine:
            for crop, pixels in frames_of(self.root / media, crops):
                if isinstance(pixels, str):
                    bad.append((crop.key, pixels))
                    continue
                pending.append((crop, pixels))
                if len(pending) >= self.batch:
                    yield self._batch(pending, bad)
                    pending, bad = [], []
        if pending or bad:
            yield self._batch(pending, bad)

    def _batch(self, pending: list[tuple[Crop, Any]], bad: list[tuple[str, str]]) -> dict[str, Any]:
        from PIL import Image

        images = [Image.fromarray(pixels) for _, pixels in pending]
        crops = [crop for crop, _ in pending]
        names = sorted({name for crop in crops for name in crop.labels})
        return {
            "keys": [crop.key for crop in crops],
            "labels": {name: [crop.labels.get(name) for crop in crops] for name in names},
            "pixels": self.processor(images=images, return_tensors="pt")["pixel_values"]
            if images
            else None,
            "bad": bad,
        }


def extract_images(
    input: str | os.PathLike[str],  # noqa: A002 - mirrors the CLI
    *,
    store: str | os.PathLike[str],
    config: ImageExtractConfig,
    progress: Callable[[int, int], None] | None = None,
) -> ImageExtractReport:
    """Embed every image under ``input``, or every crop of ``config.detections``, into ``store``.

    The store (created if missing) records the encoder's description (model, checkpoint
    sha256, processor class, backend and settings, pooling, dtype) once, and refuses a run
    with other numbers; each run's provenance entry names the detections table and its sha256.
    Bad rows (an unreadable video, a frame past the end, an empty box) are skipped and listed.

    Examples
    --------
    ``dinov3/`` is a tiny random DINOv3 here; a real one is a local copy of e.g.
    ``facebook/dinov3-vitb16-pretrain-lvd1689m``. The table's videos are relative to ``videos/``.

    >>> cfg = ImageExtractConfig(checkpoint="dinov3", detections="detections.csv")
    >>> embstore.extract_images("videos/", store="crops.store", config=cfg).summary()
    'embedded 4 of 4 crops (... crops/s); 0 already stored; store has 4'
    >>> crops = embstore.open("crops.store")
    >>> crops.path.values[0], crops.category.values[0], crops.embedding.shape
    ('00270001/00270001_12mo_0.mp4#f000000#44,22,58,35', 'ball', (4, 32))
    """
    import torch

    from .pipeline import pick_device

    root = Path(input)
    if not root.is_dir():
        raise BadInputError(str(root), "not a folder")
    device = pick_device(config.device)
    crops, info = _plan(root, config)
    encoder = ImageEncoder(
        Path(config.checkpoint),
        family=config.family,
        pooling=config.pooling,
        device=device,
        dtype=config.dtype,
        processor_backend=config.processor_backend,
    )
    description = encoder.describe()
    report = ImageExtractReport(store=str(store), inputs=len(crops))
    start = time.perf_counter()
    # A new store's row chunk fits this run's rows (its first commit, as ingest's): 4 crops
    # do not get a 16 MiB chunk; commits still end on chunk edges (no partial chunk rewritten).
    planned = min(len(crops), config.limit if config.limit is not None else len(crops))
    with writer(
        store,
        feature_size=encoder.dim,
        model=encoder.name,
        action="extract",
        batch_rows=config.commit_rows,
        row_chunk=row_chunk_for_ingest(encoder.dim, min(planned, config.commit_rows or planned)),
        info=info,
    ) as w:
        w.claim("extraction", description, defining=DEFINING)
        todo = [crop for crop in crops if not w.contains(crop.key)]
        report.already_stored = len(crops) - len(todo)
        todo = todo[: config.limit] if config.limit is not None else todo
        stream = CropStream(root, todo, encoder.processor, config.batch_size)
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=config.num_workers, worker_init_fn=_one_thread
        )
        for batch in loader:
            report.bad += [
                BadRow(str(root / key.split("#")[0]), f"{key}: {why}") for key, why in batch["bad"]
            ]
            if batch["keys"]:
                vectors = encoder.embed(batch["pixels"])
                w.append(batch["keys"], vectors, labels=batch["labels"])
                report.crops += len(batch["keys"])
            if progress is not None:
                progress(report.crops + len(report.bad), len(todo))
        w.notes.update(
            bad_count=len(report.bad), bad=[str(b) for b in report.bad[:100]], crops=report.crops
        )
    report.added, report.rows = w.report.added, w.report.rows
    report.already_stored += w.report.already_stored
    report.seconds = time.perf_counter() - start
    for row in report.bad:
        log.warning("skipped %s", row)
    return report


def _plan(root: Path, config: ImageExtractConfig) -> tuple[list[Crop], dict[str, Any]]:
    """The crops to embed and the run's provenance fields (the table and its digest)."""
    info: dict[str, Any] = {"input": str(root), "pooling": config.pooling}
    if config.detections is None:
        crops = image_folder(root, pattern=config.pattern)
        info["sources"] = [str(root)]
        return crops, info
    table = read_detections(
        config.detections,
        path_column=config.path_column,
        label_columns=config.label_columns,
        key_columns=config.key_columns,
    )
    info["sources"] = [table.source]
    info["detections"] = {"path": table.source, "sha256": table.digest, "rows": len(table.crops)}
    return table.crops, info


def _one_thread(_: int) -> None:
    """One thread per DataLoader worker: the workers are the parallelism."""
    import torch

    torch.set_num_threads(1)


__all__ = ["CropStream", "ImageExtractConfig", "ImageExtractReport", "extract_images"]

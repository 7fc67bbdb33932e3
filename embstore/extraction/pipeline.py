"""Extraction: echo DICOMs and videos -> frozen encoder -> embeddings committed to the store.

Decoding and preprocessing run in DataLoader worker processes; inference runs batched under
``torch.inference_mode()`` (bf16 autocast on CUDA, float32 on CPU); embeddings are committed
every ``commit_every`` videos. A killed run loses at most the uncommitted videos: re-running
the same command skips every committed path. ``shard=(i, n)`` splits the inputs by a stable
hash of their paths, so ``n`` processes (a SLURM array) can fill one store at once.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dicom import SingleFrameError, check_keywords, is_dicom, read_dicom_frames
from .errors import BadInputError, EmbstoreError
from .extractors import REGISTRY
from .labels import get_layout
from .paths import walk_files
from .sources import BadRow
from .video import VIDEO_SUFFIXES, ClipSpec, clip_indices, normalize_clips, read_video
from .writer import StoreWriter

log = logging.getLogger(__name__)

#: Extraction settings that must match for two runs to share a store (they define the numbers).
DEFINING = (
    "family",
    "checkpoint_sha256",
    "checkpoint_key",
    "architecture",
    "pooling",
    "dtype",
    "clip",
)


@dataclass
class ExtractReport:
    """What :func:`extract` did."""

    store: str
    inputs: int = 0
    added: int = 0
    already_stored: int = 0
    stills: list[str] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0
    rows: int = 0

    def summary(self) -> str:
        rate = self.clips / self.seconds if self.seconds else 0.0
        text = (
            f"embedded {self.added} of {self.inputs} inputs "
            f"({self.clips} clips, {rate:.1f} clips/s); "
            f"{self.already_stored} already stored, {len(self.stills)} single-frame stills skipped"
        )
        return (
            text
            + (f", {len(self.bad)} bad (skipped)" if self.bad else "")
            + f"; store has {self.rows}"
        )


def list_inputs(root: Path) -> list[str]:
    """Relative paths of every DICOM (by suffix or preamble) and video under ``root``, sorted."""
    return walk_files(
        root, lambda path: Path(path).suffix.lower() in VIDEO_SUFFIXES or is_dicom(path)
    )


def pick_device(device: str | None) -> str:
    """`None` -> `cuda` when available, else `cpu`; asking for CUDA without one is an error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmbstoreError(f"--device {device}: no CUDA device here (use --device cpu)")
    return device


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BadInputError("--shard", f"expected I/N (e.g. 0/10), got {text!r}") from None
    if not 0 <= index < count:
        raise BadInputError("--shard", f"need 0 <= I < N, got {text!r}")
    return index, count


def shard_of(path: str, count: int) -> int:
    """The shard a path belongs to: a stable hash, the same in every process and run."""
    return zlib.crc32(path.encode("utf-8")) % count


class VideoDataset:
    """Decodes and preprocesses one input per item (runs in DataLoader workers)."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        spec: ClipSpec,
        keywords: Sequence[str],
        *,
        preprocess: bool = True,
    ) -> None:
        self.root, self.paths, self.spec, self.keywords = root, list(paths), spec, list(keywords)
        self.preprocess = preprocess  # False: hand back the clips' uint8 frames for the device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        rel = self.paths[i]
        file = self.root / rel
        item: dict[str, Any] = {
            "path": rel,
            "clips": None,
            "labels": {},
            "still": False,
            "problem": None,
        }
        select = functools.partial(_clip_frames, spec=self.spec)  # decode only the clips' frames
        try:
            if is_dicom(file):
                frames, _, item["labels"] = read_dicom_frames(
                    file, keywords=self.keywords, select=select
                )
            else:
                frames, _ = read_video(file, select=select)
                item["labels"] = dict.fromkeys(self.keywords, "")
            item["clips"] = (
                normalize_clips(frames, self.spec) if self.preprocess else torch.from_numpy(frames)
            )
        except SingleFrameError:
            item["still"] = True
        except BadInputError as exc:
            item["problem"] = exc.problem
        except Exception as exc:  # a decoder crash on one file must not end the run
            item["problem"] = f"{type(exc).__name__}: {exc}"
        return item


def _clip_frames(n_frames: int, spec: ClipSpec) -> np.ndarray:
    return clip_indices(n_frames, spec).ravel()


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the clips of the decodable items; keep stills and failures aside."""
    import torch

    good = [it for it in items if it["clips"] is not None]
    ready = bool(good) and good[0]["clips"].dtype != torch.uint8  # preprocessed in the worker
    return {
        "paths": [it["path"] for it in good],
        "labels": [it["labels"] for it in good],
        "clips": torch.cat([it["clips"] for it in good]) if ready else [it["clips"] for it in good],
        "stills": [it["path"] for it in items if it["still"]],
        "bad": [(it["path"], it["problem"]) for it in items if it["problem"]],
    }


def extract(
    input: str | os.PathLike[str],  # noqa: A002 - mirrors the CLI
    *,
    store: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    model: str | None = None,
    family: str = "vjepa2",
    checkpoint_key: str = "target_encoder",
    num_frames: int = 16,
    frame_step: int = 4,
    clips: int = 1,
    batch_size: int = 8,
    num_workers: int = 4,
    device: str | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    layout: str | None = None,
    dicom_tags: Sequence[str] = (),
    commit_every: int = 256,
    preprocess_on: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractReport:
    """Embed every DICOM and video under ``input`` into ``store``, resumable and shardable.

    Parameters are those of ``embstore extract``; ``shard=(i, n)`` keeps the inputs whose
    stable path hash falls in shard ``i`` of ``n``. Only the DICOM header fields named in
    ``dicom_tags`` are stored (as labels); nothing else from a header reaches the store.
    ``preprocess_on`` is ``"workers"`` (resize in the DataLoader workers; default on CPU) or
    ``"device"`` (workers only decode, resizing runs on the GPU; default on CUDA).
    """
    import torch

    root = Path(input)
    if not root.is_dir():
        raise BadInputError(str(root), "not a folder")
    device = pick_device(device)
    resolved = get_layout(layout)
    keywords = check_keywords(dicom_tags)
    if family not in REGISTRY:
        raise EmbstoreError(f"unknown model family {family!r} (have: {', '.join(REGISTRY)})")
    paths = list_inputs(root)
    if shard is not None:
        paths = [p for p in paths if shard_of(p, shard[1]) == shard[0]]
    extractor = REGISTRY[family](
        checkpoint=str(checkpoint), model=model, checkpoint_key=checkpoint_key, device=device
    )
    spec = ClipSpec(num_frames=num_frames, frame_step=frame_step, clips=clips, crop=extractor.crop)
    description = {**extractor.describe(), "clip": asdict(spec)}
    writer = StoreWriter(store, feature_size=extractor.dim, model=description["model"])
    writer.claim("extraction", description, defining=DEFINING)
    report = ExtractReport(store=str(store), inputs=len(paths))
    todo = [p for p in paths if not writer.contains(p)]
    report.already_stored = len(paths) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    writer.start_run(
        "extract", input=str(root), shard=list(shard) if shard else None, model=description["model"]
    )
    on_device = (
        preprocess_on or ("device" if device.startswith("cuda") else "workers")
    ) == "device"
    loader = torch.utils.data.DataLoader(
        VideoDataset(root, todo, spec, keywords, preprocess=not on_device),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.startswith("cuda"),
    )
    pending: dict[str, list[Any]] = {"paths": [], "vectors": [], "labels": []}

    def commit() -> None:
        if not pending["paths"]:
            return
        columns = _label_columns(pending["paths"], pending["labels"], resolved, report)
        keep = [p for p in pending["paths"] if p not in columns["_bad"]]
        vectors = (
            np.stack(
                [
                    v
                    for p, v in zip(pending["paths"], pending["vectors"], strict=True)
                    if p not in columns["_bad"]
                ]
            )
            if keep
            else None
        )
        del columns["_bad"]
        if keep:
            result = writer.append(keep, vectors, columns)
            report.added += result.added
            report.already_stored += len(result.duplicates)
            report.rows = result.rows
        for key in pending:
            pending[key] = []

    start = time.perf_counter()
    done = 0
    try:
        for batch in loader:
            report.stills += batch["stills"]
            report.bad += [BadRow(str(root / p), problem) for p, problem in batch["bad"]]
            if batch["paths"]:
                clips = batch["clips"]
                if isinstance(clips, list):  # uint8 frames: preprocess on the device
                    device_clips = [
                        normalize_clips(f, spec, device=extractor.device) for f in clips
                    ]
                    clips = torch.cat(device_clips)
                embeddings = extractor.embed(clips).cpu().numpy()
                offsets = np.arange(len(batch["paths"]) + 1) * spec.clips
                for i, path in enumerate(batch["paths"]):
                    pending["paths"].append(path)
                    pending["vectors"].append(embeddings[offsets[i] : offsets[i + 1]].mean(axis=0))
                    pending["labels"].append(batch["labels"][i])
                report.clips += int(offsets[-1])
            if len(pending["paths"]) >= commit_every:
                commit()
            done += len(batch["paths"]) + len(batch["stills"]) + len(batch["bad"])
            if progress:  # in clips, so a progress bar's rate reads clips/s
                progress(done * spec.clips, len(todo) * spec.clips)
        commit()
    except BaseException as exc:
        writer.finish_run("failed", error=str(exc) or type(exc).__name__)
        raise
    report.seconds = time.perf_counter() - start
    report.rows = writer.rows
    writer.finish_run(
        "complete",
        added=report.added,
        stills=len(report.stills),
        bad_count=len(report.bad),
        bad=[str(b) for b in report.bad[:100]],
        clips=report.clips,
        seconds=round(report.seconds, 3),
    )
    for row in report.bad:
        log.warning("skipped %s", row)
    return report


def _label_columns(
    paths: list[str], header: list[dict[str, str]], layout: Any, report: ExtractReport
) -> dict[str, Any]:
    """Layout labels plus allow-listed header labels; rows the layout can't parse go to ``_bad``."""
    columns: dict[str, Any] = {}
    bad: set[str] = set()
    if layout is not None:
        parsed, failed = layout.parse_columns(paths)
        for i, problem in failed.items():
            bad.add(paths[i])
            report.bad.append(BadRow(paths[i], problem))
        keep = [i for i in range(len(paths)) if i not in failed]
        columns.update({k: [v[i] for i in keep] for k, v in parsed.items()})
    else:
        keep = list(range(len(paths)))
    for key in header[0] if header else {}:
        columns[key] = [header[i][key] for i in keep]
    columns["_bad"] = bad
    return columns

"""The inputs of an extraction run, the per-item work done in DataLoader workers, and the
DataLoader itself.

A worker decodes only the frames its clips use and resizes them to small uint8 crops (the
encoder's :class:`~embstore.extraction.preprocess.ClipSpec`); normalizing to float happens on
the model's device, so what crosses processes (and pinned memory) is 4x smaller than float32.
With the GPU decoder (:mod:`.gpu`) a worker hands over JPEG bytes or a video's path instead.

The loader (:func:`make_loader`) is safe to start after the parent decoded a clip itself
(OpenCV's thread pool does not survive ``fork``: workers never use it), caps its workers to
the CPUs this process may use (one line says so), and sends the workers' warnings to the log
(``--debug``) instead of the terminal.
"""

from __future__ import annotations

import logging
import os
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._fs import walk_files
from ..errors import BadInputError
from .decode import SingleFrameError, is_dicom, is_video, read_dicom_jpeg, read_frames
from .preprocess import ClipSpec

log = logging.getLogger(__name__)


def list_inputs(root: Path) -> list[str]:
    """Relative paths of every DICOM (by suffix or preamble) and video under ``root``, sorted."""
    return walk_files(root, lambda path: is_video(path) or is_dicom(path))


def shard_of(path: str, count: int) -> int:
    """The shard a path belongs to: a stable hash, the same in every process and run."""
    return zlib.crc32(path.encode("utf-8")) % count


class VideoDataset:
    """Decodes one input per item and resizes its clips' frames (runs in DataLoader workers).

    An item is a dict: ``path``, ``clips`` (a tensor of ``clips * num_frames`` crops, or None),
    ``labels`` (allow-listed DICOM header values), ``still`` and ``problem`` (the kind of
    failure, never a header value). With ``decoder="gpu"`` a JPEG Baseline cine gives ``jpeg``
    (its wanted frames' bytes and their order) and a video ``video=True`` (decoded on the GPU
    when ``nvdec``) instead of ``clips``.
    """

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        spec: ClipSpec,
        keywords: Sequence[str],
        *,
        decoder: str = "cpu",
        nvdec: bool = False,
    ) -> None:
        self.root, self.paths, self.spec, self.keywords = root, list(paths), spec, list(keywords)
        self.decoder, self.nvdec = decoder, nvdec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rel = self.paths[i]
        item: dict[str, Any] = {"path": rel, "clips": None, "labels": {}, "still": False}
        item.update(problem=None, jpeg=None, video=False)
        try:
            self._fill(item, self.root / rel)
        except SingleFrameError:
            item["still"] = True
        except BadInputError as exc:
            item["problem"] = exc.problem
        except Exception as exc:  # noqa: BLE001 - one file's crash must not end the run
            item["problem"] = f"cannot decode ({type(exc).__name__})"  # texts may quote headers
        return item

    def _fill(self, item: dict[str, Any], path: Path) -> None:
        import torch

        if self.decoder == "gpu":
            if is_dicom(path):
                found = read_dicom_jpeg(path, keywords=self.keywords, select=self._frames_wanted)
                if found is not None:
                    item["jpeg"], item["labels"] = found[:2], found[2]
                    return
            elif self.nvdec:
                item["video"], item["labels"] = True, dict.fromkeys(self.keywords, "")
                return
        frames, item["labels"] = read_frames(
            path, keywords=self.keywords, select=self._frames_wanted
        )
        item["clips"] = torch.from_numpy(np.asarray(self.spec.resize_frames(frames)))

    def _frames_wanted(self, n_frames: int) -> np.ndarray:
        return self.spec.indices(n_frames).ravel()


def _log_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    first = str(message).strip().splitlines()[0] if str(message).strip() else ""
    log.debug("warning (%s): %s", category.__name__, first)


@contextmanager
def warnings_to_log() -> Iterator[None]:
    """Within the block, warnings go to this module's log (shown with ``--debug``), one line
    each, instead of to the terminal."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _log_warning
        yield


def init_worker(_: int) -> None:
    """Set up a DataLoader worker: one thread each (the workers are the parallelism), and the
    warnings to the log. OpenCV runs sequentially (``setNumThreads(0)``), never touching the
    thread pool a parent that used OpenCV before forking left behind in a broken state (with
    ``setNumThreads(1)`` or more, such a worker hangs or crashes)."""
    import cv2
    import torch

    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    warnings.showwarning = _log_warning


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cap_workers(requested: int) -> int:
    """``requested`` DataLoader workers, at most the CPUs available; a line says when capped."""
    cpus = available_cpus()
    if requested > cpus:
        log.warning("num_workers=%d capped to %d, the CPUs available", requested, cpus)
        return cpus
    return requested


def make_loader(
    dataset: VideoDataset, *, batch_size: int, num_workers: int, pin_memory: bool
) -> Any:
    """The DataLoader of an extraction run (see the module docstring); with workers, each
    keeps a few batches ready (pinned when ``pin_memory``)."""
    import torch

    workers = cap_workers(num_workers)
    options: dict[str, Any] = {}
    if workers:
        options.update(
            prefetch_factor=max(2, -(-8 // workers)),  # >= 8 batches ready, 2 per worker
            worker_init_fn=init_worker,
        )
    return torch.utils.data.DataLoader(
        cast(Any, dataset),  # map-style (len + getitem) without subclassing torch's Dataset
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **options,
    )


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the crops of the decodable items; keep stills and failures aside. When some items
    are to be decoded on the GPU, ``clips`` is None and ``items`` holds each item's payload
    (``("crops", tensor)``, ``("jpeg", (bytes, order))`` or ``("video", path)``), in order."""
    import torch

    good = [it for it in items if it["clips"] is not None or it["jpeg"] is not None or it["video"]]
    on_cpu = all(it["clips"] is not None for it in good)
    return {
        "paths": [it["path"] for it in good],
        "labels": [it["labels"] for it in good],
        "clips": torch.stack([it["clips"] for it in good]) if good and on_cpu else None,
        "items": None if on_cpu else [_payload(it) for it in good],
        "stills": [it["path"] for it in items if it["still"]],
        "bad": [(it["path"], it["problem"]) for it in items if it["problem"]],
    }


def _payload(item: dict[str, Any]) -> tuple[str, Any]:
    if item["clips"] is not None:
        return ("crops", item["clips"])
    if item["jpeg"] is not None:
        return ("jpeg", item["jpeg"])
    return ("video", item["path"])

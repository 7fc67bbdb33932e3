"""The inputs of an extraction run and the per-item work done in DataLoader workers.

A worker decodes only the frames its clips use and resizes them to small uint8 crops (the
encoder's :class:`~embstore.extraction.preprocess.ClipSpec`); normalizing to float happens on
the model's device, so what crosses processes (and pinned memory) is 4x smaller than float32.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import walk_files
from ..errors import BadInputError
from .decode import SingleFrameError, is_dicom, is_video, read_frames
from .preprocess import ClipSpec


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
    failure, never a header value).
    """

    def __init__(
        self, root: Path, paths: Sequence[str], spec: ClipSpec, keywords: Sequence[str]
    ) -> None:
        self.root, self.paths, self.spec, self.keywords = root, list(paths), spec, list(keywords)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        rel = self.paths[i]
        item: dict[str, Any] = {"path": rel, "clips": None, "labels": {}, "still": False}
        item["problem"] = None
        try:
            frames, item["labels"] = read_frames(
                self.root / rel, keywords=self.keywords, select=self._frames_wanted
            )
            item["clips"] = torch.from_numpy(np.asarray(self.spec.resize_frames(frames)))
        except SingleFrameError:
            item["still"] = True
        except BadInputError as exc:
            item["problem"] = exc.problem
        except Exception as exc:  # noqa: BLE001 - one file's crash must not end the run
            item["problem"] = f"cannot decode ({type(exc).__name__})"  # texts may quote headers
        return item

    def _frames_wanted(self, n_frames: int) -> np.ndarray:
        return self.spec.indices(n_frames).ravel()


def init_worker(_: int) -> None:
    """One thread per DataLoader worker: the workers are the parallelism (OpenCV would
    otherwise start a thread per core in every worker)."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the crops of the decodable items; keep stills and failures aside."""
    import torch

    good = [it for it in items if it["clips"] is not None]
    return {
        "paths": [it["path"] for it in good],
        "labels": [it["labels"] for it in good],
        "clips": torch.stack([it["clips"] for it in good]) if good else None,
        "stills": [it["path"] for it in items if it["still"]],
        "bad": [(it["path"], it["problem"]) for it in items if it["problem"]],
    }

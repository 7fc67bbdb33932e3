"""Video decoding (PyAV) and the clip preprocessing of V-JEPA2's frozen evaluation."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadInputError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_video(
    path: str | os.PathLike[str], *, select: Callable[[int], np.ndarray] | None = None
) -> tuple[np.ndarray, float]:
    """Frames ``(T, H, W, 3)`` uint8 RGB and the frame rate, decoded with threads.

    ``select(n_frames)`` may name the frames wanted: every frame is decoded (video is
    sequential) but only those are converted to RGB.
    """
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 30)
            decoded = list(container.decode(stream))
            wanted = range(len(decoded)) if select is None else np.asarray(select(len(decoded)))
            frames = [decoded[i].to_ndarray(format="rgb24") for i in wanted] if decoded else []
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise BadInputError(str(path), f"cannot decode video ({exc})") from exc
    if not frames:
        raise BadInputError(str(path), "video has no frames")
    return np.stack(frames), fps


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video and prepared for the encoder.

    ``num_frames`` frames ``frame_step`` apart make a clip; ``clips`` clips are spread evenly
    over the video (one clip: centred). A video shorter than a clip's span is padded by
    repeating its last frame. Frames are resized so the short side is ``crop * 256 / 224``,
    centre-cropped to ``crop`` x ``crop``, scaled to [0, 1] and normalized with the ImageNet
    mean/std, as in V-JEPA2's frozen evaluation.
    """

    num_frames: int = 16
    frame_step: int = 4
    clips: int = 1
    crop: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if min(self.num_frames, self.frame_step, self.clips, self.crop) < 1:
            raise BadInputError("clip settings", f"must all be positive: {self}")


def clip_indices(n_frames: int, spec: ClipSpec) -> np.ndarray:
    """Frame indices ``(clips, num_frames)``; indices past the end repeat the last frame."""
    span = (spec.num_frames - 1) * spec.frame_step + 1
    room = max(0, n_frames - span)
    if spec.clips == 1:
        starts = np.array([room // 2])
    else:
        starts = np.linspace(0, room, spec.clips).round().astype(int)
    indices = starts[:, None] + np.arange(spec.num_frames)[None, :] * spec.frame_step
    return np.minimum(indices, n_frames - 1)


def preprocess(frames: np.ndarray, spec: ClipSpec):  # noqa: ANN201 - torch.Tensor
    """All frames `(T, H, W, 3)` uint8 -> float32 tensor `(clips, num_frames, 3, crop, crop)`."""
    return normalize_clips(frames[clip_indices(len(frames), spec).ravel()], spec)


def normalize_clips(selected: Any, spec: ClipSpec, *, device: Any = None):  # noqa: ANN201 - Tensor
    """Frames already picked by :func:`clip_indices` (``clips * num_frames`` of them; numpy or
    uint8 tensor) -> the float32 tensor ``(clips, num_frames, 3, crop, crop)`` the encoder
    takes, computed on ``device`` (resizing on the GPU keeps CPU workers to decoding)."""
    import torch
    import torch.nn.functional as F

    x = (
        selected
        if isinstance(selected, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(selected))
    )
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    height, width = x.shape[-2:]
    short = int(spec.crop * 256 / 224)
    scale = short / min(height, width)
    size = (max(spec.crop, round(height * scale)), max(spec.crop, round(width * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - spec.crop) // 2, (size[1] - spec.crop) // 2
    x = x[..., top : top + spec.crop, left : left + spec.crop] / 255.0
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.reshape(spec.clips, spec.num_frames, 3, spec.crop, spec.crop).contiguous()

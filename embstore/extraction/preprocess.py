"""V-JEPA2's frozen-evaluation preprocessing: which frames make a clip, and how they are sized.

Two rules each, named so a store records which one made its numbers:

- ``sampling="upstream"`` (default) picks frame indices as facebookresearch/vjepa2's
  ``VideoDataset.loadvideo_decord`` does with ``random_clip_sampling=False`` and
  ``allow_clip_overlap=True`` (the frozen evaluation's setting); ``"centered"`` is embstore's
  earlier rule (one clip centred in the video, ``frame_step`` apart, the last frame repeated).
- ``resize="upstream"`` (default) is its eval transform on uint8 frames: OpenCV
  ``INTER_LINEAR`` resize of the short side to ``int(crop * 256 / 224)`` (the long side
  truncated as upstream's ``get_resize_sizes`` does), a centre crop at
  ``round((size - crop) / 2)`` (Python's round), then ``/255`` and the ImageNet mean/std in
  float32. ``"antialias"`` is embstore's earlier rule (torch bilinear with antialiasing, sizes
  rounded, crop offset floored), kept so stores made with it can grow.

The work is split in two: :meth:`ClipSpec.resize` runs in the DataLoader workers and hands
back small uint8 crops; :meth:`ClipSpec.normalize` runs on the model's device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import BadInputError
from .config import RESIZES, SAMPLINGS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video and prepared for the encoder.

    ``num_frames`` frames ``frame_step`` apart make a clip; ``clips`` clips per video (their
    embeddings are averaged). ``sampling`` and ``resize`` name the rules (module docstring).
    """

    num_frames: int = 16
    frame_step: int = 4
    clips: int = 1
    crop: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sampling: str = "upstream"
    resize: str = "upstream"

    def __post_init__(self) -> None:
        if min(self.num_frames, self.frame_step, self.clips, self.crop) < 1:
            raise BadInputError("clip settings", f"must all be positive: {self}")
        if self.sampling not in SAMPLINGS:
            raise BadInputError("sampling", f"{self.sampling!r} is not one of {SAMPLINGS}")
        if self.resize not in RESIZES:
            raise BadInputError("resize", f"{self.resize!r} is not one of {RESIZES}")

    def geometry(self) -> dict[str, Any]:
        """The clip fields stores have always recorded under ``clip`` (without the rules)."""
        return {k: v for k, v in asdict(self).items() if k not in ("sampling", "resize")}

    def indices(self, n_frames: int) -> np.ndarray:
        """Frame indices ``(clips, num_frames)`` of a video of ``n_frames`` frames."""
        if self.sampling == "upstream":
            return upstream_indices(n_frames, self.num_frames, self.frame_step, self.clips)
        return centered_indices(n_frames, self.num_frames, self.frame_step, self.clips)

    def resize_frames(self, frames: np.ndarray) -> Any:
        """Picked frames ``(N, H, W, 3)`` uint8 -> crops ``(N, crop, crop, 3)``: uint8 for
        ``resize="upstream"``, float32 in [0, 255] for ``"antialias"``."""
        if self.resize == "upstream":
            return upstream_resize(frames, self.crop)
        return antialias_resize(frames, self.crop)

    def normalize(self, crops: Any, *, device: Any = None) -> Any:
        """Crops from :meth:`resize_frames` (a tensor, any leading shape) -> float32
        ``(clips, num_frames, 3, crop, crop)`` on ``device``, ``(x / 255 - mean) / std``."""
        import torch

        x = torch.as_tensor(crops).to(device, non_blocking=True)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device)
        if x.dtype == torch.uint8:  # upstream: float64 /255, then float32 (a 256-entry table)
            scaled = torch.from_numpy(np.arange(256) / 255.0).float().to(x.device)
            table = (scaled[None, :] - mean[:, None]) / std[:, None]  # (3, 256)
            planes = x.reshape(-1, self.crop, self.crop, 3).permute(0, 3, 1, 2).contiguous()
            out = torch.empty(planes.shape, dtype=torch.float32, device=x.device)
            for c in range(3):  # int32 indices: ~4x faster than a stacked int64 gather on CPU
                out[:, c] = table[c][planes[:, c].int()]
        else:
            out = (x.reshape(-1, 3) / 255.0 - mean) / std
            out = out.reshape(-1, self.crop, self.crop, 3).permute(0, 3, 1, 2)
        return out.reshape(-1, self.num_frames, 3, self.crop, self.crop).contiguous()


def upstream_indices(n_frames: int, fpc: int, step: int, clips: int) -> np.ndarray:
    """Frame indices ``(clips, fpc)`` as upstream's non-random sampling with clip overlap.

    A video longer than ``clips * fpc * step`` frames gives each clip the start of its own
    partition and ``linspace(0, clip_len, fpc)`` (truncated, at most ``clip_len - 1``); a
    shorter one spreads ``(sample_len // step)`` frames over ``linspace(0, sample_len)``
    (``sample_len = min(clip_len, n_frames) - 1``, at most ``sample_len - 1``) and pads with
    ``sample_len - 1``, clips starting ``(n_frames - clip_len) // (clips - 1)`` apart.
    """
    if n_frames < clips:
        raise BadInputError("clips", f"{n_frames} frames cannot make {clips} clips")
    clip_len = fpc * step
    partition = n_frames // clips
    rows = []
    for i in range(clips):
        picked: np.ndarray
        if partition > clip_len:
            spaced = np.linspace(0, clip_len, num=fpc)
            picked = np.clip(spaced, 0, clip_len - 1).astype(np.int64) + i * partition
        else:
            sample_len = min(clip_len, n_frames) - 1
            spread = sample_len // step
            spaced = np.concatenate(
                (np.linspace(0, sample_len, num=spread), np.full(fpc - spread, sample_len))
            )
            picked = np.clip(spaced, 0, sample_len - 1).astype(np.int64)
            if n_frames > clip_len:
                picked = picked + i * ((n_frames - clip_len) // (clips - 1))
        rows.append(np.clip(picked, 0, n_frames - 1))  # a 1-frame video: upstream's -1 is 0
    return np.stack(rows)


def centered_indices(n_frames: int, fpc: int, step: int, clips: int) -> np.ndarray:
    """embstore's earlier rule: clips spread evenly (one clip: centred), the last frame
    repeated past the end."""
    span = (fpc - 1) * step + 1
    room = max(0, n_frames - span)
    starts = np.array([room // 2]) if clips == 1 else np.linspace(0, room, clips).round()
    indices = starts.astype(int)[:, None] + np.arange(fpc)[None, :] * step
    return np.minimum(indices, n_frames - 1)


def upstream_size(height: int, width: int, short: int) -> tuple[int, int]:
    """Upstream's ``get_resize_sizes``: the short side becomes ``short``, the long side
    ``int(short * long / short_side)`` (truncated)."""
    if width < height:
        return int(short * height / width), short
    return short, int(short * width / height)


def upstream_resize(frames: np.ndarray, crop: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, crop, crop, 3)`` uint8: OpenCV bilinear, centre crop."""
    import cv2

    short = int(crop * 256 / 224)
    height, width = frames.shape[1:3]
    if min(height, width) < 1:
        raise BadInputError("frames", f"empty frames {frames.shape}")
    if min(height, width) != short:  # upstream leaves frames whose short side fits alone
        new_h, new_w = upstream_size(height, width, short)
        out = np.empty((len(frames), new_h, new_w, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            cv2.resize(frame, (new_w, new_h), dst=out[i], interpolation=cv2.INTER_LINEAR)
        frames, height, width = out, new_h, new_w
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return np.ascontiguousarray(frames[:, top : top + crop, left : left + crop])


def antialias_resize(frames: np.ndarray, crop: int) -> Any:
    """embstore's earlier rule: torch bilinear with antialiasing, float32 in [0, 255]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    height, width = x.shape[-2:]
    short = int(crop * 256 / 224)
    scale = short / min(height, width)
    size = (max(crop, round(height * scale)), max(crop, round(width * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    return x[..., top : top + crop, left : left + crop].permute(0, 2, 3, 1).contiguous()

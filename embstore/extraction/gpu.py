"""The GPU paths of extraction: choosing them, and decoding frames on the GPU.

With ``decoder="gpu"`` the DataLoader workers only read bytes and parse headers: a JPEG
Baseline DICOM (the usual echo transfer syntax) hands over its wanted frames' compressed bytes
(:func:`jpeg_frames`), which the main process decodes in one batch on the GPU's JPEG engines
(``torchvision.io.decode_jpeg(..., device="cuda")``, nvJPEG); a video hands over its path and is
decoded by NVDEC (``torchcodec``). Upstream's resize and centre crop then run on the GPU in
torch (:func:`resize_on_device`), and the normalization as on the CPU path. Anything else
(uncompressed or other compressed DICOMs, and videos without torchcodec) is decoded and
resized on the CPU in the workers, as with ``decoder="cpu"``.

The GPU libraries are imported only on this path; without CUDA (or without them) the CPU path
is the default, with a one-line note when a GPU was there but its decoder was not. The pixels
differ a little from the CPU path's (nvJPEG's IDCT and colour conversion, bilinear rounding), so
the decoder is recorded with the store's extraction settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import EmbstoreError
from .preprocess import upstream_size

log = logging.getLogger(__name__)

#: What each decoder is, as recorded in a store.
DECODER_NAMES = {
    "cpu": "cpu: pydicom + Pillow (libjpeg-turbo) / PyAV, OpenCV resize",
    "gpu": "gpu: nvJPEG (torchvision.io.decode_jpeg) / NVDEC (torchcodec), torch resize",
}


def missing_jpeg_decoder() -> str | None:
    """Why the GPU JPEG decoder cannot run here (None when it can)."""
    try:
        from torchvision.io import decode_jpeg  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "torchvision is not installed (pip install the torchvision built for this torch)"
    return None


def has_nvdec() -> bool:
    """True when torchcodec (NVDEC video decoding) can be imported."""
    try:
        from torchcodec.decoders import VideoDecoder  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def choose_decoder(requested: str, device: Any) -> str:
    """``"cpu"`` or ``"gpu"`` for ``requested`` (``auto``/``cpu``/``gpu``) on ``device``.

    ``auto`` takes the GPU when ``device`` is CUDA and torchvision is there, and otherwise the
    CPU (with a one-line note if only the library was missing); ``gpu`` without either is an
    error naming what is missing.
    """
    if requested == "cpu":
        return "cpu"
    if getattr(device, "type", str(device)) != "cuda":
        if requested == "gpu":
            raise EmbstoreError("decoder='gpu' needs a CUDA device (device='cuda')")
        return "cpu"
    missing = missing_jpeg_decoder()
    if missing is None:
        if not has_nvdec():
            log.warning("videos decode on the CPU: torchcodec (NVDEC) is not installed")
        return "gpu"
    if requested == "gpu":
        raise EmbstoreError(f"decoder='gpu': {missing}")
    log.warning("decoding on the CPU: %s", missing)
    return "cpu"


# ---------------------------------------------------------------------- in the workers


def jpeg_frames(ds: Any, frames: int, wanted: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """The compressed bytes of each unique wanted frame of an encapsulated DICOM, and the
    indices that expand them back to ``wanted`` (one pass over the fragments)."""
    from pydicom.encaps import generate_frames

    unique, inverse = np.unique(wanted, return_inverse=True)
    keep, found = set(unique.tolist()), []
    for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
        if index in keep:
            found.append(bytes(frame))
        if index >= unique[-1]:
            break
    if len(found) != len(unique):
        raise ValueError(f"found {len(found)} of {len(unique)} wanted frames")
    return found, inverse.ravel()


def is_gpu_jpeg(ds: Any) -> bool:
    """JPEG Baseline 8-bit colour frames: what nvJPEG decodes straight to RGB."""
    from pydicom.uid import JPEGBaseline8Bit

    return (
        ds.file_meta.get("TransferSyntaxUID") == JPEGBaseline8Bit
        and ds.get("SamplesPerPixel") == 3
        and ds.get("PhotometricInterpretation") in ("YBR_FULL_422", "YBR_FULL", "RGB")
    )


# ---------------------------------------------------------------------- on the device


def resize_on_device(frames: Any, crop: int) -> Any:
    """Upstream's resize and centre crop in torch: ``(N, 3, H, W)`` uint8 on any device ->
    ``(N, crop, crop, 3)`` uint8. Bilinear without antialiasing at half-pixel centres, as
    OpenCV's ``INTER_LINEAR`` (its fixed-point rounding aside: values differ by at most 1)."""
    import torch.nn.functional as F

    short = int(crop * 256 / 224)
    height, width = frames.shape[-2:]
    if min(height, width) != short:
        new_h, new_w = upstream_size(height, width, short)
        resized = F.interpolate(
            frames.float(), size=(new_h, new_w), mode="bilinear", align_corners=False
        )
        frames, height, width = resized.round_().clamp_(0, 255).byte(), new_h, new_w
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return frames[..., top : top + crop, left : left + crop].permute(0, 2, 3, 1)


def gpu_jpeg_decoder(device: Any) -> Callable[[list[Any]], list[Any]]:
    """Batched nvJPEG: a list of 1-D uint8 CPU tensors -> a list of ``(3, H, W)`` uint8 on
    ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: list[Any]) -> list[Any]:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))

    return decode


def decode_jpeg_items(
    items: Sequence[tuple[list[bytes], np.ndarray]],
    crop: int,
    decode: Callable[[list[Any]], list[Any]],
) -> list[Any]:
    """Each item's wanted frames as ``(frames, crop, crop, 3)`` uint8 on the decoder's device;
    every item's frames decoded in one call."""
    import torch

    flat = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for data, _ in items for b in data]
    images = decode(flat) if flat else []
    out, start = [], 0
    for data, inverse in items:
        unique = torch.stack(images[start : start + len(data)])  # one video: one frame size
        start += len(data)
        index = torch.as_tensor(inverse, device=unique.device)
        out.append(resize_on_device(unique, crop)[index])
    return out


def decode_video_on_device(path: str, indices: Callable[[int], np.ndarray], crop: int, device: Any):
    """A video's wanted frames, decoded by NVDEC and resized on ``device``: ``(frames, crop,
    crop, 3)`` uint8."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, device=str(device))
    count = decoder.metadata.num_frames or len(decoder)
    wanted = np.asarray(indices(count))
    unique, inverse = np.unique(wanted, return_inverse=True)
    frames = decoder.get_frames_at(indices=unique.tolist()).data  # (N, 3, H, W) uint8
    index = np.asarray(inverse).ravel().tolist()
    return resize_on_device(frames, crop)[index]


__all__ = [
    "DECODER_NAMES",
    "choose_decoder",
    "decode_jpeg_items",
    "decode_video_on_device",
    "gpu_jpeg_decoder",
    "is_gpu_jpeg",
    "jpeg_frames",
    "missing_jpeg_decoder",
    "resize_on_device",
]

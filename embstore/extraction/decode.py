"""Decoding inputs to RGB uint8 frames: echo DICOMs (pydicom) and videos (PyAV).

Nothing from a DICOM header leaves this module unless the caller allow-lists the tag
(:func:`header_labels`): patient names, IDs and dates must never reach a store by default.
Error messages about a DICOM name the file and the *kind* of problem, never a header value:
pydicom's and the decoders' exception texts often quote values, so they are not forwarded.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
#: Photometric interpretations that may be named in an error (any other value is not quoted).
_KNOWN_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "YBR_PARTIAL_420",
    }
)


class SingleFrameError(BadInputError):
    """A DICOM still (one frame): skipped and counted, not an error of the run."""


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True for ``*.dcm`` files and for files with the ``DICM`` preamble (any name)."""
    from pydicom.misc import is_dicom as has_preamble

    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        return has_preamble(path)
    except OSError:
        return False


def is_video(path: str | os.PathLike[str]) -> bool:
    """True for the video suffixes PyAV reads (``.mp4``, ``.avi``, ...)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom warns about invalid values by quoting them: keep those texts off the console."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _read(path: Path) -> Any:
    import pydicom

    try:  # large values (the pixel data) stay on disk until asked for
        return pydicom.dcmread(path, defer_size="256 KB")
    except Exception as exc:  # noqa: BLE001 - the type names the kind; the text may quote values
        raise BadInputError(str(path), f"unreadable DICOM ({type(exc).__name__})") from None


def _number(ds: Any, keyword: str, path: Path, cast: Callable[[Any], Any] = float) -> Any:
    """``ds.keyword`` as a number, or None if absent/empty; a malformed value is named, not
    quoted."""
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else cast(value)
    except Exception:  # noqa: BLE001 - ValueError/TypeError texts quote the value
        raise BadInputError(str(path), f"malformed {keyword} in the DICOM header") from None


def frame_rate(ds: Any, path: Path = Path("?")) -> float:
    """Frames per second: FrameTime (ms) -> RecommendedDisplayFrameRate -> CineRate -> 30."""
    frame_time = _number(ds, "FrameTime", path)
    if frame_time is not None and frame_time > 0:
        return 1000.0 / frame_time
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        value = _number(ds, keyword, path)
        if value is not None and value > 0:
            return value
    return DEFAULT_FPS


def read_dicom_frames(
    path: str | os.PathLike[str],
    *,
    keywords: Sequence[str] = (),
    select: Callable[[int], np.ndarray] | None = None,
) -> tuple[np.ndarray, float, dict[str, str]]:
    """Frames ``(T, H, W, 3)`` uint8 RGB, frames per second and the allow-listed header values
    (``keywords``, see :func:`header_labels`) of a multi-frame DICOM.

    ``select(n_frames)`` may name the frame indices wanted (in order, repeats allowed): only
    those frames are decoded, which for a 16-frame clip of a 120-frame JPEG cine is ~40x less
    work. pydicom 3 already returns RGB for YBR_FULL / YBR_FULL_422 (not converted again here);
    PALETTE COLOR goes through its lookup table; MONOCHROME1/2 are scaled to 8 bits
    (MONOCHROME1 inverted) and repeated to 3 channels. Raises :class:`SingleFrameError` for
    stills and :class:`BadInputError` for anything undecodable.
    """
    path = Path(path)
    with _quiet_pydicom():
        ds, frames = _read_cine(path)
        array = _decode_pixels(ds, path, frames, select)
        return array, frame_rate(ds, path), header_labels(ds, keywords)


def _read_cine(path: Path) -> tuple[Any, int]:
    """A multi-frame DICOM's dataset and frame count; one-line errors for a file without pixel
    data and :class:`SingleFrameError` for a still."""
    ds = _read(path)
    if "PixelData" not in ds:
        raise BadInputError(str(path), "no pixel data")
    frames = _number(ds, "NumberOfFrames", path, cast=int) or 1
    if frames < 2:
        raise SingleFrameError(str(path), "single-frame still")
    return ds, frames


def _decode_pixels(
    ds: Any, path: Path, frames: int, select: Callable[[int], np.ndarray] | None
) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, iter_pixels

    try:
        if _is_jpeg_ybr(ds):  # libjpeg converts to RGB itself: ~10x faster than pydicom's numpy
            wanted = np.arange(frames) if select is None else np.asarray(select(frames))
            array = _decode_jpeg_rgb(ds, frames, wanted)
        elif select is None:
            array = ds.pixel_array
        else:
            wanted = np.asarray(select(frames))
            unique, inverse = np.unique(wanted, return_inverse=True)
            # from the file, reading only the wanted frames' bytes
            array = np.stack(list(iter_pixels(path, indices=unique.tolist())))[inverse.ravel()]
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric == "PALETTE COLOR":
            array = apply_color_lut(array, ds)
        bits = _number(ds, "BitsStored", path, cast=int) or 8
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; texts may quote values
        msg = f"cannot decode pixel data ({type(exc).__name__})"
        raise BadInputError(str(path), missing_decoder(ds) or msg) from None
    if array.ndim == 3:  # monochrome (T, H, W)
        array = _to_uint8(array, bits)
        if photometric == "MONOCHROME1":
            array = 255 - array
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 4 and array.shape[-1] == 3:
        palette16 = photometric == "PALETTE COLOR" and array.dtype != np.uint8
        array = _to_uint8(array, 16 if palette16 else bits)
    else:
        shown = photometric if photometric in _KNOWN_PHOTOMETRIC else "unrecognized photometric"
        raise BadInputError(str(path), f"unsupported pixel layout {array.shape} ({shown})")
    return np.ascontiguousarray(array)


def missing_decoder(ds: Any) -> str | None:
    """When no installed plugin decodes ``ds``'s transfer syntax (JPEG-LS, JPEG 2000...), a
    line naming it and the packages pydicom's decoders ask for; None otherwise."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - no decoder at all for this syntax, or no file meta
        return None
    if decoder.is_available:
        return None
    # pydicom's lines read "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
    options = [line.partition(" - requires ")[2] or line for line in decoder.missing_dependencies]
    options = [o.removeprefix("numpy and ") for o in options]
    return (
        f"cannot decode {decoder.UID.name} pixel data: no decoder installed "
        f"(pip install one of: {'; '.join(options)})"
    )


def read_dicom_jpeg(
    path: str | os.PathLike[str],
    *,
    keywords: Sequence[str] = (),
    select: Callable[[int], np.ndarray],
) -> tuple[list[bytes], np.ndarray, dict[str, str]] | None:
    """For the GPU decoder: the compressed bytes of the wanted frames of a JPEG Baseline colour
    cine, the indices that expand them to the wanted order, and the allow-listed labels; None
    for any other DICOM (decoded on the CPU). Stills and unreadable files raise as in
    :func:`read_dicom_frames`."""
    from .gpu import is_gpu_jpeg, jpeg_frames

    path = Path(path)
    with _quiet_pydicom():
        ds, frames = _read_cine(path)
        if not is_gpu_jpeg(ds):
            return None
        try:
            data, inverse = jpeg_frames(ds, frames, np.asarray(select(frames)))
        except Exception as exc:  # noqa: BLE001 - texts may quote values
            msg = f"cannot read JPEG frames ({type(exc).__name__})"
            raise BadInputError(str(path), msg) from None
        return data, inverse, header_labels(ds, keywords)


def _is_jpeg_ybr(ds: Any) -> bool:
    from pydicom.uid import JPEGBaseline8Bit

    return (
        ds.file_meta.get("TransferSyntaxUID") == JPEGBaseline8Bit
        and ds.get("SamplesPerPixel") == 3
        and ds.get("PhotometricInterpretation") in ("YBR_FULL_422", "YBR_FULL")
    )


def _decode_jpeg_rgb(ds: Any, frames: int, wanted: np.ndarray) -> np.ndarray:
    """JPEG Baseline YBR frames decoded straight to RGB by libjpeg (Pillow), each unique frame
    once. Equal to pydicom's own YBR_FULL -> RGB on real echo cines; over all 2**24 YCbCr
    triples, 0.03% of values differ by 1 (libjpeg's fixed-point rounding)."""
    from io import BytesIO

    from PIL import Image
    from pydicom.encaps import generate_frames

    unique, inverse = np.unique(wanted, return_inverse=True)
    keep, decoded = set(unique.tolist()), []
    # one pass over the fragments (get_frame per index would rescan them from the start)
    for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
        if index in keep:
            with Image.open(BytesIO(frame)) as image:
                rgb = image if image.mode == "RGB" else image.convert("RGB")  # no copy if RGB
                decoded.append(np.asarray(rgb))
        if index >= unique[-1]:
            break
    if len(decoded) != len(unique):
        raise ValueError(f"found {len(decoded)} of {len(unique)} wanted frames")
    stacked = np.stack(decoded)
    order = inverse.ravel()
    if len(order) == len(stacked) and (order == np.arange(len(order))).all():
        return stacked  # each frame once, in order (the usual clip): no second copy
    return stacked[order]


def _to_uint8(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    array = np.clip(array.astype(np.int64), 0, None)
    return (array >> max(0, bits - 8)).clip(0, 255).astype(np.uint8)


def header_labels(ds: Any, keywords: Sequence[str]) -> dict[str, str]:
    """The values of exactly the allow-listed header ``keywords`` (as strings; "" if absent)."""
    return {k: "" if ds.get(k) is None else str(ds.get(k)) for k in keywords}


def check_keywords(keywords: Sequence[str]) -> list[str]:
    """Validate ``dicom_tags`` against the DICOM dictionary."""
    from pydicom.datadict import tag_for_keyword

    unknown = [k for k in keywords if tag_for_keyword(k) is None]
    if unknown:
        raise BadInputError("dicom_tags", f"not DICOM keywords: {', '.join(unknown)}")
    return list(keywords)


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
        raise BadInputError(str(path), f"cannot decode video ({type(exc).__name__})") from None
    if not frames:
        raise BadInputError(str(path), "video has no frames")
    return np.stack(frames), fps


def read_frames(
    path: str | os.PathLike[str],
    *,
    keywords: Sequence[str] = (),
    select: Callable[[int], np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Frames of a DICOM or a video, and the allow-listed header labels ("" for videos)."""
    if is_dicom(path):
        frames, _, labels = read_dicom_frames(path, keywords=keywords, select=select)
        return frames, labels
    return read_video(path, select=select)[0], dict.fromkeys(keywords, "")

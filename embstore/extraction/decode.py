"""Echo DICOMs: multi-frame pixel data as RGB uint8 frames, frame rates, and MP4 conversion.

Nothing from a DICOM header leaves this module unless the caller allow-lists the tag
(:func:`header_labels`): patient names, IDs and dates must never reach a store by default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import BadInputError
from .paths import walk_files

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0


class SingleFrameError(BadInputError):
    """A DICOM still (one frame): skipped and counted, not an error of the run."""


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True for ``*.dcm`` files and for files with the ``DICM`` preamble (any name)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read(path: Path):  # noqa: ANN202 - pydicom Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:  # large values (the pixel data) stay on disk until asked for
        return pydicom.dcmread(path, defer_size="256 KB")
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise BadInputError(str(path), f"unreadable DICOM ({exc})") from exc


def frame_rate(ds) -> float:  # noqa: ANN001
    """Frames per second: FrameTime (ms) -> RecommendedDisplayFrameRate -> CineRate -> 30."""
    frame_time = ds.get("FrameTime")
    if frame_time not in (None, "") and float(frame_time) > 0:
        return 1000.0 / float(frame_time)
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
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
    from pydicom.pixels import apply_color_lut, iter_pixels

    path = Path(path)
    ds = _read(path)
    if "PixelData" not in ds:
        raise BadInputError(str(path), "no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 2:
        raise SingleFrameError(str(path), "single-frame still")
    try:
        if select is None:
            array = ds.pixel_array
        else:
            wanted = np.asarray(select(frames))
            unique, inverse = np.unique(wanted, return_inverse=True)
            # from the file, reading only the wanted frames' bytes
            frames_read = iter_pixels(path, indices=unique.tolist())
            array = np.stack(list(frames_read))[inverse.ravel()]
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise BadInputError(str(path), f"cannot decode pixel data ({exc})") from exc
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, ds)
    if array.ndim == 3:  # monochrome (T, H, W)
        array = _to_uint8(array, int(ds.get("BitsStored", 8) or 8))
        if photometric == "MONOCHROME1":
            array = 255 - array
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 4 and array.shape[-1] == 3:
        palette16 = photometric == "PALETTE COLOR" and array.dtype != np.uint8
        array = _to_uint8(array, 16 if palette16 else int(ds.get("BitsStored", 8) or 8))
    else:
        raise BadInputError(str(path), f"unsupported pixel layout {array.shape} ({photometric})")
    return np.ascontiguousarray(array), frame_rate(ds), header_labels(ds, keywords)


def _to_uint8(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    array = np.clip(array.astype(np.int64), 0, None)
    return (array >> max(0, bits - 8)).clip(0, 255).astype(np.uint8)


def header_labels(ds, keywords: Sequence[str]) -> dict[str, str]:  # noqa: ANN001 - pydicom Dataset
    """The values of exactly the allow-listed header ``keywords`` (as strings; "" if absent)."""
    return {k: "" if ds.get(k) is None else str(ds.get(k)) for k in keywords}


def check_keywords(keywords: Sequence[str]) -> list[str]:
    """Validate ``--dicom-tags`` against the DICOM dictionary."""
    from pydicom.datadict import tag_for_keyword

    unknown = [k for k in keywords if tag_for_keyword(k) is None]
    if unknown:
        raise BadInputError("--dicom-tags", f"not DICOM keywords: {', '.join(unknown)}")
    return list(keywords)


# ------------------------------------------------------------------------------ MP4 output


def write_mp4(
    frames: np.ndarray, out: str | os.PathLike[str], *, fps: float, size: int | None = None
) -> None:
    """Encode ``(T, H, W, 3)`` uint8 frames as H.264/yuv420p MP4 (resized to size x size).

    Written under a temporary name and renamed, so a killed conversion leaves no broken MP4.
    """
    import av

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    w, h = (size, size) if size else (width - width % 2, height - height % 2)  # yuv420p: even
    tmp = out.with_name(f".{out.name}.partial.mp4")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for frame in frames:
                video = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                    width=w, height=h, format="yuv420p"
                )
                container.mux(stream.encode(video))
            container.mux(stream.encode())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class ConvertReport:
    """What :func:`convert_dicom` did."""

    converted: list[str] = field(default_factory=list)
    stills: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"converted {len(self.converted)}, skipped {len(self.stills)} single-frame stills"
        return text + (f", {len(self.failed)} failed" if self.failed else "")


def list_dicoms(root: Path) -> list[str]:
    """Relative POSIX paths of the DICOM files under ``root`` (by suffix or preamble), sorted."""
    return walk_files(root, is_dicom)


def convert_dicom(
    input: str | os.PathLike[str],  # noqa: A002 - mirrors the CLI
    output: str | os.PathLike[str],
    *,
    target_size: int | None = 256,
    fps: float | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertReport:
    """Convert every multi-frame DICOM under ``input`` to MP4 at the same relative path.

    Stills are skipped and counted; a bad file is reported and the run goes on. Existing
    outputs are kept (re-running resumes). The frame rate comes from the DICOM unless ``fps``.
    """
    root, out = Path(input), Path(output)
    if not root.is_dir():
        raise BadInputError(str(root), "not a folder")
    if target_size is not None and (target_size < 2 or target_size % 2):
        raise BadInputError("--target-size", f"must be a positive even number, got {target_size}")
    files = list_dicoms(root)
    report = ConvertReport()
    for i, rel in enumerate(files):
        if limit is not None and len(report.converted) >= limit:
            break
        target = out / Path(rel).with_suffix(".mp4")
        try:
            if not target.exists():
                frames, rate, _ = read_dicom_frames(root / rel)
                write_mp4(frames, target, fps=fps or rate, size=target_size)
            report.converted.append(rel)
        except SingleFrameError:
            report.stills.append(rel)
        except BadInputError as exc:
            report.failed.append((str(root / rel), exc.problem))
            log.warning("%s", exc)
        except Exception as exc:  # an encoder failure on one file must not stop the run
            report.failed.append((str(root / rel), f"{type(exc).__name__}: {exc}"))
            log.warning("%s: %s", root / rel, exc)
        if progress:
            progress(i + 1, len(files))
    return report

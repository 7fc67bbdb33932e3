"""convert-dicom: multi-frame DICOMs to H.264 MP4s at the same relative paths.

Only pixels and the frame rate go into an MP4: no header value is written as metadata.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._fs import replacing, walk_files
from .._progress import Progress
from ..errors import BadInputError
from .decode import SingleFrameError, is_dicom, read_dicom_frames

log = logging.getLogger(__name__)


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
    rate = Fraction(fps).limit_denominator(1001)
    with (
        replacing(out, overwrite=True) as tmp,
        av.open(str(tmp), mode="w", format="mp4") as container,
    ):
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in frames:
            video = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                width=w, height=h, format="yuv420p"
            )
            container.mux(stream.encode(video))
        container.mux(stream.encode())


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
    progress: Progress | None = None,
) -> ConvertReport:
    """Convert every multi-frame DICOM under ``input`` to MP4 at the same relative path.

    Stills are skipped and counted; a bad file is reported (its path and the kind of problem)
    and the run goes on. Existing outputs are kept (re-running resumes). The frame rate comes
    from the DICOM unless ``fps``.
    """
    root, out = Path(input), Path(output)
    if not root.is_dir():
        raise BadInputError(str(root), "not a folder")
    if target_size is not None and (target_size < 2 or target_size % 2):
        raise BadInputError("target_size", f"must be a positive even number, got {target_size}")
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
        except Exception as exc:  # noqa: BLE001 - an encoder failure must not stop the run
            problem = f"cannot write MP4 ({type(exc).__name__})"
            report.failed.append((str(root / rel), problem))
            log.warning("%s: %s", root / rel, problem)
        if progress:
            progress(i + 1, len(files))
    return report

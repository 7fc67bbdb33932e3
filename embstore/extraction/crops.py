"""Crops to embed: a folder of images, or a detections table whose boxes are cut from frames.

A detections table (CSV, or Parquet with ``pyarrow``) has one row per detection: the image or
video path (column ``path``, ``video``, ``image`` or ``file``, relative to the media folder),
for videos the frame index (``frame``) or the time in seconds (``time``), the box
``x0, y0, x1, y1`` in pixels, and any label columns (``category``, ``subject``, ``age_mo``,
``score``...). Each row's key is stable and readable::

    videos/a.mp4#f001234#10,20,110,140      a video frame by index
    videos/a.mp4#t12.345#10,20,110,140      a video frame by time (seconds)
    images/b.jpg#10,20,110,140              an image

Boxes are rounded to whole pixels as PIL's ``Image.crop`` does (``round``) and clipped to the
frame; the crop is ``frame[y0:y1, x0:x1]``. A video is decoded once, front to back, and every
box of a frame is cut from that one decoded frame.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import file_digest, walk_files
from ..errors import BadInputError
from ..keys import key_problem
from ..labels import INTEGER_LABELS, MISSING_AGE, check_label_name, get_layout
from .decode import is_video

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
PATH_COLUMNS = ("path", "video", "image", "file")
BOX = ("x0", "y0", "x1", "y1")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    """One row to embed: its key, the media file, the frame (index or time) and the box."""

    key: str
    media: str
    frame: int | None = None
    time: float | None = None
    box: Box | None = None
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class Detections:
    """A detections table, read and checked: one :class:`Crop` per row."""

    source: str
    digest: str
    crops: list[Crop]
    label_names: list[str]


def is_image(path: str | os.PathLike[str]) -> bool:
    """True for the image suffixes Pillow reads (``.jpg``, ``.png``...)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def pixel_box(x0: float, y0: float, x1: float, y1: float) -> Box:
    """A box in whole pixels, rounded as PIL's ``Image.crop`` rounds (``round``).

    >>> pixel_box(10.4, 19.5, 110.6, 140.0)
    (10, 20, 111, 140)
    """
    return round(x0), round(y0), round(x1), round(y1)


def crop_key(
    media: str, box: Box | None, *, frame: int | None = None, time: float | None = None
) -> str:
    """The row key of a crop (see the module docstring).

    >>> crop_key("a.mp4", (1, 2, 30, 40), frame=1234)
    'a.mp4#f001234#1,2,30,40'
    """
    parts = [media]
    if frame is not None:
        parts.append(f"f{frame:06d}")
    elif time is not None:
        parts.append(f"t{time:.3f}")
    if box is not None:
        parts.append(",".join(str(v) for v in box))
    return "#".join(parts)


def cut(frame: np.ndarray, box: Box) -> np.ndarray | str:
    """``frame[y0:y1, x0:x1]`` with the box clipped to the frame; a problem if it is empty."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return f"box {box} is empty inside the {width}x{height} frame"
    return frame[cy0:cy1, cx0:cx1]


def read_table(path: Path) -> Any:
    """A CSV (every column as text) or Parquet file as a pandas DataFrame."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            if importlib.util.find_spec("pyarrow") is None:
                msg = "reading Parquet needs pyarrow (pip install 'embstore[parquet]')"
                raise BadInputError(str(path), msg)
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except BadInputError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(
            str(path), f"unreadable detections table ({type(exc).__name__})"
        ) from None


def read_detections(
    table: str | os.PathLike[str],
    *,
    path_column: str | None = None,
    label_columns: Sequence[str] | None = None,
    key_columns: Sequence[str] = (),
) -> Detections:
    """Read a detections table into crops (see the module docstring).

    ``label_columns`` (default: every column but the path, frame/time and box) become labels;
    ``key_columns`` are appended to the key (``...#10,20,30,40#ball``), for tables that list
    the same box of a frame more than once (under two categories, say). Every problem names
    the table and the row (as a spreadsheet numbers it: the header is row 1).
    """
    path = Path(table)
    frame = read_table(path)
    columns = [str(c) for c in frame.columns]
    source = str(path)
    media_column = path_column or next((c for c in PATH_COLUMNS if c in columns), None)
    if media_column is None or media_column not in columns:
        raise BadInputError(source, f"no path column (one of {PATH_COLUMNS}; have {columns})")
    missing = [c for c in BOX if c not in columns]
    if missing:
        raise BadInputError(source, f"no box column(s) {missing} (have {columns})")
    when = next((c for c in ("frame", "time") if c in columns), None)
    used = {media_column, *BOX, *(("frame", "time") if when else ())}
    names = (
        list(label_columns) if label_columns is not None else [c for c in columns if c not in used]
    )
    for name in [*names, *key_columns]:
        if name not in columns:
            raise BadInputError(source, f"no column {name!r} (have {columns})")
        if name in names:
            check_label_name(name)
    crops = [
        _crop(source, i, row, media_column, when, names, key_columns)
        for i, row in enumerate(frame.to_dict(orient="records"))
    ]
    _check_unique(source, crops)
    return Detections(source, file_digest(path), crops, names)


def _crop(
    source: str,
    index: int,
    row: dict[str, Any],
    media_column: str,
    when: str | None,
    names: Sequence[str],
    key_columns: Sequence[str],
) -> Crop:
    where = f"{source}: row {index + 2}"
    media = str(row[media_column]).strip()
    try:
        values = [float(row[c]) for c in BOX]
        if not all(math.isfinite(v) for v in values):
            raise ValueError
        box = pixel_box(*values)
        frame = time = None
        if not is_video(media):  # an image: its frame/time cell is blank (or ignored)
            pass
        elif when is None:
            raise BadInputError(where, f"{media} is a video: give a frame or time column")
        elif when == "frame":
            number = float(row["frame"])
            if number != int(number) or number < 0:
                raise ValueError
            frame = int(number)
        elif when == "time":
            time = float(row["time"])
            if not math.isfinite(time) or time < 0:
                raise ValueError
    except (TypeError, ValueError, OverflowError):
        shown = {c: row[c] for c in (*BOX, *(([when]) if when else ()))}
        raise BadInputError(where, f"box or frame is not a number: {shown}") from None
    key = crop_key(media, box, frame=frame, time=time)
    key = "#".join([key, *(str(row[c]) for c in key_columns)])
    problem = key_problem(key)
    if problem is not None or not media:
        raise BadInputError(where, f"row key {key!r} {problem or 'has no path'}")
    labels = {name: _label(row[name], name, where) for name in names}
    return Crop(key, media, frame, time, box, labels)


def _label(value: Any, name: str, where: str) -> Any:
    empty = value is None or (isinstance(value, float) and math.isnan(value)) or value == ""
    if name in INTEGER_LABELS:
        if empty:
            return MISSING_AGE
        try:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        except (TypeError, ValueError):
            raise BadInputError(where, f"{name} {value!r} is not a whole number") from None
    return "" if empty else str(value)


def _check_unique(source: str, crops: list[Crop]) -> None:
    seen: dict[str, int] = {}
    for i, crop in enumerate(crops):
        if crop.key in seen:
            msg = (
                f"rows {seen[crop.key] + 2} and {i + 2} are the same crop {crop.key!r}: "
                "name a column that tells them apart in key_columns (e.g. category)"
            )
            raise BadInputError(source, msg)
        seen[crop.key] = i


def image_folder(root: str | os.PathLike[str], *, pattern: str | None = None) -> list[Crop]:
    """Every image under ``root`` as a whole-image crop keyed by its relative path; labels
    from ``pattern`` (a regex with named groups) if given."""
    files = walk_files(root, is_image)
    layout = get_layout(None, pattern=pattern)
    crops = []
    for path in files:
        labels: dict[str, Any] = layout.parse(path) if layout is not None else {}
        crops.append(Crop(path, path, labels=labels))
    return crops


# ------------------------------------------------------------------------- decoding and cutting


def frames_of(path: Path, wanted: Sequence[Crop]) -> Iterator[tuple[Crop, np.ndarray | str]]:
    """Each crop of ``wanted`` (all of one media file) with its pixels, or the problem.

    Images are read once; a video is decoded once, front to back, up to the last frame a
    crop needs, and every box of a frame is cut from that decoded frame.
    """
    if not is_video(path):
        image = _read_image(path)
        for crop in wanted:
            yield crop, image if isinstance(image, str) else _cut(image, crop)
        return
    yield from _video_crops(path, wanted)


def _cut(frame: np.ndarray, crop: Crop) -> np.ndarray | str:
    return frame if crop.box is None else cut(frame, crop.box)


def _read_image(path: Path) -> np.ndarray | str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except FileNotFoundError:
        return "file does not exist"
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"unreadable image ({type(exc).__name__})"


def _video_crops(path: Path, wanted: Sequence[Crop]) -> Iterator[tuple[Crop, np.ndarray | str]]:
    import av

    by_index: dict[int, list[Crop]] = defaultdict(list)
    for crop in wanted:
        if crop.frame is not None:
            by_index[crop.frame].append(crop)
    by_time = deque(sorted((c for c in wanted if c.frame is None), key=_time_of))
    last = max(by_index, default=-1)
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        yield from ((c, "file does not exist") for c in wanted)
        return
    except (OSError, av.error.FFmpegError) as exc:
        yield from ((c, f"unreadable video ({type(exc).__name__})") for c in wanted)
        return
    index, held, step = -1, None, 0.0
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        step = 1.0 / float(stream.average_rate or stream.guessed_rate or 30)
        try:
            for index, decoded in enumerate(container.decode(stream)):
                time = float(decoded.time or 0.0)
                if by_time and _time_of(by_time[0]) < time:  # shown before this frame
                    shown = held if held is not None else decoded
                    yield from _take_until(by_time, time, shown.to_ndarray(format="rgb24"))
                pending = by_index.pop(index, [])
                if pending:
                    pixels = decoded.to_ndarray(format="rgb24")
                    yield from ((crop, _cut(pixels, crop)) for crop in pending)
                held = decoded
                if index >= last and not by_time:
                    break
        except av.error.FFmpegError as exc:
            problem = f"undecodable after frame {index} ({type(exc).__name__})"
            yield from ((c, problem) for crops in by_index.values() for c in crops)
            yield from ((c, problem) for c in by_time)
            return
    for crops in by_index.values():
        for crop in crops:
            yield crop, f"frame {crop.frame} is beyond the video's {index + 1} frames"
    end = float(held.time or 0.0) + step if held is not None else 0.0
    tail: np.ndarray | None = None
    if held is not None and by_time:
        tail = held.to_ndarray(format="rgb24")
    for crop in by_time:
        if tail is None or _time_of(crop) >= end:
            yield crop, f"time {crop.time} is beyond the video's end ({end:.3f} s)"
        else:
            yield crop, _cut(tail, crop)


def _time_of(crop: Crop) -> float:
    return crop.time if crop.time is not None else 0.0


def _take_until(
    by_time: deque[Crop], time: float, pixels: np.ndarray
) -> Iterator[tuple[Crop, np.ndarray | str]]:
    """The time crops shown before ``time`` (the next frame's): cut from ``pixels``."""
    while by_time and _time_of(by_time[0]) < time:
        crop = by_time.popleft()
        yield crop, _cut(pixels, crop)

"""Crops: detection tables, keys, boxes cut at the right pixels from frames decoded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from PIL import Image

import embstore
from embstore.errors import BadInputError
from embstore.extraction.crops import (
    Crop,
    crop_key,
    cut,
    frames_of,
    pixel_box,
    read_detections,
)
from embstore.keys import key_problem
from embstore.testing.images import make_tiny_image_model, write_video

H, W, FPS = 48, 64, 10


def coded_frame(index: int) -> np.ndarray:
    """A frame whose pixels say where they are: R = 3x, G = 5y, B = 40 * frame index."""
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0] = np.arange(W)[None, :] * 3
    frame[..., 1] = np.arange(H)[:, None] * 5
    frame[..., 2] = index * 40
    return frame


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    write_video(root / "day1/v.mp4", [coded_frame(i) for i in range(6)], fps=FPS)  # lossless
    Image.fromarray(coded_frame(2)).save(root / "still.png")
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


def test_keys_are_readable_and_pass_the_key_policy() -> None:
    assert pixel_box(10.4, 19.5, 110.6, 140.0) == (10, 20, 111, 140)  # as PIL's crop rounds
    keys = [
        crop_key("videos/a.mp4", (1, 2, 30, 40), frame=1234),
        crop_key("videos/a.mp4", (-3, 0, 5, 5), time=12.3456),
        crop_key("imgs/b.jpg", (0, 0, 8, 8)),
    ]
    assert keys == [
        "videos/a.mp4#f001234#1,2,30,40",
        "videos/a.mp4#t12.346#-3,0,5,5",
        "imgs/b.jpg#0,0,8,8",
    ]
    assert all(key_problem(k) is None for k in keys)


def test_cut_clips_to_the_frame() -> None:
    frame = coded_frame(0)
    np.testing.assert_array_equal(cut(frame, (-5, 40, 10, 60)), frame[40:48, 0:10])
    assert "empty" in str(cut(frame, (70, 0, 80, 10)))


def _by_key(pairs: Any) -> dict[str, Any]:
    return {crop.key: pixels for crop, pixels in pairs}


def _table(rows: list[dict[str, Any]], path: Path) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_crops_cut_at_the_right_pixels_each_frame_decoded_once(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"video": "day1/v.mp4", "frame": 4, "x0": 10, "y0": 5, "x1": 30, "y1": 25},
        {"video": "day1/v.mp4", "frame": 1, "x0": 0.4, "y0": 0, "x1": 64, "y1": 48},
        {"video": "day1/v.mp4", "frame": 4, "x0": 50, "y0": 40, "x1": 90, "y1": 90},  # clipped
        {"video": "day1/v.mp4", "frame": 9, "x0": 0, "y0": 0, "x1": 5, "y1": 5},  # past the end
        {"video": "day1/v.mp4", "frame": 2, "x0": 70, "y0": 0, "x1": 80, "y1": 5},  # empty
    ]
    table = read_detections(_table(rows, tmp_path / "d.csv"))
    opened: list[str] = []
    real_open = av.open
    monkeypatch.setattr(
        av, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k)
    )
    got = _by_key(frames_of(media / "day1/v.mp4", table.crops))
    assert len(opened) == 1  # one decode of the video for all its crops
    by_key = {c.key: c for c in table.crops}
    np.testing.assert_array_equal(got["day1/v.mp4#f000004#10,5,30,25"], coded_frame(4)[5:25, 10:30])
    np.testing.assert_array_equal(got["day1/v.mp4#f000001#0,0,64,48"], coded_frame(1))
    np.testing.assert_array_equal(got["day1/v.mp4#f000004#50,40,90,90"], coded_frame(4)[40:, 50:])
    assert "beyond the video's 6 frames" in got["day1/v.mp4#f000009#0,0,5,5"]
    assert "empty" in got["day1/v.mp4#f000002#70,0,80,5"]
    assert set(got) == set(by_key)


def test_time_column_picks_the_frame_shown_at_that_time(media: Path, tmp_path: Path) -> None:
    rows = [
        {"path": "day1/v.mp4", "time": t, "x0": 0, "y0": 0, "x1": 4, "y1": 4}
        for t in (0.0, 0.1, 0.149, 0.35, 0.59, 0.61)
    ]
    table = read_detections(_table(rows, tmp_path / "t.csv"))
    got = _by_key(frames_of(media / "day1/v.mp4", table.crops))
    frames = {0.0: 0, 0.1: 1, 0.149: 1, 0.35: 3, 0.59: 5}
    for t, index in frames.items():
        np.testing.assert_array_equal(
            got[crop_key("day1/v.mp4", (0, 0, 4, 4), time=t)], coded_frame(index)[:4, :4]
        )
    assert "beyond the video's end" in got["day1/v.mp4#t0.610#0,0,4,4"]


def test_images_and_broken_media(media: Path) -> None:
    crops = [
        Crop("still.png#1,2,3,4", "still.png", box=(1, 2, 3, 4)),
        Crop("still.png", "still.png"),
    ]
    got = _by_key(frames_of(media / "still.png", crops))
    np.testing.assert_array_equal(got["still.png#1,2,3,4"], coded_frame(2)[2:4, 1:3])
    np.testing.assert_array_equal(got["still.png"], coded_frame(2))
    broken = [Crop("broken.mp4#f000000#0,0,1,1", "broken.mp4", frame=0, box=(0, 0, 1, 1))]
    assert "unreadable video" in _by_key(frames_of(media / "broken.mp4", broken))[broken[0].key]
    missing = [Crop("gone.png", "gone.png")]
    assert _by_key(frames_of(media / "gone.png", missing))["gone.png"] == "file does not exist"


def test_table_labels_and_problems(tmp_path: Path) -> None:
    base = {"video": "v.mp4", "frame": 3, "x0": 1, "y0": 2, "x1": 3, "y1": 4}
    rows = [
        {**base, "category": "ball", "subject": "00270001", "age_mo": "12", "score": "0.875"},
        {**base, "x0": 5, "category": "cup", "subject": "00280001", "age_mo": "", "score": "0.5"},
    ]
    table = read_detections(_table(rows, tmp_path / "ok.csv"))
    assert table.label_names == ["category", "subject", "age_mo", "score"]
    assert table.crops[0].labels == {
        "category": "ball",
        "subject": "00270001",  # leading zeros kept: label columns are read as text
        "age_mo": 12,
        "score": "0.875",
    }
    assert table.crops[1].labels["age_mo"] == -1 and len(table.digest) == 64
    pd.DataFrame(rows).to_parquet(tmp_path / "ok.parquet")
    assert read_detections(tmp_path / "ok.parquet").crops == table.crops
    twice = [{**base, "category": "ball"}, {**base, "category": "toy"}]
    with pytest.raises(BadInputError, match="rows 2 and 3 are the same crop.*key_columns"):
        read_detections(_table(twice, tmp_path / "twice.csv"))
    keyed = read_detections(tmp_path / "twice.csv", key_columns=["category"])
    assert [c.key for c in keyed.crops] == [
        "v.mp4#f000003#1,2,3,4#ball",
        "v.mp4#f000003#1,2,3,4#toy",
    ]
    with pytest.raises(BadInputError, match=r"row 2: box or frame is not a number"):
        read_detections(_table([{**base, "x1": "wide"}], tmp_path / "bad.csv"))
    with pytest.raises(BadInputError, match=r"no box column\(s\) \['y1'\]"):
        read_detections(_table([{k: v for k, v in base.items() if k != "y1"}], tmp_path / "b.csv"))
    with pytest.raises(BadInputError, match="give a frame or time column"):
        read_detections(
            _table([{"video": "v.mp4", "x0": 0, "y0": 0, "x1": 1, "y1": 1}], tmp_path / "c.csv")
        )
    with pytest.raises(BadInputError, match="'..' is not allowed"):
        read_detections(_table([{**base, "video": "../v.mp4"}], tmp_path / "e.csv"))


def test_extract_crops_equal_transformers_on_the_same_crops(media: Path, tmp_path: Path) -> None:
    model = make_tiny_image_model(tmp_path / "dinov2", "dinov2")
    rows = [
        {
            "video": "day1/v.mp4",
            "frame": 4,
            "x0": 10,
            "y0": 5,
            "x1": 30,
            "y1": 25,
            "category": "ball",
        },
        {
            "video": "day1/v.mp4",
            "frame": 0,
            "x0": 3,
            "y0": 3,
            "x1": 60,
            "y1": 44,
            "category": "cup",
        },
        {
            "video": "still.png",
            "frame": "",
            "x0": 8,
            "y0": 8,
            "x1": 40,
            "y1": 30,
            "category": "dog",
        },
        {"video": "broken.mp4", "frame": 0, "x0": 0, "y0": 0, "x1": 9, "y1": 9, "category": "cat"},
    ]
    config = embstore.ImageExtractConfig(
        checkpoint=model, detections=_table(rows, tmp_path / "d.csv"), batch_size=2, commit_rows=2
    )
    report = embstore.extract_images(media, store=tmp_path / "s", config=config)
    assert report.added == 3 and len(report.bad) == 1 and "broken.mp4" in str(report.bad[0])
    ds = embstore.open(tmp_path / "s")
    processor = transformers.AutoImageProcessor.from_pretrained(model)
    reference = transformers.Dinov2Model.from_pretrained(model).eval()
    expected_pixels = {
        "day1/v.mp4#f000004#10,5,30,25": coded_frame(4)[5:25, 10:30],
        "day1/v.mp4#f000000#3,3,60,44": coded_frame(0)[3:44, 3:60],
        "still.png#8,8,40,30": coded_frame(2)[8:30, 8:40],
    }
    for key, pixels in expected_pixels.items():
        inputs = processor(images=Image.fromarray(pixels), return_tensors="pt")
        with torch.no_grad():
            expected = reference(**inputs).pooler_output[0].numpy()
        row = ds.sel(path=key)
        np.testing.assert_allclose(row.embedding.values, expected, rtol=1e-5, atol=1e-5)
    assert ds.sel(path="still.png#8,8,40,30").category.item() == "dog"
    run = embstore.provenance(ds)["provenance"][-1]
    assert run["detections"]["sha256"] and run["bad_count"] == 1 and run["status"] == "complete"
    again = embstore.extract_images(media, store=tmp_path / "s", config=config)
    assert again.added == 0 and again.already_stored == 3

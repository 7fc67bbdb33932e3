"""Seed 000 end to end: extract-images -> aggregate -> normalize -> export gives the numbers
and the file tree of the lab's own scripts (crop embeddings averaged per category, subject
and age-month, then the normalization notebook) on generated head-camera data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from PIL import Image
from typer.testing import CliRunner

import cli
import embstore
from embstore.demo_crops import MONTH_LEVEL_TEMPLATE
from embstore.extraction.crops import pixel_box
from embstore.testing.images import (
    make_headcam_detections,
    make_tiny_image_model,
)

EXCLUDED = "00270001"


def _lab_crop_embeddings(model: Path, table: pd.DataFrame, videos: Path) -> np.ndarray:
    """The lab's extraction, written without embstore: decode each video with PyAV, cut
    each box, DINOv3 preprocessing (rescale, antialiased bilinear resize, ImageNet
    normalization, as DINOv3ViTImageProcessor does), DINOv3ViTModel's pooler output."""
    import av

    settings = json.loads((model / "preprocessor_config.json").read_text())
    net = transformers.DINOv3ViTModel.from_pretrained(model).eval()
    size = (settings["size"]["height"], settings["size"]["width"])
    mean = torch.tensor(settings["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(settings["image_std"]).view(1, 3, 1, 1)
    frames: dict[tuple[str, int], np.ndarray] = {}
    for video in table.video.unique():
        with av.open(str(videos / video)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                frames[(video, i)] = frame.to_ndarray(format="rgb24")
    out = []
    for row in table.itertuples():
        x0, y0, x1, y1 = pixel_box(row.x0, row.y0, row.x1, row.y1)
        crop = frames[(row.video, row.frame)][y0:y1, x0:x1]
        x = torch.tensor(np.array(Image.fromarray(crop)), dtype=torch.float32).permute(2, 0, 1)
        x = torch.nn.functional.interpolate(
            x[None] / 255.0, size=size, mode="bilinear", antialias=True
        )
        with torch.no_grad():
            out.append(net(pixel_values=(x - mean) / std).pooler_output[0].numpy())
    return np.stack(out)


def _notebook(embeddings_dir: Path, normalized_dir: Path, excluded_subject: str) -> int:
    """The seed notebook's cells 4-6, as written there (loading, statistics, saving)."""
    data = []
    for category_folder in [f for f in embeddings_dir.iterdir() if f.is_dir()]:
        for emb_file in category_folder.glob("*.npy"):
            parts = emb_file.stem.split("_")
            subject_id, age_mo = parts[0], int(parts[1]) if parts[1].isdigit() else None
            if age_mo is None or subject_id == excluded_subject:
                continue
            data.append(
                {
                    "embedding": np.load(emb_file),
                    "category": category_folder.name,
                    "file_path": emb_file,
                }
            )
    matrix = np.array([d["embedding"].flatten() for d in data])
    global_mean = matrix.mean(axis=0)
    global_std = matrix.std(axis=0) + 1e-10
    for d in data:
        out = normalized_dir / d["category"]
        out.mkdir(exist_ok=True, parents=True)
        np.save(out / d["file_path"].name, (d["embedding"].flatten() - global_mean) / global_std)
    return len(data)


@pytest.mark.slow
def test_seed000_path_gives_the_notebooks_numbers(tmp_path: Path) -> None:
    model = make_tiny_image_model(tmp_path / "dinov3-tiny", "dinov3")
    table_path = make_headcam_detections(
        tmp_path, subjects=("00270001", "00280001", "00290001"), ages=(8, 9), frames=4
    )
    run = CliRunner().invoke
    steps = [
        ["extract-images", str(tmp_path / "videos"), str(tmp_path / "crops.store"),
         "--checkpoint", str(model), "--detections", str(table_path), "--batch-size", "16"],
        ["aggregate", str(tmp_path / "crops.store"), str(tmp_path / "months.store"),
         "--by", "category,subject,age_mo", "--path-template", MONTH_LEVEL_TEMPLATE],
        ["normalize", str(tmp_path / "months.store"), "--exclude-subject", EXCLUDED],
        ["export", str(tmp_path / "months.store"), str(tmp_path / "normalized"),
         "--format", "npy-tree", "--variable", "normalized"],
    ]  # fmt: skip
    for args in steps:
        result = run(cli.app, args)
        assert result.exit_code == 0, (args[0], result.output)

    # the lab's scripts: crop embeddings -> month-level averages -> the notebook
    table = pd.read_csv(table_path, dtype={"subject": str})
    vectors = _lab_crop_embeddings(model, table, tmp_path / "videos")
    averages = (
        pd.DataFrame(vectors.astype(np.float64))
        .groupby([table.category, table.subject, table.age_mo])
        .mean()
    )
    lab = tmp_path / "lab_grouped_by_age-mo"
    for (category, subject, age_mo), row in averages.iterrows():
        (lab / category).mkdir(parents=True, exist_ok=True)
        np.save(
            lab / category / f"{subject}_{age_mo}_month_level_avg.npy", row.to_numpy(np.float32)
        )
    written = _notebook(lab, tmp_path / "lab_normalized", EXCLUDED)

    ours = {
        p.relative_to(tmp_path / "normalized").as_posix()
        for p in (tmp_path / "normalized").rglob("*.npy")
    }
    theirs = {
        p.relative_to(tmp_path / "lab_normalized").as_posix()
        for p in (tmp_path / "lab_normalized").rglob("*.npy")
    }
    assert len(theirs) == written > 0
    assert theirs <= ours  # the same files, file for file
    # embstore also writes the excluded subject's normalized files (the notebook's notes say
    # it should; its code skips them while loading)
    assert {p for p in ours - theirs} == {p for p in ours if f"/{EXCLUDED}_" in p}
    for name in sorted(theirs):
        got = np.load(tmp_path / "normalized" / name)
        expected = np.load(tmp_path / "lab_normalized" / name)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=name)

    months = embstore.open(tmp_path / "months.store")
    assert int(months["count"].sum()) == len(table)
    source = embstore.provenance(months)["aggregate"]["source"]
    assert source["version"] == embstore.log(tmp_path / "crops.store")[0].id


def test_seed000_demo_needs_a_new_folder(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("something")
    result = CliRunner().invoke(cli.app, ["demo", "--seed000", str(tmp_path)])
    assert result.exit_code == 1 and "not empty" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]

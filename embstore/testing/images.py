"""Builders of small image data for tests and the seed-000 demo: tiny random image models
saved with ``save_pretrained`` (and their processors), frames with known boxes, videos and
detection tables. Nothing is downloaded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _processor_settings(family: str, size: int) -> dict[str, Any]:
    common = {
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
    }
    if family == "dinov3":  # as facebook/dinov3-*: squash to size x size, bilinear
        return {
            **common,
            "image_processor_type": "DINOv3ViTImageProcessorFast",
            "size": {"height": size, "width": size},
            "resample": 2,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
        }
    if family == "dinov2":  # as facebook/dinov2-*: short side 256/224 x crop, bicubic, crop
        return {
            **common,
            "image_processor_type": "BitImageProcessor",
            "size": {"shortest_edge": size * 8 // 7},
            "crop_size": {"height": size, "width": size},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "resample": 3,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
        }
    if family == "clip":
        return {
            **common,
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": size},
            "crop_size": {"height": size, "width": size},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "resample": 3,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        }
    return {  # siglip
        **common,
        "image_processor_type": "SiglipImageProcessor",
        "size": {"height": size, "width": size},
        "resample": 3,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }


def make_tiny_image_model(
    folder: str | Path, family: str, *, size: int = 32, hidden: int = 32, seed: int = 0
) -> Path:
    """Save a random ``family`` model (``dinov3``, ``dinov2``, ``clip``, ``siglip``) of
    ``hidden`` features for ``size`` x ``size`` images, with its processor config, into
    ``folder``. CLIP is saved whole (vision + text, so ``pooling="projected"`` works)."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model: Any
    vit: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden,
        "image_size": size,
        "patch_size": 8,
    }
    if family == "dinov3":
        model = transformers.DINOv3ViTModel(
            transformers.DINOv3ViTConfig(**vit, num_register_tokens=2)
        )
    elif family == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(**vit))
    elif family == "clip":
        text = {"vocab_size": 64, "hidden_size": hidden, "intermediate_size": 2 * hidden}
        text |= {"num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16}
        text |= {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
        vision = {**vit, "projection_dim": 16}
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        model = transformers.CLIPModel(config)
    elif family == "siglip":
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vit))
    else:
        raise ValueError(f"unknown family {family!r}")
    hf_logging.disable_progress_bar()
    model.eval().save_pretrained(folder)
    settings = _processor_settings(family, size)
    (folder / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))
    return folder


def make_frame(height: int, width: int, seed: int) -> np.ndarray:
    """An RGB uint8 frame of smooth random colours (survives video compression)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    return np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:height, :width].copy()


def write_video(path: str | Path, frames: Sequence[np.ndarray], *, fps: int = 10) -> Path:
    """Write RGB frames as a lossless H.264 MP4 (``qp=0``; decoded pixels equal the
    frames up to the YUV conversion)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def make_headcam_detections(
    root: str | Path,
    *,
    subjects: Sequence[str] = ("00270001", "00280001", "00290001"),
    ages: Sequence[int] = (8, 9),
    categories: Sequence[str] = ("ball", "cup", "dog", "shoe"),
    videos_per_bin: int = 1,
    frames: int = 6,
    crops_per_frame: int = 2,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Head-camera-like data for seed 000: videos under ``root/videos/<subject>/`` and a
    YOLOE-like ``root/detections.csv`` (video, frame, x0..y1, category, subject, age_mo,
    score). Returns the table's path."""
    rng = np.random.default_rng(seed)
    height, width = size
    rows = []
    for s, subject in enumerate(subjects):
        for age in ages:
            for v in range(videos_per_bin):
                name = f"{subject}/{subject}_{age:02d}mo_{v}.mp4"
                base = (s * 1000 + age * 10 + v) * 100
                write_video(
                    Path(root) / "videos" / name,
                    [make_frame(height, width, base + f) for f in range(frames)],
                )
                for frame in range(frames):
                    for _ in range(crops_per_frame):
                        x0, y0 = int(rng.integers(0, width - 12)), int(rng.integers(0, height - 12))
                        x1 = int(rng.integers(x0 + 8, width + 1))
                        y1 = int(rng.integers(y0 + 8, height + 1))
                        rows.append(
                            {
                                "video": name,
                                "frame": frame,
                                "x0": x0,
                                "y0": y0,
                                "x1": x1,
                                "y1": y1,
                                "category": str(rng.choice(list(categories))),
                                "subject": subject,
                                "age_mo": age,
                                "score": round(float(rng.uniform(0.3, 1.0)), 3),
                            }
                        )
    import pandas as pd

    table = Path(root) / "detections.csv"
    frame_table = pd.DataFrame(rows)
    frame_table = frame_table.drop_duplicates(subset=["video", "frame", "x0", "y0", "x1", "y1"])
    frame_table.to_csv(table, index=False)
    return table


__all__ = ["make_frame", "make_headcam_detections", "make_tiny_image_model", "write_video"]

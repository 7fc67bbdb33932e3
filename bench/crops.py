"""Crops per second (issue 21): detections table -> decoded frames -> crops -> encoder -> store.

Generates head-camera-like videos (``--height`` x ``--width``, ``--frames`` frames each) and
a detections table, saves a random DINOv3 of ViT-B/16 size (768-d, 12 layers, 224 px; random
weights cost the same as trained ones) and a tiny one, then measures on this machine:

- input side only: decode each video once, cut every box, run the DINOv3 processor
  (``CropStream``, what DataLoader workers do), crops/s;
- ``embstore.extract_images`` end to end with the tiny model (the pipeline's overhead:
  decode, cut, preprocess, commits) and with the ViT-B/16-sized model, crops/s.

Usage: ``python bench/crops.py [--videos 4] [--frames 8] [--per-frame 4] [--device cpu]
[--models tiny,vitb16] [--num-workers N]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import embstore
from embstore.extraction.crops import read_detections
from embstore.extraction.image_extract import CropStream
from embstore.extraction.images import ImageEncoder
from embstore.testing.images import make_headcam_detections, make_tiny_image_model


def vitb_dinov3(folder: Path) -> Path:
    """A random DINOv3 ViT-B/16 (the seed's facebook/dinov3-vitb16 shape) with its processor."""
    if (folder / "config.json").exists():
        return folder
    import json as _json

    import transformers

    config = transformers.DINOv3ViTConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
        image_size=224,
        num_register_tokens=4,
    )
    transformers.DINOv3ViTModel(config).eval().save_pretrained(folder)
    make_tiny_image_model(folder / "tiny-for-processor", "dinov3", size=224)
    settings = _json.loads((folder / "tiny-for-processor/preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(_json.dumps(settings))
    shutil.rmtree(folder / "tiny-for-processor")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="subjects (one video each)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--per-frame", type=int, default=4)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--models", default="tiny,vitb16", help="which of tiny,vitb16 to run")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "embstore-bench-crops"
    )
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work / "data", ignore_errors=True)
    subjects = [f"00{i:02d}0001" for i in range(args.videos)]
    table = make_headcam_detections(
        work / "data",
        subjects=subjects,
        ages=(9,),
        frames=args.frames,
        crops_per_frame=args.per_frame,
        size=(args.height, args.width),
    )
    crops = read_detections(table).crops
    vitb = vitb_dinov3(work / "dinov3-vitb16-random")
    tiny = make_tiny_image_model(work / "tiny", "dinov3", size=224)
    encoder = ImageEncoder(vitb, device=args.device)
    start = time.perf_counter()
    n = sum(len(b["keys"]) for b in CropStream(work / "data/videos", crops, encoder.processor, 64))
    input_rate = n / (time.perf_counter() - start)
    results = {"crops": len(crops), "frame": f"{args.height}x{args.width}", "device": args.device}
    results["input_side_crops_per_s"] = round(input_rate, 1)
    for name, model in (("tiny", tiny), ("vitb16", vitb)):
        if name not in args.models.split(","):
            continue
        store = work / f"{name}.store"
        shutil.rmtree(store, ignore_errors=True)
        config = embstore.ImageExtractConfig(
            checkpoint=model,
            detections=table,
            device=args.device,
            num_workers=args.num_workers,
            batch_size=64,
        )
        report = embstore.extract_images(work / "data/videos", store=store, config=config)
        results[f"extract_{name}_crops_per_s"] = round(report.crops / report.seconds, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

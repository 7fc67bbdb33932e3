"""GPU extraction benchmark: ViT-L, real preprocessing, real JPEG echo DICOMs; clips/s and MFU.

Run on a CUDA machine, not in CI::

    python bench/gpu_extract.py [--inputs 256] [--workers 12] [--batch-size 32] [--pool mean]

Reports (1) the encoder alone on ready tensors and (2) the whole pipeline (DataLoader workers
decode + resize to uint8 crops, normalize on the GPU, inference, commits; ``--pool`` also stores
tokens) on copies of pydicom-data's 120-frame 480x640 JPEG Baseline ultrasound, each as clips/s
and model-FLOP utilization (MFU) of the
GPU's dense bf16 peak, and appends them to bench/RESULTS.md. The weights are random (no
download); the FLOPs and the data path are those of the real ViT-L.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def flops_per_clip(config, frames: int) -> float:
    """Forward FLOPs of the V-JEPA2 encoder on one clip (multiply-add = 2 FLOPs)."""
    d, p, t = config.hidden_size, config.patch_size, config.tubelet_size
    n = (frames // t) * (config.crop_size // p) ** 2
    per_layer = (
        2 * n * d * 3 * d
        + 2 * 2 * n * n * d
        + 2 * n * d * d
        + 2 * 2 * n * d * int(config.mlp_ratio * d)
    )
    return config.num_hidden_layers * per_layer + 2 * n * (3 * t * p * p) * d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="vitl")
    parser.add_argument("--pool", default="mean", help="mean, grid:T,H,W or none")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    from pydicom.data import get_testdata_file
    from transformers import VJEPA2Config, VJEPA2Model

    from embstore.extraction import extract
    from embstore.extraction.encoders import VJEPA2_PRESETS

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))
    config = VJEPA2Config(**VJEPA2_PRESETS[args.model], frames_per_clip=16)
    flops = flops_per_clip(config, 16)
    model = VJEPA2Model(config).cuda().eval()
    x = torch.randn(args.batch_size, 16, 3, config.crop_size, config.crop_size, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            model(pixel_values_videos=x, skip_predictor=True)
        torch.cuda.synchronize()
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            model(pixel_values_videos=x, skip_predictor=True)
        torch.cuda.synchronize()
    model_rate = reps * args.batch_size / (time.perf_counter() - start)
    rows = [("encoder alone (ready bf16 batches)", model_rate, model_rate * flops / peak)]
    print(f"{name}: encoder alone {model_rate:.1f} clips/s, MFU {rows[0][2]:.1%}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.save_pretrained(tmp / "hf")
        del model
        source = Path(get_testdata_file("color3d_jpeg_baseline.dcm"))
        for i in range(args.inputs):
            folder = tmp / "in" / f"p1000{i:04d}" / "s1"
            folder.mkdir(parents=True)
            shutil.copy(source, folder / f"{i}.dcm")
        report = extract(
            tmp / "in",
            store=tmp / "s.zarr",
            checkpoint=tmp / "hf",
            num_frames=16,
            frame_step=4,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device="cuda",
            layout="mimic-echo",
            pool=args.pool,
            confirm=True,
        )
        rate = report.clips / report.seconds
        rows.append(
            (
                f"whole pipeline ({args.workers} workers, pool {args.pool})",
                rate,
                rate * flops / peak,
            )
        )
        print(f"pipeline {rate:.1f} clips/s, MFU {rows[1][2]:.1%}", flush=True)
    command = "python bench/gpu_extract.py " + " ".join(sys.argv[1:])
    lines = [
        "",
        f"## GPU extraction ({args.model}, {name})",
        "",
        f"Produced by `{command.strip()}`; {flops / 1e12:.2f} TFLOP per "
        f"16x{config.crop_size}px clip, bf16 dense peak {peak / 1e12:.0f} TFLOP/s. "
        "Goal: MFU >= 50%.",
        "",
        "| what | clips/s | MFU |",
        "|---|---|---|",
        *(f"| {w} | {r:.1f} | {m:.1%} |" for w, r, m in rows),
    ]
    with args.results.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

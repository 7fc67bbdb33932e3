"""Decode + preprocess throughput of the extraction DataLoader alone (no model), on CPU.

Tells how many DataLoader workers one GPU needs: a ViT-L at 50% of an H100's bf16 peak eats
roughly 300 clips/s (see bench/gpu_extract.py). Appends its table to bench/RESULTS.md::

    python bench/dataloader.py [--inputs 24] [--frames 74] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from embstore.extract import VideoDataset, collate, list_inputs
from embstore.samples import make_dicom
from embstore.video import ClipSpec

HERE = Path(__file__).resolve().parent


def make_inputs(root: Path, n: int, frames: int) -> None:
    """Echo-like cines: ``frames`` frames of 600 x 800, RGB and YBR_FULL alternating."""
    for i in range(n):
        folder = root / f"p1000{i:04d}" / "s1"
        folder.mkdir(parents=True, exist_ok=True)
        photometric = "RGB" if i % 2 else "YBR_FULL"
        make_dicom(
            folder / f"{i}.dcm",
            frames=frames,
            rows=600,
            columns=800,
            photometric=photometric,
            seed=i,
        )


def throughput(root: Path, workers: int, spec: ClipSpec, batch: int, preprocess: bool) -> float:
    dataset = VideoDataset(root, list_inputs(root), spec, [], preprocess=preprocess)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, collate_fn=collate
    )
    start, clips = time.perf_counter(), 0
    for item in loader:
        clips += len(item["paths"]) * spec.clips
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=24)
    parser.add_argument("--frames", type=int, default=74)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    spec = ClipSpec(num_frames=16, frame_step=4, clips=1, crop=args.crop)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_inputs(Path(tmp), args.inputs, args.frames)
        for workers in (int(w) for w in args.workers.split(",")):
            for preprocess in (True, False):
                rate = throughput(Path(tmp), workers, spec, batch=4, preprocess=preprocess)
                per = rate / max(workers, 1)
                mode = "decode + resize" if preprocess else "decode only (resize on GPU)"
                rows.append((workers, mode, rate, per))
                print(
                    f"workers={workers}, {mode}: {rate:.1f} clips/s ({per:.1f}/worker)", flush=True
                )
    command = "python bench/dataloader.py " + " ".join(sys.argv[1:])
    lines = [
        "",
        "## Extraction DataLoader (decode + preprocess, CPU)",
        "",
        f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores: "
        f"{args.inputs} uncompressed {args.frames}-frame 600x800 DICOMs (RGB / YBR_FULL), one "
        f"16-frame clip (step 4) each at {args.crop}px.",
        "",
        "| workers | work in the workers | clips/s | clips/s per worker |",
        "|---|---|---|---|",
        *(f"| {w} | {m} | {r:.1f} | {p:.1f} |" for w, m, r, p in rows),
    ]
    with args.results.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Decode + preprocess throughput of the extraction DataLoader alone (no model), on CPU.

Tells how many DataLoader workers one GPU needs: a ViT-L at 50% of an H100's bf16 peak eats
roughly 300 clips/s (see bench/gpu_extract.py). Appends its table to bench/RESULTS.md::

    python bench/dataloader.py [--inputs 16] [--frames 74] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from embstore.extraction import ClipSpec
from embstore.extraction.dataset import VideoDataset, collate, list_inputs
from embstore.testing import make_dicom

HERE = Path(__file__).resolve().parent


def make_inputs(root: Path, n: int, frames: int) -> None:
    """Echo-like cines: ``frames`` frames of 600 x 800, RGB and YBR_FULL alternating."""
    for i in range(n):
        folder = root / f"p1000{i:04d}" / "s1"
        folder.mkdir(parents=True, exist_ok=True)
        kind = "RGB" if i % 2 else "YBR_FULL"
        make_dicom(
            folder / f"{i}.dcm", frames=frames, rows=600, columns=800, photometric=kind, seed=i
        )


def copy_real(root: Path, n: int) -> None:
    """``n`` copies of pydicom-data's 120-frame 480x640 JPEG Baseline YBR_FULL_422 ultrasound."""
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("color3d_jpeg_baseline.dcm"))
    for i in range(n):
        folder = root / f"p2000{i:04d}" / "s1"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / f"{i}.dcm")


def throughput(root: Path, workers: int, spec: ClipSpec) -> float:
    """Clips/s of workers decoding + resizing, and the main process normalizing to float."""
    dataset = VideoDataset(root, list_inputs(root), spec, [])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=workers, collate_fn=collate
    )
    start, clips = time.perf_counter(), 0
    for item in loader:
        spec.normalize(item["clips"])
        clips += len(item["paths"]) * spec.clips
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--frames", type=int, default=74)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "synthetic 600x800 uncompressed": Path(tmp) / "s",
            "real 480x640 JPEG": Path(tmp) / "j",
        }
        make_inputs(sets["synthetic 600x800 uncompressed"], args.inputs, args.frames)
        copy_real(sets["real 480x640 JPEG"], args.inputs)
        for kind, root in sets.items():
            for workers in (int(w) for w in args.workers.split(",")):
                for resize in ("upstream", "antialias"):
                    spec = ClipSpec(num_frames=16, frame_step=4, crop=args.crop, resize=resize)
                    rate = throughput(root, workers, spec)
                    per = rate / max(workers, 1)
                    mode = f"decode + resize={resize}"
                    rows.append((kind, workers, mode, rate, per))
                    print(f"{kind}, {workers} workers, {mode}: {rate:.1f} clips/s", flush=True)
    command = "python bench/dataloader.py " + " ".join(sys.argv[1:])
    lines = [
        "",
        "## Extraction DataLoader (decode + preprocess, CPU)",
        "",
        f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} "
        f"cores: {args.inputs} synthetic uncompressed {args.frames}-frame 600x800 DICOMs (RGB / "
        f"YBR_FULL) and {args.inputs} copies of a real 120-frame JPEG Baseline ultrasound; one "
        f"16-frame clip (step 4) each at {args.crop}px. Workers = 0 means in the main process.",
        "",
        "| inputs | workers | work in the workers | clips/s | clips/s per worker |",
        "|---|---|---|---|---|",
        *(f"| {k} | {w} | {m} | {r:.1f} | {p:.1f} |" for k, w, m, r, p in rows),
    ]
    with args.results.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

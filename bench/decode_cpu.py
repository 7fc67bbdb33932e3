"""CPU cost of the extraction input path per clip, against a bare libjpeg-turbo decode (the floor).

Copies of pydicom-data's real 120-frame 480x640 JPEG Baseline YBR_FULL_422 echo cine; one
16-frame clip (step 4) each at 256 px. Measured in CPU-seconds (``time.process_time``, torch
and OpenCV on one thread, best of 5) so that other work on a shared machine does not skew it;
clips per CPU-second is what one DataLoader worker can feed at most. Side by side:

- the CPU decoder's worker: read the DICOM, decode the 16 frames (Pillow / libjpeg-turbo),
  resize + crop (OpenCV), as ``VideoDataset`` does;
- the floor: Pillow decoding the same 16 frames' JPEG bytes, already in memory, to RGB
  (a bare libjpeg-turbo decode: no file, no header, no resize);
- the GPU decoder's worker: read the DICOM and hand over the 16 frames' bytes (decoding and
  resizing then happen on the GPU);
- ``+ normalize`` (the main process's share on the CPU path; on the GPU path it is the GPU's).

The ratio worker / floor says how much of a worker's time is not JPEG decoding. Appends its
table to bench/RESULTS.md::

    python bench/decode_cpu.py [--inputs 8] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

from embstore.extraction import ClipSpec
from embstore.extraction.dataset import VideoDataset, list_inputs

HERE = Path(__file__).resolve().parent


def cpu_ms(stage: Callable[[], None], count: int) -> float:
    """Best of 5 CPU-seconds for ``stage``, per item, in ms (after one warm-up)."""
    stage()
    times = []
    for _ in range(5):
        start = time.process_time()
        stage()
        times.append(time.process_time() - start)
    return min(times) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    import cv2
    import pydicom
    from PIL import Image, features
    from pydicom.data import get_testdata_file

    from embstore.extraction.gpu import jpeg_frames

    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    source = Path(str(get_testdata_file("color3d_jpeg_baseline.dcm")))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.inputs):
            (root / f"p{i}").mkdir()
            shutil.copy(source, root / f"p{i}" / "x.dcm")
        spec = ClipSpec(num_frames=16, frame_step=4, crop=256)
        cpu = VideoDataset(root, list_inputs(root), spec, [])
        gpu = VideoDataset(root, list_inputs(root), spec, [], decoder="gpu")
        ds = pydicom.dcmread(source)
        wanted = spec.indices(int(ds.NumberOfFrames)).ravel()
        frames = jpeg_frames(ds, int(ds.NumberOfFrames), wanted)[0]  # the 16 frames' bytes

        def worker(dataset: VideoDataset, normalize: bool = False) -> Callable[[], None]:
            def stage() -> None:
                for i in range(len(dataset)):
                    crops = dataset[i]["clips"]
                    if normalize:
                        spec.normalize(crops)

            return stage

        def floor() -> None:
            for _ in range(args.inputs):
                for data in frames:
                    with Image.open(BytesIO(data)) as image:  # YBR JPEG: RGB straight away
                        np.asarray(image if image.mode == "RGB" else image.convert("RGB"))

        n = args.inputs
        rows = [
            ("CPU decoder's worker: read + decode + resize", cpu_ms(worker(cpu), n)),
            ("floor: libjpeg-turbo (Pillow) decode of the 16 frames", cpu_ms(floor, n)),
            ("GPU decoder's worker: read + frame bytes", cpu_ms(worker(gpu), n)),
            ("CPU decoder's worker + normalize (main)", cpu_ms(worker(cpu, True), n)),
        ]
        for what, ms in rows:
            print(f"{what}: {ms:.1f} ms/clip ({1000 / ms:.1f} clips per CPU-second)", flush=True)
        ratio = rows[0][1] / rows[1][1]
        print(f"worker / floor: {ratio:.2f}")
        if args.profile:
            stage = worker(cpu)
            cProfile.runctx("stage()", globals(), {"stage": stage}, str(root / "prof"))
            pstats.Stats(str(root / "prof")).sort_stats("tottime").print_stats(12)
    turbo = features.version_feature("libjpeg_turbo")
    command = "python bench/decode_cpu.py " + " ".join(sys.argv[1:])
    lines = [
        "",
        "## Extraction decode, CPU time per clip against the libjpeg-turbo floor (issue 19)",
        "",
        f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} "
        f"cores (load {os.getloadavg()[0]:.1f}; CPU-seconds, best of 5): the real 120-frame "
        f"480x640 JPEG echo cine, one 16-frame clip at 256 px; Pillow with libjpeg-turbo "
        f"{turbo}.",
        "",
        "| work per clip | ms/clip (CPU) | clips per CPU-second |",
        "|---|---|---|",
        *(f"| {w} | {ms:.1f} | {1000 / ms:.1f} |" for w, ms in rows),
        f"| ratio CPU worker / floor | {ratio:.2f} | |",
    ]
    with args.results.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

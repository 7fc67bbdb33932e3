"""CPU cost of the extraction input path per clip, in the main process (no DataLoader).

Copies of pydicom-data's real 120-frame 480x640 JPEG Baseline YBR_FULL_422 echo cine; one
16-frame clip (step 4) each at 256 px. Measured in CPU-seconds (``time.process_time``, torch
on one thread, best of 5) so that other work on a shared machine does not skew it; clips per
CPU-second is what one DataLoader worker can feed at most::

    python bench/decode_cpu.py [--inputs 8] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import torch

from embstore.extraction import ClipSpec
from embstore.extraction.dataset import VideoDataset, list_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    from pydicom.data import get_testdata_file

    torch.set_num_threads(1)
    source = Path(get_testdata_file("color3d_jpeg_baseline.dcm"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.inputs):
            (root / f"p{i}").mkdir()
            shutil.copy(source, root / f"p{i}" / "x.dcm")
        spec = ClipSpec(num_frames=16, frame_step=4, crop=256)
        dataset = VideoDataset(root, list_inputs(root), spec, [])

        def stage(normalize: bool) -> None:
            for i in range(len(dataset)):
                crops = dataset[i]["clips"]
                if normalize:
                    spec.normalize(crops)

        for what, normalize in (("decode + resize (worker)", False), ("+ normalize", True)):
            stage(normalize)  # warm up
            times = []
            for _ in range(5):
                start = time.process_time()
                stage(normalize)
                times.append(time.process_time() - start)
            best = min(times) / args.inputs
            print(f"{what}: {1 / best:.1f} clips per CPU-second ({best * 1000:.0f} ms/clip)")
        if args.profile:
            cProfile.runctx("stage(True)", globals(), {"stage": stage}, str(root / "prof"))
            pstats.Stats(str(root / "prof")).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()

"""Commit latency as history grows: the 1,000th append commit against the 10th.

An extraction run commits every ``--commit-every`` videos, so a long run makes hundreds or
thousands of versions. This appends ``--commits`` small batches to a fresh store and reports the
median commit time of the first and the last ten, and the disk used before and after ``gc``.
Usage::

    python bench/commit_latency.py [--commits 1000] [--rows 16] [--dim 1024] [--row-chunk N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

import embstore
from embstore.store import StoreWriter


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--row-chunk", type=int, default=None, help="default: the store's")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embstore-commits-"))
    store = work / "s"
    writer = StoreWriter(store, feature_size=args.dim, row_chunk=args.row_chunk)
    rng = np.random.default_rng(0)
    times = []
    for c in range(args.commits):
        paths = [f"p1{c:05d}/s9{c:07d}/{c:06d}_{i:04d}.dcm" for i in range(args.rows)]
        vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
        start = time.perf_counter()
        writer.append(paths, vectors, {"subject": [p[:8] for p in paths]})
        times.append(time.perf_counter() - start)
    first, last = statistics.median(times[:10]), statistics.median(times[-10:])
    before = du(store)
    chunk = embstore.open(store).embedding.data.chunksize[0]
    zero = timedelta(0)
    embstore.gc(store, older_than=zero, safety_margin=zero)
    after = du(store)
    print(
        f"{args.commits} commits of {args.rows} x {args.dim} (row chunk "
        f"{chunk}): median commit "
        f"first 10 {first * 1000:.1f} ms, last 10 {last * 1000:.1f} ms, ratio {last / first:.2f}; "
        f"disk {before / 2**20:.1f} MiB before gc, {after / 2**20:.1f} MiB after "
        f"(data {args.commits * args.rows * args.dim * 4 / 2**20:.1f} MiB)"
    )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

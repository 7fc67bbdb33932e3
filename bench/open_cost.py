"""What opening a store costs now that labels load into memory, and the one-subject query.

Builds (once) a 500K x 1024 store like ``bench/run.py`` item 4 (subject and study labels,
rows grouped by subject) and the merged ``.pt`` of the same rows, then measures, best of
``--repeat`` in this process (warm page cache):

- ``xr.open_zarr`` alone (lazy labels: what ``embstore.open`` did before),
- ``embstore.open`` (labels loaded, ``path`` indexed, provenance encoded),
- open + ``ds.emb.rows(subject=...)`` + the rows' embeddings, against ``torch.load`` of the
  merged ``.pt`` (loaded once; goal: ratio <= 0.005).

Usage: ``python bench/open_cost.py [--workdir /tmp/embstore-bench] [--scale 1.0]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import xarray as xr

import embstore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import best_of, make_large_store  # noqa: E402 - the bench scripts share builders


def make_merged_pt(store: Path, out: Path) -> None:
    """The store's rows as one ``{path: tensor}`` dict (the merged file users load today)."""
    import torch

    if out.exists():
        return
    ds = embstore.open(store)
    data = {}
    for start in range(0, ds.sizes["sample"], 32768):
        block = ds.isel(sample=slice(start, start + 32768))
        x = torch.from_numpy(block.embedding.values)
        data.update({p: x[i].clone() for i, p in enumerate(block.path.values)})
    torch.save(data, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-bench"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true", help="Skip the merged .pt load.")
    args = parser.parse_args()
    rows = int(500_000 * args.scale)
    args.workdir.mkdir(parents=True, exist_ok=True)
    big = args.workdir / "big.zarr"
    start = time.perf_counter()
    make_large_store(big, rows, 1024)
    print(f"store ready ({time.perf_counter() - start:.1f} s)", flush=True)
    lazy = best_of(args.repeat, lambda: xr.open_zarr(big, consolidated=True, chunks={}))
    full = best_of(args.repeat, lambda: embstore.open(big))
    subject = embstore.open(big).subject.values[rows // 2]

    def one_subject() -> None:
        picked = embstore.open(big).emb.rows(subject=subject)
        assert picked.embedding.values.shape[0] > 0

    query = best_of(args.repeat, one_subject)
    print(f"xr.open_zarr (lazy labels): {lazy:.3f} s")
    print(f"embstore.open (labels in memory, path indexed): {full:.3f} s")
    print(f"open + one subject's rows: {query:.3f} s")
    if args.skip_torch:
        return
    import torch

    merged = args.workdir / "vitl_embeddings_all.pt"
    make_merged_pt(big, merged)
    load = best_of(1, lambda: torch.load(merged, weights_only=True))
    print(f"torch.load merged .pt: {load:.3f} s; ratio {query / load:.4f} (goal <= 0.005)")


if __name__ == "__main__":
    main()

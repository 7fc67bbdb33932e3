"""What opening a store costs, and the one-subject query against ``torch.load`` (issue 11).

Builds (once) a 500K x 1024 store like ``bench/run.py`` item 4 (subject and study labels,
rows grouped by subject) and the merged ``.pt`` of the same rows, then measures, best of
``--repeat`` in this process (warm page cache), each from a fresh ``embstore.open``:

- ``xr.open_zarr`` of the repository's session (plain xarray, dask labels),
- ``embstore.open`` (labels read on first use, ``path`` index built on the first lookup),
- open + ``ds.emb.rows(subject=...)`` + the rows' embeddings: the one-subject query, against
  ``torch.load`` of the merged ``.pt`` (loaded once; goal: ratio <= 0.005),
- open + ``ds.where(ds.subject == s, drop=True)`` + the rows' embeddings (xarray's ``where``
  compares every coordinate while merging, so it reads every label),
- open + ``ds.sel(path=p)`` (reads ``path`` and builds the index),
- open + every label read (what ``embstore.open`` itself cost when it loaded them all),
- open the previous version + ``ds.emb.rows(subject=...)`` + the rows' embeddings.

Labels come from the label cache (``embstore.store.label_cache``: codes + dictionary per
label and version) after the first read of each version; ``--cold`` empties it before every
measurement, to time the first read of a version.

Usage: ``python bench/open_cost.py [--workdir /tmp/embstore-bench] [--scale 1.0]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import xarray as xr

import embstore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import best_of, make_large_store, make_merged_pt  # noqa: E402 - shared builders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-bench"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true", help="Skip the merged .pt load.")
    parser.add_argument("--cold", action="store_true", help="Empty the label cache each time.")
    args = parser.parse_args()
    rows = int(500_000 * args.scale)
    args.workdir.mkdir(parents=True, exist_ok=True)
    big = args.workdir / "big.store"
    start = time.perf_counter()
    make_large_store(big, rows, 1024)
    print(f"store ready ({time.perf_counter() - start:.1f} s)", flush=True)
    first = embstore.open(big)
    subject, path = first.subject.values[rows // 2], first.path.values[rows // 2]
    # the version before the newest that has rows (row 0's subject is in every one of them)
    previous = next((v.id for v in embstore.log(big)[1:] if v.rows), embstore.log(big)[0].id)
    cache = args.workdir / "label-cache"
    os.environ["EMBSTORE_CACHE_DIR"] = str(cache)
    setup = (lambda: shutil.rmtree(cache, ignore_errors=True)) if args.cold else None

    def plain() -> None:
        from embstore.store.repo import readonly_group

        _, session, _ = readonly_group(big, None)
        xr.open_zarr(session.store, consolidated=False, chunks={})

    def rows_query() -> None:
        picked = embstore.open(big).emb.rows(subject=subject)
        assert picked.embedding.values.shape[0] > 0

    def where_query() -> None:
        ds = embstore.open(big)
        assert ds.where(ds.subject == subject, drop=True).embedding.values.shape[0] > 0

    def previous_query() -> None:
        picked = embstore.open(big, version=previous).emb.rows(subject=first.subject.values[0])
        assert picked.embedding.values.shape[0] > 0

    def sel_path() -> None:
        assert embstore.open(big).sel(path=path).embedding.values.shape == (1024,)

    def every_label() -> None:
        ds = embstore.open(big)
        for coord in ds.coords.values():
            if coord.dims == ("sample",):
                assert len(coord.values) == rows

    r = args.repeat
    timings = {
        "xr.open_zarr (plain xarray, dask labels)": best_of(r, plain),
        "embstore.open (nothing read)": best_of(r, lambda: embstore.open(big)),
        "open + ds.emb.rows(subject=...) + embeddings": best_of(r, rows_query, setup),
        "open + ds.where(subject == ..., drop=True) + embeddings": best_of(r, where_query, setup),
        "open + ds.sel(path=...) (index built)": best_of(r, sel_path, setup),
        "open + every label read": best_of(r, every_label, setup),
        "open previous version + ds.emb.rows(subject=...)": best_of(r, previous_query, setup),
    }
    for what, seconds in timings.items():
        print(f"{what}: {seconds:.3f} s", flush=True)
    if args.skip_torch:
        return
    import torch

    merged = args.workdir / "vitl_embeddings_all.pt"
    make_merged_pt(big, merged)
    load = best_of(1, lambda: torch.load(merged, weights_only=True))
    query = timings["open + ds.emb.rows(subject=...) + embeddings"]
    where = timings["open + ds.where(subject == ..., drop=True) + embeddings"]
    print(f"torch.load merged .pt: {load:.3f} s")
    print(f"one-subject query (rows) / torch.load: {query / load:.4f} (goal <= 0.005)")
    print(f"one-subject query (where) / torch.load: {where / load:.4f}")


if __name__ == "__main__":
    main()

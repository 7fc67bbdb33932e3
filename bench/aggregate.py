"""Aggregation (issue 21): ``embstore.aggregate`` against pandas and a lazy xarray groupby.

Builds (once per size) a store of ``--rows`` x ``--dim`` float32 rows whose
``(category, subject, age_mo)`` labels fall into ``--groups`` groups (seed 000: 1M crops,
~35K month-level bins), then, in this one process, best of ``--repeat``:

- ``embstore.aggregate`` (one lazy pass, dask + flox, float64 sums) into a new store,
- pandas: read the embeddings into memory, float64 ``DataFrame.groupby(keys).mean()``,
- xarray: ``ds.embedding.astype("f8").groupby(key).mean()`` on the lazy dataset (flox is
  installed, so xarray uses it), computed,

and checks embstore against pandas (max relative difference). Each side runs in its own child
process, so each peak memory (``VmHWM``) is its own and pandas' ~9 GB at 1M x 768 is freed
when it ends; ``read`` (the matrix read a chunk at a time, nothing computed) is the I/O floor
of any one-pass method. embstore's peak is also measured on ``--rows / 4`` rows (flat in rows
means a ratio near 1; the output itself, groups x dim x 8 bytes, is the floor). The stores
are kept in ``--workdir`` and reused by later runs of the same size.

Usage: ``python bench/aggregate.py [--rows 1000000] [--dim 768] [--groups 35000]
[--skip xarray]`` (``--rows 40000 --groups 2000`` runs in seconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import embstore

BY = ["category", "subject", "age_mo"]


def make_store(path: Path, rows: int, dim: int, groups: int, seed: int = 0) -> None:
    """Rows in extraction order (groups scattered), written chunk by chunk (flat memory).

    Built under a temporary name and renamed when complete, so a ``--workdir`` holding
    ``path`` holds a whole store: later runs reuse it (the 1M-row build takes minutes)."""
    if path.exists():
        return
    final, path = path, path.with_name(path.name + ".partial")
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    categories = np.array([f"cat{i:03d}" for i in range(163)], dtype=object)
    subjects = np.array([f"00{i:02d}0001" for i in range(31)], dtype=object)
    combos = rng.choice(163 * 31 * 32, size=groups, replace=False)
    cat, rest = np.divmod(combos, 31 * 32)
    sub, age = np.divmod(rest, 32)
    with embstore.writer(path, feature_size=dim, model="bench") as w:
        step = w.chunk
        for start in range(0, rows, step):
            n = min(step, rows - start)
            g = rng.integers(0, groups, n)
            labels = {
                "category": categories[cat[g]],
                "subject": subjects[sub[g]],
                "age_mo": age[g] + 6,
            }
            vectors = rng.standard_normal((n, dim), dtype=np.float32) + g[:, None] % 7
            w.append(
                [f"v{i // 1000:05d}.mp4#f{i:07d}" for i in range(start, start + n)], vectors, labels
            )
    path.rename(final)


def best_of(repeat: int, func) -> tuple[float, object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_embstore(store: Path, out: Path) -> embstore.AggregateReport:
    if out.exists():
        shutil.rmtree(out)
    return embstore.aggregate(store, out, by=BY)


def run_read(store: Path) -> float:
    """The I/O floor: read the matrix a chunk at a time (what any one-pass method must do)."""
    ds = embstore.open(store)
    step = int(ds.embedding.encoding["chunks"][0])
    total = 0.0
    for start in range(0, ds.sizes["sample"], step):
        total += float(ds.embedding.isel(sample=slice(start, start + step)).values[0, 0])
    return total


def run_pandas(store: Path):  # noqa: ANN201
    import pandas as pd

    ds = embstore.open(store)
    values = ds.embedding.values.astype(np.float64)  # the float32 read is freed right after
    frame = pd.DataFrame(values, copy=False)
    del values
    keys = [ds[name].values for name in BY]
    return frame.groupby(keys).mean()


def run_xarray(store: Path):  # noqa: ANN201
    ds = embstore.open(store)
    key = np.char.add(
        np.char.add(ds.category.values.astype(str), "/"),
        np.char.add(ds.subject.values.astype(str), "_" + ds.age_mo.values.astype(str)),
    )
    lazy = ds.embedding.astype("f8").assign_coords(group=("sample", key))
    return lazy.groupby("group").mean().compute()


def peak_mib() -> float:
    """This process's peak RSS in MiB (``VmHWM``: ``ru_maxrss`` is inherited across fork)."""
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024


def side(name: str, store: Path, out: Path, repeat: int) -> dict[str, float]:
    """One side of the comparison, run in this (child) process: best time of ``repeat``,
    peak memory, and for pandas the largest relative difference from embstore's ``out``."""
    result: dict[str, float] = {}
    if name == "embstore":
        seconds, _ = best_of(repeat, lambda: run_embstore(store, out))
    elif name == "read":
        seconds, _ = best_of(repeat, lambda: run_read(store))
    elif name == "xarray":
        seconds, _ = best_of(repeat, lambda: run_xarray(store))
    else:
        seconds, expected = best_of(repeat, lambda: run_pandas(store))
        got = embstore.open(out)
        index = list(zip(got.category.values, got.subject.values, got.age_mo.values, strict=True))
        reference = expected.loc[index].to_numpy()  # type: ignore[union-attr]
        diff = np.abs(got.embedding.values - reference) / np.abs(reference)
        result["max_rel_diff"] = float(np.max(diff))
    return {"seconds": seconds, "peak_mib": peak_mib(), **result}


def in_child(name: str, store: Path, out: Path, repeat: int) -> dict[str, float]:
    """Run :func:`side` in a fresh process (each side's peak memory is its own)."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--side",
            name,
            "--store",
            str(store),
            "--out",
            str(out),
            "--repeat",
            str(repeat),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:  # e.g. killed for memory (-9): recorded, the other sides still run
        print(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}", flush=True)
        return {"seconds": float("nan"), "peak_mib": float("nan"), "exit": done.returncode}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(name, result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--groups", type=int, default=35_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-bench-aggregate"))
    parser.add_argument("--skip", default="", help="comma-separated sides not to run (xarray...)")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: one side, in a child
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.store, args.out, args.repeat)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    name = f"{args.rows}x{args.dim}g{args.groups}"
    store, quarter = args.workdir / f"{name}.store", args.workdir / f"{name}-quarter.store"
    start = time.perf_counter()
    make_store(store, args.rows, args.dim, args.groups)
    make_store(quarter, args.rows // 4, args.dim, args.groups)
    print(f"stores ready ({time.perf_counter() - start:.1f} s)", flush=True)
    out, skip = args.workdir / "out.store", set(args.skip.split(","))
    sides = {
        s: in_child(s, store, out, args.repeat)
        for s in ("read", "embstore", "pandas", "xarray")
        if s not in skip
    }
    quarter_peak = in_child("embstore", quarter, args.workdir / "quarter-out.store", 1)["peak_mib"]
    t_emb = sides["embstore"]["seconds"]
    results: dict[str, object] = {
        "rows": args.rows,
        "dim": args.dim,
        "groups": args.groups,
        **{f"{s}_s": round(r["seconds"], 3) for s, r in sides.items()},
        **{f"{s}_peak_mib": round(r["peak_mib"], 1) for s, r in sides.items()},
        **{
            f"ratio_vs_{s}": round(t_emb / r["seconds"], 3)
            for s, r in sides.items()
            if s != "embstore"
        },
        "embstore_peak_mib_quarter_rows": round(quarter_peak, 1),
        "peak_ratio_rows_vs_quarter": round(sides["embstore"]["peak_mib"] / quarter_peak, 3),
        "output_float64_mib": round(args.groups * args.dim * 8 / 2**20, 1),
        "embedding_mib": round(args.rows * args.dim * 4 / 2**20, 1),
    }
    if "pandas" in sides:
        results["max_rel_diff_vs_pandas"] = sides["pandas"]["max_rel_diff"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Aggregation (issue 21): ``embstore.aggregate`` against pandas and a lazy xarray groupby.

Builds (once per size) a store of ``--rows`` x ``--dim`` float32 rows whose
``(category, subject, age_mo)`` labels fall into ``--groups`` groups (seed 000: 1M crops,
~35K month-level bins), then, in this one process, best of ``--repeat``:

- ``embstore.aggregate`` (one lazy pass, dask + flox, float64 sums) into a new store,
- pandas: read the embeddings into memory, float64 ``DataFrame.groupby(keys).mean()``,
- xarray: ``ds.embedding.astype("f8").groupby(key).mean()`` on the lazy dataset (flox is
  installed, so xarray uses it), computed,

and checks embstore against pandas (max relative difference). Peak memory is measured in
child processes aggregating ``--rows / 4`` and ``--rows`` rows (flat in rows means a ratio
near 1; the output itself, groups x dim x 8 bytes, is the floor).

Usage: ``python bench/aggregate.py [--rows 1000000] [--dim 768] [--groups 35000]``
(``--rows 40000 --groups 2000`` runs in seconds).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import embstore

BY = ["category", "subject", "age_mo"]


def make_store(path: Path, rows: int, dim: int, groups: int, seed: int = 0) -> None:
    """Rows in extraction order (groups scattered), written chunk by chunk (flat memory)."""
    if path.exists():
        return
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


def run_pandas(store: Path):  # noqa: ANN201
    import pandas as pd

    ds = embstore.open(store)
    frame = pd.DataFrame(ds.embedding.values.astype(np.float64))
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


def child_peak(store: Path, out: Path) -> float:
    """Peak RSS (MiB, ``VmHWM``: ``ru_maxrss`` is inherited across fork) of a fresh process
    that runs ``embstore.aggregate``."""
    code = (
        "import sys, shutil, pathlib, embstore\n"
        "out = pathlib.Path(sys.argv[2]); shutil.rmtree(out, ignore_errors=True)\n"
        "embstore.aggregate(sys.argv[1], out, by=['category', 'subject', 'age_mo'])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--groups", type=int, default=35_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-bench-aggregate"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    name = f"{args.rows}x{args.dim}g{args.groups}"
    store, quarter = args.workdir / f"{name}.store", args.workdir / f"{name}-quarter.store"
    start = time.perf_counter()
    make_store(store, args.rows, args.dim, args.groups)
    make_store(quarter, args.rows // 4, args.dim, args.groups)
    print(f"stores ready ({time.perf_counter() - start:.1f} s)", flush=True)
    out = args.workdir / "out.store"
    t_emb, report = best_of(args.repeat, lambda: run_embstore(store, out))
    t_pd, expected = best_of(args.repeat, lambda: run_pandas(store))
    t_xr, _ = best_of(args.repeat, lambda: run_xarray(store))
    got = embstore.open(out)
    index = list(zip(got.category.values, got.subject.values, got.age_mo.values, strict=True))
    reference = expected.loc[index].to_numpy()
    rel = float(np.max(np.abs(got.embedding.values - reference) / np.abs(reference)))
    peak_full = child_peak(store, args.workdir / "peak.store")
    peak_quarter = child_peak(quarter, args.workdir / "peak.store")
    output_mib = report.groups * args.dim * 8 / 2**20
    results = {
        "rows": args.rows,
        "dim": args.dim,
        "groups": report.groups,
        "embstore_s": round(t_emb, 3),
        "pandas_s": round(t_pd, 3),
        "xarray_flox_s": round(t_xr, 3),
        "ratio_vs_pandas": round(t_emb / t_pd, 3),
        "ratio_vs_xarray": round(t_emb / t_xr, 3),
        "max_rel_diff_vs_pandas": rel,
        "peak_rss_mib_rows": round(peak_full, 1),
        "peak_rss_mib_quarter_rows": round(peak_quarter, 1),
        "peak_ratio_rows_vs_quarter": round(peak_full / peak_quarter, 3),
        "output_float64_mib": round(output_mib, 1),
        "embedding_mib": round(args.rows * args.dim * 4 / 2**20, 1),
        "this_process_maxrss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

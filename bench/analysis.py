"""Issue 22, side by side in one run: label filters, old versions, neighbours, groupby.

Builds (once, in ``--workdir``) an echo-like store of ``--rows`` x ``--dim`` float32 rows
(~12 rows a subject, 4 a study, 163 categories, 32 ages; the last sixth appended as a second
version) from clustered vectors, the same rows as a ``.npy`` file, and, if ``lance`` is
installed, a Lance dataset. Then every measurement runs in a fresh process; the time is taken
in the process after the library is imported (the workload only), best of ``--repeat``:

1. open + one subject's rows (current version): embstore, embstore at ``--baseline`` (a git
   commit, run from a ``git archive`` of it: the numbers before this change), Lance;
2. the same subject from the previous version;
3. exact top-10 cosine for 100 queries: ``embstore.neighbors`` on the store against numpy
   brute force over blocks of a memory-mapped ``.npy`` of the same rows (what the
   HF ``datasets`` + numpy peer does over its Arrow memory map);
4. one approximate query (``build_index`` once, the index loaded once per process; the time
   is the median of 100 single queries) and its recall@10 against exact;
5. ``groupby(["age_mo", "category"]).mean()`` on the store (xarray + flox) against pandas on
   the same rows already in memory.

The library's imports (flox included, and dask's first-compute import of ``distributed``
when installed) happen before the timer. Label filters are timed twice: "cold" (empty label
cache: the first read of that version) and "warm" (the cache a previous process left, what
every later process sees).

Usage: ``python bench/analysis.py [--rows 300000] [--dim 1024] [--workdir /tmp/embstore-a22]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
K, QUERIES = 10, 100


def subject_of(i: int) -> str:
    return f"p1{i // 12:07d}"


def make_data(work: Path, rows: int, dim: int) -> None:
    """The store (two versions), the same rows as ``x.npy``, and labels as ``labels.npz``."""
    import embstore
    from embstore.store import StoreWriter

    store = work / "a22.store"
    if embstore.store.is_store(store) and (work / "x.npy").exists():
        return
    shutil.rmtree(store, ignore_errors=True)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((max(2, rows // 200), dim)).astype(np.float32) * 2
    x = np.lib.format.open_memmap(work / "x.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    writer = StoreWriter(store, feature_size=dim)
    cut = rows - rows // 6  # the previous version holds the rows before the cut
    spans = [(a, min(a + 32768, cut)) for a in range(0, cut, 32768)]
    spans += [(a, min(a + 32768, rows)) for a in range(cut, rows, 32768)]
    for start, stop in spans:
        idx = np.arange(start, stop)
        block = centers[rng.integers(0, len(centers), len(idx))]
        block += rng.standard_normal(block.shape, dtype=np.float32)
        x[start:stop] = block
        paths = [f"{subject_of(i)}/s9{i // 4:07d}/{i:08d}_0001.mp4" for i in idx]
        labels = {
            "subject": [subject_of(i) for i in idx],
            "study": [f"s9{i // 4:07d}" for i in idx],
            "category": [f"c{i % 163:03d}" for i in idx],
            "age_mo": (6 + idx % 32).tolist(),
        }
        writer.append(paths, block, labels)
        if stop == cut:
            embstore.tag(store, "previous")
    x.flush()
    _make_lance(work, rows)


def _make_lance(work: Path, rows: int) -> None:
    try:
        import lance
        import pyarrow as pa
    except ImportError:
        return
    x = np.load(work / "x.npy", mmap_mode="r")
    subjects = [subject_of(i) for i in range(rows)]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(x).reshape(-1)), x.shape[1])
    cut = rows - rows // 6
    table = pa.table({"subject": subjects, "embedding": emb})
    lance.write_dataset(table.slice(0, cut), str(work / "peer.lance"), mode="overwrite")
    lance.write_dataset(table.slice(cut), str(work / "peer.lance"), mode="append")


# -- one measurement per process --------------------------------------------------------------


def child(system: str, workload: str, work: Path, rows: int) -> dict[str, Any]:
    subject = subject_of(rows // 2 - rows // 12)  # in both versions
    store = work / "a22.store"
    if system.startswith("embstore"):
        import importlib

        import dask.array

        import embstore

        modules = ("embstore.store.read", "embstore._neighbors", "embstore.accessor", "flox.xarray")
        for module in modules:
            importlib.import_module(module)  # the library imported: its lazy imports too
        # dask's first compute imports `distributed` when installed (to look for a Client):
        # 0.2-1.2 s that any dask user pays once per process; paid here, before the timer
        dask.array.zeros(1).compute()

        if workload in ("subject", "subject-previous"):
            version = "previous" if workload == "subject-previous" else None
            start = time.perf_counter()
            ds = embstore.open(store, version=version)
            got = ds.isel(sample=(ds.subject == subject).values).embedding.values
            return {"seconds": time.perf_counter() - start, "check": len(got)}
        return _embstore_compute(workload, store, work)
    if system == "lance":
        import lance

        start = time.perf_counter()
        ds = lance.dataset(str(work / "peer.lance"))
        if workload == "subject-previous":
            ds = ds.checkout_version(ds.version - 1)
        t = ds.to_table(columns=["embedding"], filter=f"subject = '{subject}'")
        got = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
        return {"seconds": time.perf_counter() - start, "check": len(got)}
    return _numpy_peer(workload, work)


def _queries(x: Any) -> np.ndarray:
    rng = np.random.default_rng(7)
    picks = np.sort(rng.choice(len(x), QUERIES, replace=False))
    return np.asarray(x[picks]) + 0.3 * rng.standard_normal((QUERIES, x.shape[1]), np.float32)


def _embstore_compute(workload: str, store: Path, work: Path) -> dict[str, Any]:
    import embstore

    q = _queries(np.load(work / "x.npy", mmap_mode="r"))
    if workload == "exact":
        start = time.perf_counter()
        table = embstore.neighbors(store, q, k=K)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "check": table["path"].tolist()}
    if workload == "approximate":
        ds = embstore.open(store)
        start = time.perf_counter()
        embstore.neighbors(ds, q[:1], k=K, approximate=True)  # loads the index
        load = time.perf_counter() - start
        times, found = [], []
        for i in range(QUERIES):
            start = time.perf_counter()
            table = embstore.neighbors(ds, q[i : i + 1], k=K, approximate=True)
            times.append(time.perf_counter() - start)
            found.append(table["path"].tolist())
        return {"seconds": float(np.median(times)), "load": load, "check": found}
    ds = embstore.open(store)
    start = time.perf_counter()
    ds.embedding.groupby(["age_mo", "category"]).mean().compute()
    return {"seconds": time.perf_counter() - start, "check": None}


def _numpy_peer(workload: str, work: Path) -> dict[str, Any]:
    import pandas as pd

    if workload == "groupby":
        import embstore

        ds = embstore.open(work / "a22.store")
        x = np.load(work / "x.npy")
        keys = [np.asarray(ds.age_mo.values), np.asarray(ds.category.values)]
        start = time.perf_counter()
        pd.DataFrame(x).groupby(keys).mean()
        return {"seconds": time.perf_counter() - start, "check": None}
    x = np.load(work / "x.npy", mmap_mode="r")
    q = _queries(x)
    start = time.perf_counter()
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    best_s = np.full((QUERIES, 0), -np.inf, np.float32)
    best_i = np.zeros((QUERIES, 0), np.int64)
    for a in range(0, len(x), 16384):
        b = np.asarray(x[a : a + 16384])
        s = (qn @ b.T) / np.sqrt(np.einsum("ij,ij->i", b, b))
        top = np.argpartition(s, -K, axis=1)[:, -K:]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        best_i = np.concatenate([best_i, top + a], 1)
        keep = np.argpartition(best_s, -K, axis=1)[:, -K:]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return {"seconds": time.perf_counter() - start, "check": None}


# -- the parent ------------------------------------------------------------------------------


def run(system: str, workload: str, args: argparse.Namespace, cache: str) -> dict[str, Any]:
    env = {**os.environ, "EMBSTORE_CACHE_DIR": cache}
    if system == "embstore@baseline":
        env["PYTHONPATH"] = str(args.workdir / "baseline-src")
    else:
        env["PYTHONPATH"] = str(HERE.parent)
    cmd = [sys.executable, __file__, "--child", system, workload, "--rows", str(args.rows),
           "--dim", str(args.dim), "--workdir", str(args.workdir)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{system} {workload} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(system: str, workload: str, args: argparse.Namespace, cache: str) -> dict[str, Any]:
    runs = [run(system, workload, args, cache) for _ in range(args.repeat)]
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-a22"))
    parser.add_argument("--baseline", default="9ca0569", help="Commit measured as 'before'.")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(*args.child, args.workdir, args.rows)))
        return
    sys.path.insert(0, str(HERE.parent))
    make_data(args.workdir, args.rows, args.dim)
    import embstore

    start = time.perf_counter()
    report = embstore.build_index(args.workdir / "a22.store")
    print(f"build_index: {time.perf_counter() - start:.1f} s ({report.summary()})", flush=True)
    _baseline_source(args)
    print(table(_measure(args), args))


def _baseline_source(args: argparse.Namespace) -> None:
    target = args.workdir / "baseline-src"
    if not (target / "embstore").exists():
        target.mkdir(exist_ok=True)
        archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", args.baseline],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def _measure(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    cold = str(args.workdir / "cache-cold")
    warm = str(args.workdir / "cache-warm")
    systems = ["embstore", "embstore@baseline"]
    try:
        import lance  # noqa: F401

        systems.append("lance")
    except ImportError:
        print("lance not installed: the label filters are compared with the baseline only")
    found: dict[str, dict[str, Any]] = {}
    for workload in ("subject", "subject-previous"):
        for system in systems:
            if system == "embstore":
                shutil.rmtree(cold, ignore_errors=True)
                found[f"{workload} {system} cold"] = run(system, workload, args, cold)
                run(system, workload, args, warm)  # fills the cache for this version
            found[f"{workload} {system}"] = best(system, workload, args, warm)
            print(workload, system, f"{found[f'{workload} {system}']['seconds']:.3f} s", flush=True)
    for workload in ("exact", "approximate", "groupby"):
        found[f"{workload} embstore"] = best("embstore", workload, args, warm)
        if workload != "approximate":
            found[f"{workload} numpy"] = best("numpy", workload, args, warm)
        print(workload, f"{found[f'{workload} embstore']['seconds']:.3f} s", flush=True)
    return found


def _recall(found: dict[str, dict[str, Any]]) -> float:
    exact = found["exact embstore"]["check"]
    approx = found["approximate embstore"]["check"]
    per_query = [exact[i * K : (i + 1) * K] for i in range(QUERIES)]
    return float(
        np.mean([len(set(a) & set(e)) / K for a, e in zip(approx, per_query, strict=True)])
    )


def table(found: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    def s(key: str) -> str:
        return f"{found[key]['seconds']:.4f}" if key in found else "-"

    def ratio(a: str, b: str) -> str:
        return f"{found[a]['seconds'] / found[b]['seconds']:.2f}" if b in found else "-"

    lines = [
        f"{args.rows:,} x {args.dim} float32, best of {args.repeat}, seconds in process.",
        "",
        "| workload | embstore | embstore cold cache | embstore@" + args.baseline
        + " | Lance | numpy/pandas | ratio (÷ best other) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for w in ("subject", "subject-previous"):
        others = [k for k in (f"{w} lance", f"{w} embstore@baseline") if k in found]
        peer = min(others, key=lambda k: found[k]["seconds"])
        lines.append(f"| {w} | {s(f'{w} embstore')} | {s(f'{w} embstore cold')} | "
                     f"{s(f'{w} embstore@baseline')} | {s(f'{w} lance')} | - | "
                     f"{ratio(f'{w} embstore', peer)} ({peer.split()[-1]}) |")  # fmt: skip
    lines.append(f"| exact top-10 x {QUERIES} | {s('exact embstore')} | - | - | - | "
                 f"{s('exact numpy')} | {ratio('exact embstore', 'exact numpy')} |")  # fmt: skip
    load = found["approximate embstore"]["load"]
    lines.append(f"| approximate top-10, one query (median; index load {load:.2f} s) | "
                 f"{s('approximate embstore')} | - | - | - | - | recall@10 "
                 f"{_recall(found):.3f} |")  # fmt: skip
    gb = ratio("groupby embstore", "groupby numpy")
    lines.append(f"| groupby([age_mo, category]).mean() | {s('groupby embstore')} | - | - | - | "
                 f"{s('groupby numpy')} | {gb} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()

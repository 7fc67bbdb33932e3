"""Side-by-side benchmarks of embstore against the workflows it replaces; writes bench/RESULTS.md.

Each comparison runs both sides in this one process, on the same data, best of ``--repeat``
runs each, and reports the ratio embstore / baseline (lower is better), because these machines
are shared and noisy. Usage::

    python bench/run.py [--workdir /tmp/embstore-bench] [--scale 1.0] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import embstore
from embstore.formats import open_source
from embstore.store import StoreWriter
from embstore.testing import S3_TEST_ENV, local_s3_server, new_bucket

HERE = Path(__file__).resolve().parent


def best_of(repeat: int, func, setup=None) -> float:
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def make_babyview_tree(root: Path, n: int, dim: int) -> None:
    """``n`` files over 163 categories and 31 subjects, ages 6-37, like the notebook's tree."""
    if root.exists() and sum(1 for _ in root.rglob("*.npy")) == n:
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    data = (
        rng.normal(0, 1, dim) + rng.uniform(0.1, 0.7, dim) * rng.standard_normal((n, dim))
    ).astype("f4")
    for i in range(n):
        category, subject, age = i % 163, (i // 163) % 31, 6 + (i // (163 * 31)) % 32
        folder = root / f"category{category:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{(subject + 27) * 10000 + 1:08d}_{age}_month_level_avg.npy", data[i])


def notebook_pipeline(root: Path, out: Path, excluded: str) -> None:
    """The seed notebook's normalization as written (minus tqdm): walk, load, stack, stats, save."""
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for folder in [f for f in root.iterdir() if f.is_dir()]:
        for file in folder.glob("*.npy"):
            subject = file.stem.split("_")[0]
            rows.append((folder.name, file, subject, np.load(file)))
    matrix = np.array([r[3].flatten() for r in rows if r[2] != excluded])
    mean, std = matrix.mean(axis=0), matrix.std(axis=0) + 1e-10
    for category, file, _, vector in rows:
        (out / category).mkdir(parents=True, exist_ok=True)
        np.save(out / category / file.name, (vector.flatten() - mean) / std)


def make_pt_files(workdir: Path, folders: list[str], n: int, dim: int) -> list[Path]:
    import torch

    files = []
    for k, folder in enumerate(folders):
        file = workdir / f"vitl_embeddings_{folder}.pt"
        files.append(file)
        if file.exists():
            continue
        rng = np.random.default_rng(k)
        x = torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32))
        keys = [f"{folder}{i // 12:06d}/s9{i // 4:07d}/{i:08d}_0001.mp4" for i in range(n)]
        torch.save({key: x[i].clone() for i, key in enumerate(keys)}, file)
    return files


def make_merged_pt(store: Path, out: Path) -> None:
    """The store's rows as one ``{path: tensor}`` dict: the merged file users load today."""
    if out.exists():
        return
    import torch

    ds = embstore.open(store)
    data = {}
    for start in range(0, ds.sizes["sample"], 32768):
        block = ds.isel(sample=slice(start, start + 32768))
        x = torch.from_numpy(block.embedding.values)
        data.update({p: x[i].clone() for i, p in enumerate(block.path.values)})
    torch.save(data, out)


def make_large_store(store: Path, rows: int, dim: int) -> None:
    """A store of ``rows`` rows grouped by subject (as a sorted ingest leaves it)."""
    if embstore.store.is_store(store) and embstore.open(store).sizes["sample"] == rows:
        return
    shutil.rmtree(store, ignore_errors=True)
    writer = StoreWriter(store, feature_size=dim)
    rng = np.random.default_rng(0)
    step = 32768
    for start in range(0, rows, step):
        idx = range(start, min(rows, start + step))
        paths = [f"p1{i // 50_000}{i // 12:06d}/s9{i // 4:07d}/{i:08d}_0001.mp4" for i in idx]
        labels = {
            "subject": [p.split("/")[0] for p in paths],
            "study": [p.split("/")[1] for p in paths],
        }
        writer.append(paths, rng.standard_normal((len(paths), dim), dtype=np.float32), labels)


def peak_rss_of_normalize(store: Path) -> float:
    """Peak RSS (bytes) of a fresh process that normalizes ``store``."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forked parent
    code = (
        "import sys, embstore;"
        "embstore.normalize_store(sys.argv[1], overwrite=True);"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store)], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-bench"))
    parser.add_argument("--scale", type=float, default=1.0, help="Fraction of the seed scale.")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--only", default="1,2,3,4,5,6,7,8", help="Comma-separated comparisons to run."
    )
    args = parser.parse_args()
    only = {int(x) for x in args.only.split(",")}
    work, r = args.workdir, args.repeat
    work.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, float, float, str, str]] = []

    def record(name: str, ours: float, theirs: float, goal: str, unit: str = "s") -> None:
        results.append((name, ours, theirs, goal, unit))
        print(
            f"{name}: embstore {ours:.3f}{unit}, baseline {theirs:.3f}{unit}, "
            f"ratio {ours / theirs:.4f} (goal {goal})",
            flush=True,
        )

    # 1. ingest a 34,550 x 768 .npy tree vs a plain np.load loop
    n_npy = int(34_550 * args.scale)
    tree, store1 = work / "babyview", work / "babyview.store"
    if only & {1, 2, 6, 7}:
        make_babyview_tree(tree, n_npy, 768)
    if 1 in only or (only & {2, 7} and not embstore.store.is_store(store1)):
        files = sorted(tree.rglob("*.npy"))
        loop = best_of(r, lambda: [np.load(f) for f in files])
        ours = best_of(
            r,
            lambda: embstore.ingest([tree], store=store1, layout="babyview"),
            setup=lambda: shutil.rmtree(store1, ignore_errors=True),
        )
        record(f"1. ingest {n_npy:,} x 768 .npy tree vs np.load loop", ours, loop, "<= 0.35")

        def read_only() -> None:  # the reading half of an ingest: walk, read, stack
            source = open_source(tree)
            for _ in source.batches(batch_rows=32768, feature_size=None, skip=lambda p: False):
                pass

        ours = best_of(r, read_only)
        record(f"1b. read (no store) the {n_npy:,}-file tree vs np.load loop", ours, loop, "-")

    # 2. normalize from the store vs the notebook pipeline
    if 2 in only:
        excluded = "00270001"
        nb = best_of(r, lambda: notebook_pipeline(tree, work / "notebook-out", excluded))
        ours = best_of(
            r, lambda: embstore.normalize_store(store1, exclude_subjects=[excluded], overwrite=True)
        )
        record(
            "2. normalize (stats + write) vs notebook (walk+load+stack+stats+save)",
            ours,
            nb,
            "<= 0.1",
        )

    # 6. the same ingest into a local S3 server vs into a local folder
    if 6 in only:
        with local_s3_server() as endpoint:
            env = {**S3_TEST_ENV, "AWS_ENDPOINT_URL": endpoint}
            os.environ.update(env)
            bucket = new_bucket(endpoint)
            runs = iter(range(r))
            s3 = best_of(
                r,
                lambda: embstore.ingest(
                    [tree], store=f"s3://{bucket}/run{next(runs)}", layout="babyview"
                ),
            )
        local = best_of(
            r,
            lambda: embstore.ingest([tree], store=store1, layout="babyview"),
            setup=lambda: shutil.rmtree(store1, ignore_errors=True),
        )
        record(
            f"6. ingest {n_npy:,} x 768 .npy tree into local S3 vs local disk", s3, local, "<= 2.0"
        )

    # 7. disk after gc vs a plain Zarr copy of the same data
    if 7 in only:
        for subject in ("00270001", "00280001", "00290001"):  # three versions of 'normalized'
            embstore.normalize_store(store1, exclude_subjects=[subject], overwrite=True)
        zero = __import__("datetime").timedelta(0)
        embstore.gc(store1, older_than=zero, safety_margin=zero)
        plain = work / "plain-copy.zarr"
        shutil.rmtree(plain, ignore_errors=True)
        embstore.open(store1).to_zarr(plain, zarr_format=3, consolidated=False)
        record(
            "7. store on disk after gc vs a plain Zarr copy of the same data",
            du(store1) / 2**20,
            du(plain) / 2**20,
            "<= 1.05",
            "MiB",
        )

    # 3. ingest two 51,000 x 1024 .pt dicts vs torch.load + torch.stack
    import torch

    if 3 in only:
        n_pt = int(51_000 * args.scale)
        pts = make_pt_files(work, ["p10", "p11"], n_pt, 1024)
        store3 = work / "pt.store"
        base = best_of(
            r, lambda: [torch.stack(list(torch.load(f, weights_only=True).values())) for f in pts]
        )
        ours = best_of(
            r,
            lambda: embstore.ingest(pts, store=store3, layout="mimic-echo"),
            setup=lambda: shutil.rmtree(store3, ignore_errors=True),
        )
        record(
            f"3. ingest 2 x {n_pt:,} x 1024 .pt dicts vs torch.load + torch.stack",
            ours,
            base,
            "<= 0.5",
        )
    if not only & {4, 5}:
        if 8 in only:
            norm_bandwidth(work, args.scale, r, record)
        write_results(args, results)
        return

    # 4. open + select one subject from a ~500K x 1024 store vs torch.load of the merged dict
    n_big = int(500_000 * args.scale)
    big = work / "big.store"
    make_large_store(big, n_big, 1024)
    merged = work / "vitl_embeddings_all.pt"
    make_merged_pt(big, merged)
    subject = embstore.open(big).subject.values[n_big // 2]

    def select_one() -> None:
        rows = embstore.open(big).emb.rows(subject=subject)
        assert rows.embedding.values.shape[0] > 0

    def torch_one() -> None:
        d = torch.load(merged, weights_only=True)
        assert any(k.startswith(subject + "/") for k in d)

    base = best_of(1, torch_one)
    ours = best_of(r, select_one)
    record(
        f"4. open + select one subject of {n_big:,} x 1024 vs torch.load merged .pt",
        ours,
        base,
        "<= 0.005",
    )

    # 5. peak RSS of normalize, flat as N grows; the store is >= 4x the peak
    small = work / "quarter.store"
    make_large_store(small, n_big // 4, 1024)
    rss_small, rss_big = peak_rss_of_normalize(small), peak_rss_of_normalize(big)
    size_big = n_big * 1024 * 4  # the embedding's bytes (the repository also keeps history)
    record(
        f"5. peak RSS of normalize: {n_big:,} rows vs {n_big // 4:,} rows (flatness)",
        rss_big / 2**20,
        rss_small / 2**20,
        "~1.0, <= 1.5 GB",
        "MiB",
    )
    record(
        f"5b. normalize peak RSS vs the {n_big:,}-row embedding's size",
        rss_big / 2**20,
        size_big / 2**20,
        "<= 0.25",
        "MiB",
    )

    if 8 in only:
        norm_bandwidth(work, args.scale, r, record)
    write_results(args, results)


def dd_style(src: Path, dst: Path, *, reads: int, block: int = 8 << 20) -> None:
    """Read ``src`` ``reads`` times and write one copy to ``dst``, in plain ``block``-byte I/O."""
    buffer = bytearray(block)
    view = memoryview(buffer)
    for _ in range(reads - 1):
        with open(src, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        while n := f.readinto(buffer):
            out.write(view[:n])


def norm_bandwidth(work: Path, scale: float, repeat: int, record) -> None:
    """8. normalize's GB/s against dd-style I/O of the same bytes (two reads, one write)."""
    rows, dim = int(100_000 * scale), 1024
    store, raw, copy = work / "norm.store", work / "norm-raw.f32", work / "norm-copy.f32"
    make_large_store(store, rows, dim)
    nbytes = rows * dim * 4
    if not raw.exists() or raw.stat().st_size != nbytes:
        ds = embstore.open(store)
        with open(raw, "wb") as f:
            for start in range(0, rows, 32768):
                f.write(ds.embedding[start : start + 32768].values.tobytes())
    excluded = [str(embstore.open(store).subject.values[rows // 2])]
    ours = best_of(
        repeat,
        lambda: embstore.normalize_store(store, exclude_subjects=excluded, overwrite=True),
    )
    dd = best_of(repeat, lambda: dd_style(raw, copy, reads=2))
    moved = 3 * nbytes / 1e9  # statistics pass + read and write of the output
    print(f"8. normalize {moved / ours:.2f} GB/s, dd-style {moved / dd:.2f} GB/s", flush=True)
    record(
        f"8. normalize {rows:,} x {dim} ({nbytes / 1e9:.2f} GB) vs dd-style 2 reads + 1 write "
        f"({moved / ours:.2f} vs {moved / dd:.2f} GB/s)",
        ours,
        dd,
        "report",
    )


def write_results(args: argparse.Namespace, results: list) -> None:
    r = args.repeat
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"embstore {embstore.__version__}. Best of {r} runs per side (the merged `.pt` load "
        "once); ratio = embstore / baseline, lower is better.",
        "",
        "| comparison | embstore | baseline | ratio | goal |",
        "|---|---|---|---|---|",
    ]
    for name, ours, theirs, goal, unit in results:
        ratio = ours / theirs
        shown = f"{ratio:.4f}" if ratio < 0.01 else f"{ratio:.3f}"  # 0.0042 against 0.005
        lines.append(f"| {name} | {ours:.3f} {unit} | {theirs:.3f} {unit} | {shown} | {goal} |")
    # keep the sections other scripts wrote below the table
    old = args.results.read_text() if args.results.exists() else ""
    rest = old[old.index("\n## ") :] if "\n## " in old else ""
    args.results.write_text("\n".join(lines) + "\n" + rest)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

"""Disk proportional to data (issue 18, item 3), and what checksums cost (issue 20).

Three append patterns, each measured as disk before and after ``gc`` ÷ the float32 vectors:
6,000 x 768 ingested with ``batch_rows=500``; 100 ingests of 256 x 1024; six 50K-row x 1024
``.pt`` files (one ingest each). Then read ratios of the chunk layout a small first commit now
gets (256-row chunks) against the 4,096-row chunks of before: one subject and full-scan
statistics. Then read and ingest with crc32c checksums on ÷ off. Usage::

    python bench/disk.py [--scale 1.0] [--workdir /tmp/embstore-disk] [--repeat 3]

``--scale`` shrinks every row count (0.1 runs in seconds).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from unittest import mock

import dask
import numpy as np

import embstore
from embstore.store import StoreWriter, parse_age
from embstore.store import layout as store_layout
from embstore.store import writer as store_writer

ZERO = parse_age("0s")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_npy_tree(root: Path, vectors: np.ndarray, offset: int = 0) -> None:
    for i, v in enumerate(vectors):
        n = offset + i
        folder = root / f"b{n:06d}" / f"category{n % 7:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        subject = 27 + (n // 500) % 20
        np.save(folder / f"{subject * 10000 + 1:08d}_{6 + n % 30}_month_level_avg.npy", v)


def disk_ratios(store: Path, rows: int, dim: int) -> tuple[float, float]:
    data = rows * dim * 4
    before = du(store) / data
    embstore.gc(store, older_than=ZERO, safety_margin=ZERO)
    return before, du(store) / data


def pattern_batches(work: Path, scale: float) -> tuple[float, float]:
    rows, dim = int(6000 * scale), 768
    tree, store = work / "tree500", work / "b500.store"
    shutil.rmtree(store, ignore_errors=True)
    if not tree.exists():
        write_npy_tree(tree, np.random.default_rng(0).standard_normal((rows, dim), dtype="f4"))
    embstore.ingest([tree], store=store, layout="babyview", batch_rows=500)
    return disk_ratios(store, rows, dim)


def pattern_small_appends(work: Path, scale: float) -> tuple[float, float]:
    import torch

    appends, dim = max(2, int(100 * scale)), 1024
    store = work / "a256.store"
    shutil.rmtree(store, ignore_errors=True)
    rng = np.random.default_rng(1)
    for k in range(appends):
        file = work / "a256.pt"
        x = torch.from_numpy(rng.standard_normal((256, dim), dtype=np.float32))
        torch.save({f"a{k:03d}/{i:04d}.mp4": x[i].clone() for i in range(256)}, file)
        embstore.ingest([file], store=store)
    return disk_ratios(store, appends * 256, dim)


def pattern_pt_files(work: Path, scale: float) -> tuple[float, float]:
    import torch

    rows, dim = int(50_000 * scale), 1024
    store = work / "pt.store"
    shutil.rmtree(store, ignore_errors=True)
    for k in range(6):
        file = work / f"pt{k}.pt"
        if not file.exists():
            x = torch.from_numpy(np.random.default_rng(k).standard_normal((rows, dim), dtype="f4"))
            torch.save({f"f{k}/{i // 12:06d}/{i:08d}.mp4": x[i].clone() for i in range(rows)}, file)
        embstore.ingest([file], store=store)
    return disk_ratios(store, 6 * rows, dim)


def best(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def reads(store: Path, repeat: int) -> tuple[float, float, float]:
    """Seconds to read one subject, to compute full-scan mean and std on the dask array as
    opened (one task a stored chunk), and through normalize (blocks of stored chunks)."""

    def one_subject() -> None:
        ds = embstore.open(store)
        mask = np.asarray(ds["subject"].values) == "00300001"
        ds.embedding[np.flatnonzero(mask)].load()

    def full_scan() -> None:
        emb = embstore.open(store).embedding.data
        emb.mean(axis=0, dtype="f8").compute(), emb.std(axis=0, dtype="f8").compute()

    def library_scan() -> None:  # normalize's statistics pass (store.lazy.scan_blocks)
        out = embstore.normalize(embstore.open(store))
        dask.compute(out.normalized_mean.data, out.normalized_std.data)

    return best(repeat, one_subject), best(repeat, full_scan), best(repeat, library_scan)


def layout_reads(work: Path, scale: float, repeat: int) -> dict[str, tuple[float, float, float]]:
    rows, dim = int(100_000 * scale), 768
    x = np.random.default_rng(2).standard_normal((rows, dim), dtype="f4")
    paths = [
        f"category{i % 7:03d}/{(27 + (i // 2000) % 20) * 10000 + 1:08d}_6_{i}.npy"
        for i in range(rows)
    ]
    subjects = [p.split("/")[1].split("_")[0] for p in paths]
    out = {}
    for name, chunk in (("4096-row chunks (before)", 4096), ("256-row chunks (now)", 256)):
        store = work / f"read{chunk}.store"
        shutil.rmtree(store, ignore_errors=True)
        w = StoreWriter(store, feature_size=dim, row_chunk=chunk)
        for s in range(0, rows, 32768):
            w.append(paths[s : s + 32768], x[s : s + 32768], {"subject": subjects[s : s + 32768]})
        out[name] = reads(store, repeat)
    return out


def checksum_costs(work: Path, scale: float, repeat: int) -> dict[str, tuple[float, float]]:
    """Ingest seconds and full-read seconds with crc32c on and off (same data, same chunks)."""
    rows, dim = int(100_000 * scale), 768
    x = np.random.default_rng(3).standard_normal((rows, dim), dtype="f4")
    paths = [f"s{i // 1000:03d}/{i:07d}.npy" for i in range(rows)]
    out = {}
    for name, matrix, labels in (
        ("crc32c on", store_layout.MATRIX_COMPRESSORS, store_layout.LABEL_COMPRESSORS),
        ("crc32c off", None, None),
    ):
        store = work / f"crc-{name.split()[-1]}.store"

        def ingest(store=store, matrix=matrix, labels=labels) -> None:
            shutil.rmtree(store, ignore_errors=True)
            with (
                mock.patch.object(store_writer, "MATRIX_COMPRESSORS", matrix),
                mock.patch.object(store_writer, "LABEL_COMPRESSORS", labels),
            ):
                w = StoreWriter(store, feature_size=dim, row_chunk=4096)
                for s in range(0, rows, 32768):
                    w.append(paths[s : s + 32768], x[s : s + 32768])

        t_ingest = best(repeat, ingest)
        t_read = best(repeat, lambda store=store: embstore.open(store).embedding.values)
        out[name] = (t_ingest, t_read)
    return out


def disk_table(work: Path, scale: float) -> None:
    print(f"| pattern (scale {scale}) | disk before gc ÷ data | after gc ÷ data | goal |")
    print("|---|---|---|---|")
    for name, func in (
        ("6,000 x 768, batch_rows=500", pattern_batches),
        ("100 ingests of 256 x 1024", pattern_small_appends),
        ("six 50K x 1024 .pt files", pattern_pt_files),
    ):
        before, after = func(work, scale)
        print(f"| {name} | {before:.3f} | {after:.3f} | <= 1.2 / <= 1.05 |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-disk"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reads-only", action="store_true", help="only the layout reads")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.reads_only:
        disk_table(args.workdir, args.scale)
    layout = layout_reads(args.workdir, args.scale, args.repeat)
    (old_s, old_f, old_l), (new_s, new_f, new_l) = layout.values()
    print("\n| read, 100K x 768 (scaled) | 4096-row chunks | 256-row chunks | ratio |")
    print("|---|---|---|---|")
    print(f"| one subject | {old_s:.3f} s | {new_s:.3f} s | {new_s / old_s:.2f} |")
    print(f"| full-scan mean+std | {old_f:.3f} s | {new_f:.3f} s | {new_f / old_f:.2f} |")
    print(f"| normalize statistics | {old_l:.3f} s | {new_l:.3f} s | {new_l / old_l:.2f} |")
    print(
        f"| normalize (256) vs dask as opened (4096) | {old_f:.3f} s | {new_l:.3f} s | "
        f"{new_l / old_f:.2f} |"
    )
    if args.reads_only:
        return
    costs = checksum_costs(args.workdir, args.scale, args.repeat)
    (on_i, on_r), (off_i, off_r) = costs.values()
    print("\n| 100K x 768 (scaled) | crc32c on | off | ratio |")
    print("|---|---|---|---|")
    print(f"| ingest | {on_i:.3f} s | {off_i:.3f} s | {on_i / off_i:.2f} |")
    print(f"| full read | {on_r:.3f} s | {off_r:.3f} s | {on_r / off_r:.2f} |")


if __name__ == "__main__":
    main()

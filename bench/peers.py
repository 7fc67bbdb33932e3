"""embstore beside Lance, HF ``datasets`` and hand-written xarray+zarr on the same workloads.

Run on demand (not in CI); needs the ``bench`` extra (``pip install -e '.[bench]'``)::

    python bench/peers.py                      # 40,000 x 1024 in 4 .pt shards, a few minutes
    python bench/peers.py --rows 300000 --shards 6

Every (system, workload) runs in a fresh subprocess, so each reports its own peak RSS (VmHWM)
and time (the workload, including the first import of the system's library, as a script that
answers one question pays it); systems alternate within each repeat and the
best of ``--repeat`` is kept, because the machines are shared and noisy. The workloads: load the
``.pt`` shards (every peer with ``torch.load(weights_only=True)``); fetch one subject from a
freshly opened store; feature-wise mean/std (ddof 0, float64) without three subjects; write a
normalized copy (statistics + write); exact top-10 cosine neighbours of 100 stored rows
(embstore with ``embstore.neighbors``, Lance with its own flat (exact) ``nearest`` search,
``datasets`` and xarray+zarr with the same numpy brute force over their blocks).
The sixth fetches the subject from the version before the newest (systems with versions:
embstore, Lance); embstore's label cache is warm from the earlier workloads' processes, as in
any session after the first. ``--only 2`` runs the second workload alone (numbers as listed,
comma-separated).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

SYSTEMS = ["embstore", "lance", "datasets", "xarray+zarr"]
WORKLOADS = ["load .pt shards", "fetch one subject", "mean/std w/o 3 subjects",
             "write normalized copy", "top-10 cosine x 100 queries",
             "fetch one subject, previous version"]  # fmt: skip
BLOCK = 16384  # rows per block for the streaming workloads


# -- data ---------------------------------------------------------------------------------------


def make_shards(work: Path, rows: int, shards: int, dim: int) -> list[Path]:
    """``shards`` ``{path: tensor[dim]}`` files as extraction writes them, ~12 rows a subject."""
    import torch

    files, per = [], -(-rows // shards)
    for k in range(shards):
        file = work / f"shard{k}_{rows}x{dim}.pt"
        files.append(file)
        if file.exists():
            continue
        rng = np.random.default_rng(k)
        n = min(per, rows - k * per)
        x = torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32))
        ids = range(k * per, k * per + n)
        keys = [f"p1{i // 12:07d}/s9{i // 4:07d}/{i:08d}_0001.mp4" for i in ids]
        torch.save({key: x[j].clone() for j, key in enumerate(keys)}, file)
    return files


def load_pt(file: Path) -> tuple[list[str], list[str], np.ndarray]:
    import torch

    d = torch.load(file, map_location="cpu", weights_only=True)
    paths = sorted(d)
    return paths, [p.split("/")[0] for p in paths], torch.stack([d[p] for p in paths]).numpy()


def subjects_of(rows: int) -> tuple[str, list[str]]:
    """The subject to fetch and the three to exclude (all mid-table)."""
    return f"p1{rows // 24:07d}", [f"p1{rows // 12 // k:07d}" for k in (3, 4, 5)]


def top10(blocks: Iterator[np.ndarray], queries: np.ndarray) -> np.ndarray:
    """Exact top-10 cosine neighbours (row indices) of ``queries`` over streamed blocks."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.empty((len(q), 0), dtype=np.int64)
    offset = 0
    for block in blocks:
        x = np.asarray(block, dtype=np.float32)
        s = (q @ x.T) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
        s = np.concatenate([best_s, s], axis=1)
        ids = np.broadcast_to(np.arange(offset, offset + len(x)), (len(q), len(x)))
        i = np.concatenate([best_i, ids], axis=1)
        keep = np.argpartition(-s, min(10, s.shape[1] - 1), axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
        offset += len(x)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def moments(blocks: Iterator[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Feature-wise mean and population std in float64 from streamed blocks."""
    n, total, sq = 0, 0.0, 0.0
    for block in blocks:
        x = np.asarray(block, dtype=np.float64)
        n, total, sq = n + len(x), total + x.sum(axis=0), sq + (x * x).sum(axis=0)
    mean = total / n
    return mean, np.sqrt(np.maximum(sq / n - mean * mean, 0.0))


# -- the systems --------------------------------------------------------------------------------


class Embstore:
    def __init__(self, work: Path) -> None:
        self.store = work / "embstore.store"

    def load(self, shards: list[Path]) -> None:
        import embstore

        shutil.rmtree(self.store, ignore_errors=True)
        embstore.ingest(shards, store=self.store, layout="mimic-echo")

    def fetch(self, subject: str) -> np.ndarray:
        import embstore

        ds = embstore.open(self.store)
        return ds.embedding.isel(sample=(ds.subject == subject).values).values

    def fetch_previous(self, subject: str) -> np.ndarray:
        import embstore

        previous = embstore.log(self.store)[1].id
        ds = embstore.open(self.store, version=previous)
        return ds.emb.rows(subject=subject).embedding.values

    def stats(self, exclude: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import dask

        import embstore

        out = embstore.normalize(embstore.open(self.store), exclude_subjects=exclude)
        return dask.compute(out.normalized_mean.data, out.normalized_std.data)

    def write_normalized(self, exclude: list[str]) -> None:
        import embstore

        embstore.normalize_store(self.store, exclude_subjects=exclude, overwrite=True)

    def neighbours(self, idx: np.ndarray) -> np.ndarray:
        import embstore

        ds = embstore.open(self.store)
        queries = ds.embedding[np.sort(idx)].values[np.argsort(np.argsort(idx))]
        table = embstore.neighbors(ds, queries, k=10)  # exact, chunk by chunk
        return ds.indexes["path"].get_indexer(table["path"]).reshape(len(idx), 10)


class Lance:
    def __init__(self, work: Path) -> None:
        self.uri = str(work / "peer.lance")
        self.out = str(work / "peer-normalized.lance")

    def _table(self, paths: list[str], subjects: list[str], x: np.ndarray) -> Any:
        import pyarrow as pa

        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
        return pa.table({"path": paths, "subject": subjects, "embedding": emb})

    def load(self, shards: list[Path]) -> None:
        import lance

        shutil.rmtree(self.uri, ignore_errors=True)
        for k, file in enumerate(shards):
            table = self._table(*load_pt(file))
            lance.write_dataset(table, self.uri, mode="create" if k == 0 else "append")

    def fetch(self, subject: str) -> np.ndarray:
        import lance

        t = lance.dataset(self.uri).to_table(columns=["embedding"], filter=f"subject = '{subject}'")
        return np.stack(t.column("embedding").to_numpy(zero_copy_only=False))

    def fetch_previous(self, subject: str) -> np.ndarray:
        import lance

        ds = lance.dataset(self.uri)
        ds = ds.checkout_version(ds.version - 1)
        t = ds.to_table(columns=["embedding"], filter=f"subject = '{subject}'")
        return np.stack(t.column("embedding").to_numpy(zero_copy_only=False))

    def _blocks(self, where: str | None = None) -> Iterator[np.ndarray]:
        import lance

        ds = lance.dataset(self.uri)
        for batch in ds.to_batches(columns=["embedding"], filter=where, batch_size=BLOCK):
            col = batch.column("embedding")
            yield col.values.to_numpy().reshape(len(col), -1)

    def stats(self, exclude: list[str]) -> tuple[np.ndarray, np.ndarray]:
        names = ", ".join(f"'{s}'" for s in exclude)
        return moments(self._blocks(f"subject NOT IN ({names})"))

    def write_normalized(self, exclude: list[str]) -> None:
        import lance
        import pyarrow as pa

        mean, std = self.stats(exclude)
        ds = lance.dataset(self.uri)
        schema = pa.schema(
            [("path", pa.string()), ("normalized", pa.list_(pa.float32(), len(mean)))]
        )

        def batches() -> Iterator[pa.RecordBatch]:
            for b in ds.to_batches(columns=["path", "embedding"], batch_size=BLOCK):
                col = b.column("embedding")
                x = (col.values.to_numpy().reshape(len(col), -1) - mean) / (std + 1e-10)
                emb = pa.FixedSizeListArray.from_arrays(
                    pa.array(x.astype("f4").reshape(-1)), len(mean)
                )
                yield pa.record_batch([b.column("path"), emb], schema=schema)

        shutil.rmtree(self.out, ignore_errors=True)
        lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), self.out)

    def neighbours(self, idx: np.ndarray) -> np.ndarray:
        import lance

        ds = lance.dataset(self.uri)
        queries = ds.take(idx.tolist(), columns=["path", "embedding"])
        found = []
        for q in queries.column("embedding").to_numpy(zero_copy_only=False):
            nearest = {"column": "embedding", "q": q, "k": 10, "metric": "cosine"}
            hits = ds.to_table(columns=["path"], nearest={**nearest, "use_index": False})
            found.append(hits.column("path").to_pylist())
        # row numbers of the hits, by path (Lance's row ids are not positions after appends)
        wanted = {p for hits in found for p in hits}
        paths = ds.to_table(columns=["path"]).column("path").to_pylist()
        position = {p: i for i, p in enumerate(paths) if p in wanted}
        return np.array([[position[p] for p in hits] for hits in found])


class HFDatasets:
    def __init__(self, work: Path) -> None:
        self.path = str(work / "peer.hf")
        self.out = str(work / "peer-normalized.hf")

    def load(self, shards: list[Path]) -> None:
        import datasets

        shutil.rmtree(self.path, ignore_errors=True)
        dim = None
        parts = []
        for file in shards:
            paths, subjects, x = load_pt(file)
            dim = x.shape[1]
            features = datasets.Features(
                {"path": datasets.Value("string"), "subject": datasets.Value("string"),
                 "embedding": datasets.Sequence(datasets.Value("float32"), length=dim)}
            )  # fmt: skip
            parts.append(
                datasets.Dataset.from_dict(
                    {"path": paths, "subject": subjects, "embedding": x}, features=features
                )
            )
        datasets.concatenate_datasets(parts).save_to_disk(self.path)

    def _ds(self) -> Any:
        import datasets

        return datasets.load_from_disk(self.path).with_format("numpy")

    def fetch(self, subject: str) -> np.ndarray:
        ds = self._ds()
        rows = np.flatnonzero(ds.data.column("subject").to_numpy(zero_copy_only=False) == subject)
        return ds.select(rows)["embedding"]

    def _blocks(self, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
        ds = self._ds()
        if rows is not None:
            ds = ds.select(rows)
        for batch in ds.iter(batch_size=BLOCK):
            yield batch["embedding"]

    def stats(self, exclude: list[str]) -> tuple[np.ndarray, np.ndarray]:
        subjects = self._ds().data.column("subject").to_numpy(zero_copy_only=False)
        return moments(self._blocks(np.flatnonzero(~np.isin(subjects, exclude))))

    def write_normalized(self, exclude: list[str]) -> None:
        mean, std = self.stats(exclude)

        def scale(batch: dict) -> dict:
            x = (np.asarray(batch["embedding"], dtype=np.float64) - mean) / (std + 1e-10)
            return {"normalized": x.astype(np.float32)}

        shutil.rmtree(self.out, ignore_errors=True)
        ds = self._ds().map(scale, batched=True, batch_size=BLOCK, remove_columns=["embedding"])
        ds.save_to_disk(self.out)

    def neighbours(self, idx: np.ndarray) -> np.ndarray:
        return top10(self._blocks(), self._ds().select(idx)["embedding"])


class XarrayZarr:
    def __init__(self, work: Path) -> None:
        self.store = work / "peer.zarr"
        self.out = work / "peer-normalized.zarr"

    def load(self, shards: list[Path]) -> None:
        import xarray as xr

        shutil.rmtree(self.store, ignore_errors=True)
        for k, file in enumerate(shards):
            paths, subjects, x = load_pt(file)
            ds = xr.Dataset(
                {"embedding": (("sample", "feature"), x)},
                coords={"path": ("sample", np.array(paths, dtype=object)),
                        "subject": ("sample", np.array(subjects, dtype=object))},
            )  # fmt: skip
            if k == 0:
                ds = ds.chunk({"sample": 4096})
                ds.to_zarr(self.store, mode="w", consolidated=False)
            else:
                ds.to_zarr(self.store, append_dim="sample", consolidated=False)

    def _open(self) -> Any:
        import xarray as xr

        return xr.open_zarr(self.store, consolidated=False)

    def fetch(self, subject: str) -> np.ndarray:
        ds = self._open()
        return ds.embedding.isel(sample=(ds.subject == subject).values).values

    def stats(self, exclude: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import dask

        ds = self._open()
        x = ds.embedding.isel(sample=~ds.subject.isin(exclude).values).data.astype("f8")
        return dask.compute(x.mean(axis=0), x.std(axis=0))

    def write_normalized(self, exclude: list[str]) -> None:
        import dask

        ds = self._open()
        mean, std = self.stats(exclude)
        out = ((ds.embedding - mean) / (std + 1e-10)).astype("f4").rename("normalized")
        shutil.rmtree(self.out, ignore_errors=True)
        with dask.config.set(scheduler="threads"):
            out.to_dataset().to_zarr(self.out, mode="w", consolidated=False)

    def neighbours(self, idx: np.ndarray) -> np.ndarray:
        x = self._open().embedding
        n = x.shape[0]
        blocks = (x[a : a + BLOCK].values for a in range(0, n, BLOCK))
        return top10(blocks, x[np.sort(idx)].values[np.argsort(np.argsort(idx))])


CLASSES: dict[str, Callable[[Path], object]] = {
    "embstore": Embstore, "lance": Lance, "datasets": HFDatasets, "xarray+zarr": XarrayZarr,
}  # fmt: skip


def child(system: str, workload: str, work: Path, shards: list[Path], rows: int) -> None:
    """Run one workload of one system; print its time and this process's peak RSS as JSON."""
    peer = CLASSES[system](work)
    subject, exclude = subjects_of(rows)
    queries = np.random.default_rng(0).choice(rows, 100, replace=False)
    run = {
        WORKLOADS[0]: lambda: peer.load(shards),
        WORKLOADS[1]: lambda: peer.fetch(subject),
        WORKLOADS[2]: lambda: peer.stats(exclude),
        WORKLOADS[3]: lambda: peer.write_normalized(exclude),
        WORKLOADS[4]: lambda: peer.neighbours(queries),
        WORKLOADS[5]: lambda: peer.fetch_previous(subject),  # type: ignore[attr-defined]
    }[workload]
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    check = None
    if workload in (WORKLOADS[1], WORKLOADS[5]):
        check = [len(result), float(np.asarray(result, dtype=np.float64).sum())]
    elif workload == WORKLOADS[2]:
        check = [float(np.asarray(result[0]).sum()), float(np.asarray(result[1]).sum())]
    elif workload == WORKLOADS[4]:
        check = int((np.asarray(result)[:, 0] == queries).sum())  # each query finds itself
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(line for line in status if line.startswith("VmHWM")).split()[1]) * 1024
    print(json.dumps({"seconds": seconds, "rss": rss, "check": check}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embstore-peers"))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--only", help="Workloads to run, by number (1-5), comma-separated.")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    shards = make_shards(args.workdir, args.rows, args.shards, args.dim)
    if args.child:
        return child(*args.child, args.workdir, shards, args.rows)
    systems = args.systems.split(",")
    picked = [int(n) for n in args.only.split(",")] if args.only else range(1, len(WORKLOADS) + 1)
    workloads = [WORKLOADS[n - 1] for n in picked]
    best: dict[tuple[str, str], dict] = {}
    for rep in range(args.repeat):
        for workload in workloads:
            for system in systems if rep % 2 == 0 else systems[::-1]:
                if workload == WORKLOADS[5] and not hasattr(CLASSES[system], "fetch_previous"):
                    continue  # no versions
                cmd = [sys.executable, __file__, "--child", system, workload, "--rows",
                       str(args.rows), "--shards", str(args.shards), "--dim", str(args.dim),
                       "--workdir", str(args.workdir)]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                mib = got["rss"] / 2**20
                print(f"run {rep + 1}: {system:12s} {workload:28s} {got['seconds']:8.3f} s "
                      f"{mib:8.0f} MiB  check {got['check']}", flush=True)  # fmt: skip
                old = best.get((system, workload))
                if old is None or got["seconds"] < old["seconds"]:
                    got["rss"] = max(got["rss"], old["rss"]) if old else got["rss"]
                    best[(system, workload)] = got
    print(table(best, systems, args))


def table(best: dict, systems: list[str], args: argparse.Namespace) -> str:
    peers = [s for s in systems if s != "embstore"]
    head = "| workload | " + " | ".join(systems) + " | embstore ÷ best peer |"
    lines = [
        f"{args.rows:,} x {args.dim} float32 in {args.shards} `.pt` shards; best of "
        f"{args.repeat}; seconds (peak RSS MiB).",
        "",
        head,
        "|---" * (len(systems) + 2) + "|",
    ]
    for workload in WORKLOADS:
        cells = [best.get((s, workload)) for s in systems]
        text = [f"{c['seconds']:.2f} ({c['rss'] / 2**20:.0f})" if c else "-" for c in cells]
        ours = best.get(("embstore", workload))
        theirs = [best[(p, workload)] for p in peers if (p, workload) in best]
        ratio = "-"
        if ours and theirs:
            t = ours["seconds"] / min(c["seconds"] for c in theirs)
            m = ours["rss"] / min(c["rss"] for c in theirs)
            ratio = f"time {t:.2f}, RSS {m:.2f}"
        lines.append(f"| {workload} | " + " | ".join(text) + f" | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

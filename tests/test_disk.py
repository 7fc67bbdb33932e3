"""Disk proportional to data (issue 18, item 3): no commit rewrites a chunk that already
holds committed rows, so history costs little before gc and nothing after it; a disk-full
ingest re-runs to completion on a disk twice the data."""

from __future__ import annotations

import errno
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from icechunk.store import IcechunkStore

import embstore
from embstore.errors import EmbstoreError
from embstore.store import parse_age
from embstore.testing.disk import tmpfs

ZERO = parse_age("0s")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def save_pt(file: Path, rows: int, dim: int, prefix: str, seed: int) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((rows, dim), dtype="f4"))
    torch.save({f"{prefix}/{i:05d}.mp4": x[i].clone() for i in range(rows)}, file)


def ratios(store: Path, data_bytes: int) -> tuple[float, float]:
    before = du(store) / data_bytes
    embstore.gc(store, older_than=ZERO, safety_margin=ZERO)
    return before, du(store) / data_bytes


def test_small_batches_leave_disk_proportional_to_data(tmp_path):
    rows, dim = 3000, 768
    file = tmp_path / "a.pt"
    save_pt(file, rows, dim, "a", 0)
    store = tmp_path / "s"
    embstore.ingest([file], store=store, batch_rows=500)
    before, after = ratios(store, rows * dim * 4)
    assert before <= 1.2 and after <= 1.05, (before, after)
    assert embstore.open(store).sizes["sample"] == rows


def test_many_small_ingests_leave_disk_proportional_to_data(tmp_path):
    appends, dim = 16, 1024
    store = tmp_path / "s"
    for k in range(appends):
        save_pt(tmp_path / "a.pt", 256, dim, f"a{k:02d}", k)
        embstore.ingest([tmp_path / "a.pt"], store=store)
    before, after = ratios(store, appends * 256 * dim * 4)
    assert before <= 1.2 and after <= 1.05, (before, after)


class Disk:
    """Bytes written through Icechunk's store, refused with ENOSPC past ``capacity`` (what a
    failed commit wrote stays counted, as its orphaned chunks stay on a real disk)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self.real = IcechunkStore.set

    async def set(self, store: IcechunkStore, key: str, value) -> None:
        size = len(value.to_bytes())
        if self.used + size > self.capacity:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.used += size
        await self.real(store, key, value)


def test_after_a_full_disk_and_freeing_space_the_rerun_completes(tmp_path):
    rows, dim = 4000, 256
    file = tmp_path / "a.pt"
    save_pt(file, rows, dim, "a", 1)
    data = rows * dim * 4
    store = tmp_path / "s"
    disk = Disk(capacity=data // 2)
    with mock.patch.object(IcechunkStore, "set", lambda s, k, v: disk.set(s, k, v)):
        with pytest.raises(EmbstoreError, match="No space left"):
            embstore.ingest([file], store=store, batch_rows=500)
        disk.capacity = 2 * data  # space freed: the disk holds twice the data
        embstore.ingest([file], store=store, batch_rows=500)
    ds = embstore.open(store)
    assert ds.sizes["sample"] == rows and len(set(ds["path"].values.tolist())) == rows
    assert disk.used <= 2 * data


def test_on_a_real_disk_twice_the_data_the_rerun_after_enospc_completes(tmp_path):
    """Issue 18: after ENOSPC mid-ingest and freeing the space, the re-run completes on a disk
    of 2 x the float32 vectors, every row exactly once and equal to the source."""
    rows, dim = 16_000, 256  # 16 MiB of vectors: the store's fixed metadata is small beside it
    file = tmp_path / "a.pt"
    save_pt(file, rows, dim, "a", 3)
    data = rows * dim * 4
    with tmpfs(tmp_path / "disk", 2 * data) as disk:
        store = disk / "s"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (2 * data - data // 2))  # room for half the vectors
        with pytest.raises(EmbstoreError, match="No space left"):
            embstore.ingest([file], store=store, batch_rows=2000)
        filler.unlink()
        embstore.ingest([file], store=store, batch_rows=2000)
        ds = embstore.open(store)
        paths = ds["path"].values.tolist()
        assert len(paths) == rows == len(set(paths))
        source = torch.load(file)
        got = ds.embedding.values
        for i, path in enumerate(paths):
            np.testing.assert_array_equal(got[i], source[path].numpy())

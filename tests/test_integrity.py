"""Damaged stores (issue 20): never silently wrong, never made worse, one line naming the store.

Every store here is real and small; damage is done to its files the way backups, sync tools
and people do it (swap, truncate, garble, delete). A refusing command must not change a byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
import embstore
from embstore.errors import DamagedStoreError, StoreError
from embstore.samples import make_npy_tree
from embstore.store import StoreWriter

runner = CliRunner()
DIM = 256


def fingerprint(store: Path) -> dict[str, str]:
    """Every file of a store and its sha256 (the lock file's existence aside)."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "embstore.lock"
    }


def tip_id(store: Path) -> str:
    return json.loads((store / "refs" / "branch.main" / "ref.json").read_text())["snapshot"]


def snapshot_of(store: Path, version: str) -> dict:
    """The snapshot's nodes and manifests, as Icechunk prints them."""
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    return json.loads(repo.inspect_snapshot(version))


def manifest_of(store: Path, array: str, version: str | None = None) -> Path:
    nodes = snapshot_of(store, version or tip_id(store))["nodes"]
    node = next(n for n in nodes if n["path"] == f"/{array}")
    return store / "manifests" / node["manifest_refs"][0]["id"]


def new_files(store: Path, before: set[str], folder: str) -> list[Path]:
    return sorted(p for p in (store / folder).iterdir() if p.name not in before)


def flip(path: Path, at: int | None = None) -> None:
    """Same-size corruption: flip the bits of a few bytes."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    for i in range(at, min(at + 8, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def make_store(path: Path, batches: int = 3, rows: int = 6) -> Path:
    """``batches`` versions of ``rows`` rows each, 4-row chunks; paths long and random so
    that the label chunks are stored as their own objects (small ones are inlined)."""
    writer = StoreWriter(path, feature_size=DIM, row_chunk=4)
    rng = np.random.default_rng(0)
    for b in range(batches):
        paths = [f"s{b}/{rng.bytes(24).hex()}.npy" for _ in range(rows)]
        writer.append(paths, rng.random((rows, DIM)), {"subject": [f"s{b}"] * rows})
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "s")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "emb"
    make_npy_tree(tree, n_subjects=2, n_categories=1, ages=range(6, 8), dim=DIM)
    return tree


def one_line_failure(args: list[str], store: Path) -> str:
    result = runner.invoke(cli.app, args)
    text = result.output.strip()
    assert result.exit_code == 1, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert str(store) in text, text
    return text


def refuses_without_writing(store: Path, tree: Path, tmp_path: Path) -> None:
    """ingest, tag and gc refuse in one line and change no byte of the store."""
    before = fingerprint(store)
    one_line_failure(["ingest", str(tree), "--store", str(store)], store)
    one_line_failure(["tag", str(store), "t"], store)
    one_line_failure(["gc", str(store), "--older-than", "0s", "--safety-margin", "0s"], store)
    assert fingerprint(store) == before


# -- checksums -------------------------------------------------------------------------------


def test_every_array_of_a_new_store_carries_a_crc32c_checksum(store):
    zarr_json = snapshot_of(store, tip_id(store))["nodes"]
    assert {n["path"] for n in zarr_json} >= {"/embedding", "/path", "/subject"}
    ds = embstore.open(store)
    for name in ("embedding", "path", "subject", "age_mo", "nonfinite"):
        codecs = [type(c).__name__ for c in ds[name].encoding.get("compressors", ())]
        assert "Crc32cCodec" in codecs, (name, codecs)


def test_same_size_corruption_of_an_embedding_chunk_is_an_error(store, tmp_path):
    before = {p.name for p in (store / "chunks").iterdir()}
    writer = StoreWriter(store)
    writer.append(["x/1.npy", "x/2.npy"], np.ones((2, DIM)))  # rows 18-19: chunk 4, new
    chunk = next(p for p in new_files(store, before, "chunks") if p.stat().st_size > 2 * DIM * 4)
    flip(chunk, at=100)
    with pytest.raises(DamagedStoreError, match=str(store)):
        embstore.export(store, tmp_path / "out", format="npy-tree")
    assert not (tmp_path / "out").exists()
    report = embstore.validate(store, deep=True)
    assert not report.ok and any("embedding" in e for e in report.errors), report.errors


# -- a replaced snapshot ---------------------------------------------------------------------


def test_a_snapshot_replaced_by_an_older_one_is_refused_everywhere(store, tree, tmp_path):
    versions = [v.id for v in embstore.log(store)]
    shutil.copy(store / "snapshots" / versions[1], store / "snapshots" / versions[0])
    with pytest.raises(DamagedStoreError, match="replaced"):
        embstore.export(store, tmp_path / "out", format="npy-tree")
    with pytest.raises(DamagedStoreError, match=versions[0]):
        embstore.open(store)
    refuses_without_writing(store, tree, tmp_path)
    report = embstore.validate(store, deep=True)
    assert not report.ok and any(versions[0] in e for e in report.errors)


def test_a_manifest_replaced_by_another_arrays_is_refused(store, tree, tmp_path):
    shutil.copy(manifest_of(store, "path"), manifest_of(store, "embedding"))
    with pytest.raises(DamagedStoreError, match="embedding"):
        embstore.open(store).embedding.values
    refuses_without_writing(store, tree, tmp_path)


@pytest.mark.parametrize("damage", [truncate, flip, Path.unlink], ids=["truncate", "garble", "rm"])
def test_a_damaged_tip_manifest_makes_ingest_refuse_without_a_failed_record(
    store, tree, tmp_path, damage
):
    damage(manifest_of(store, "embedding"))
    refuses_without_writing(store, tree, tmp_path)


def test_a_truncated_partial_chunk_refuses_the_append_that_would_rewrite_it(store, tree):
    # 18 rows in 4-row chunks: chunk 4 holds rows 16-17 and the next append rewrites it
    before_refs = tip_id(store)
    nodes = snapshot_of(store, before_refs)
    assert nodes
    chunks = sorted((store / "chunks").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    partial = next(p for p in reversed(chunks) if p.stat().st_size == 2 * DIM * 4 + 4)
    truncate(partial)
    before = fingerprint(store)
    result = runner.invoke(cli.app, ["ingest", str(tree), "--store", str(store)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert fingerprint(store) == before and tip_id(store) == before_refs


# -- a garbled zstd label chunk --------------------------------------------------------------


def _label_chunk(store: Path) -> Path:
    zstd = b"\x28\xb5\x2f\xfd"
    chunks = sorted((store / "chunks").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return next(p for p in reversed(chunks) if p.read_bytes()[:4] == zstd)


def test_a_garbled_label_chunk_is_one_line_in_every_command(store, tree, tmp_path):
    flip(_label_chunk(store), at=12)
    before = fingerprint(store)
    for args in (
        ["ingest", str(tree), "--store", str(store)],
        ["tag", str(store), "t"],
        ["gc", str(store), "--older-than", "0s", "--safety-margin", "0s"],
        ["export", str(store), str(tmp_path / "out"), "--format", "npy-tree"],
        ["validate", str(store), "--deep"],
    ):
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("error")]
        assert lines and str(store) in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) <= 2, (args, result.output)
    assert fingerprint(store) == before


def test_a_damage_error_is_a_store_error():
    assert issubclass(DamagedStoreError, StoreError)

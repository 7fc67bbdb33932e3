"""Damaged repositories: every command says what is wrong in one line and writes nothing."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
import embstore
from embstore.errors import StoreError
from embstore.store import StoreWriter
from embstore.testing import make_npy_tree

runner = CliRunner()


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fingerprint(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): _digest(p) for p in sorted(store.rglob("*")) if p.is_file()}


def _tip_snapshot(store: Path) -> Path:
    ref = json.loads((store / "refs" / "branch.main" / "ref.json").read_text())
    return store / "snapshots" / ref["snapshot"]


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = b"\x00garbage" * (len(data) // 16 + 1)
    path.write_bytes(bytes(data[: len(data)]))


DAMAGE = {
    "ref-missing": lambda s: (s / "refs" / "branch.main" / "ref.json").unlink(),
    "ref-garbled": lambda s: (s / "refs" / "branch.main" / "ref.json").write_text("{nope"),
    "snapshot-missing": lambda s: _tip_snapshot(s).unlink(),
    "snapshot-garbled": lambda s: _garble(_tip_snapshot(s)),
    "manifests-missing": lambda s: [p.unlink() for p in (s / "manifests").iterdir()],
    "manifests-garbled": lambda s: [_garble(p) for p in (s / "manifests").iterdir()],
}


@pytest.fixture
def big_store(tmp_path: Path) -> Path:
    """Chunks large enough to be stored as objects (small ones are inlined in manifests)."""
    path = tmp_path / "s"
    writer = StoreWriter(path, feature_size=256, row_chunk=4)
    rng = np.random.default_rng(0)
    writer.append([f"p/{i:03d}" for i in range(12)], rng.random((12, 256)), {"subject": ["a"] * 12})
    return path


@pytest.mark.parametrize("kind", list(DAMAGE), ids=list(DAMAGE))
def test_damage_is_one_line_and_nothing_is_written(big_store, tmp_path, kind):
    DAMAGE[kind](big_store)
    before = _fingerprint(big_store)
    writes = {
        "append": lambda: StoreWriter(big_store).append(["new"], np.ones((1, 256))),
        "normalize": lambda: embstore.normalize_store(big_store),
        "tag": lambda: embstore.tag(big_store, "t"),
        "gc": lambda: embstore.gc(big_store, older_than=embstore.store.parse_age("0s")),
    }
    reads = {
        "info": lambda: embstore.info(big_store),
        "export": lambda: embstore.export(big_store, tmp_path / "out", format="npy-tree"),
        "validate": lambda: embstore.validate(big_store, deep=True),
    }
    for name, call in {**writes, **reads}.items():
        try:
            result = call()
        except StoreError as exc:
            assert "\n" not in str(exc) and str(big_store) in str(exc), name
        else:  # a deep validation may report instead of raising, but never "ok"
            assert name == "validate" and not result.ok, name
    tree = tmp_path / "emb"
    make_npy_tree(tree, n_subjects=2, n_categories=1, ages=range(6, 8), dim=256)
    result = runner.invoke(cli.app, ["ingest", str(tree), "--store", str(big_store)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert _fingerprint(big_store) == before


def test_a_lost_chunk_is_found_by_deep_validation_and_restore_recovers(big_store):
    good = embstore.log(big_store)[0].id
    embstore.normalize_store(big_store)  # writes new chunk objects for 'normalized' only
    chunks = {p.name for p in (big_store / "chunks").iterdir()}
    embstore.restore(big_store, good)
    normalized_chunks = chunks - {p.name for p in (big_store / "chunks").iterdir()}
    assert not normalized_chunks  # restore copied nothing away: old objects stay
    # lose one chunk object that only the normalize version uses
    StoreWriter(big_store).set_labels({"site": ["x"] * 12})
    embstore.normalize_store(big_store, name="again")
    newest = {p.name for p in (big_store / "chunks").iterdir()} - chunks
    victim = sorted(newest)[0]
    (big_store / "chunks" / victim).unlink()
    report = embstore.validate(big_store, deep=True)
    assert not report.ok and any("cannot be read" in e for e in report.errors)
    assert embstore.validate(big_store, version=good, deep=True).ok
    embstore.restore(big_store, good)
    assert embstore.validate(big_store, deep=True).ok

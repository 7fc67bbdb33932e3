"""The command line answers bad input and a bad environment with one line and exit code 1:
typos create nothing, names collide in one line, a full or read-only disk is one line and
leaves the data safe, and ``--debug`` shows the traceback."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import embstore
from cli import app
from embstore.errors import EmbstoreError
from embstore.testing import make_npy_tree
from embstore.testing.disk import tmpfs

runner = CliRunner()


def one_line_error(args: list[object], *contains: str, logged: bool = False) -> str:
    """Run the CLI; check it failed with exactly one line (``logged``: after warnings)."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    text = lines[-1] if logged else result.output.strip()
    assert text.startswith("error:") and (logged or len(lines) == 1), result.output
    assert sum(line.startswith("error:") for line in lines) == 1
    assert "Traceback" not in text and "Exception ignored" not in text
    for part in contains:
        assert part in text, text
    return text


COMMANDS = {
    "normalize": ["normalize", "{missing}"],
    "info": ["info", "{missing}"],
    "validate": ["validate", "{missing}"],
    "inspect": ["inspect", "{missing}"],
    "inspect-report": ["inspect", "{missing}", "--report", "{tmp}/report"],
    "export-npy-tree": ["export", "{missing}", "{tmp}/out", "--format", "npy-tree"],
    "export-zarr": ["export", "{missing}", "{tmp}/out.zarr", "--format", "zarr"],
}


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_typo_creates_nothing(tmp_path, args):
    missing = tmp_path / "typo.zarr"
    one_line_error(
        [a.format(missing=missing, tmp=tmp_path) for a in args], f"{missing}: does not exist"
    )
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "info", str(tmp_path / "typo.zarr")])
    assert isinstance(result.exception, EmbstoreError)


def test_garbage_hdf5_is_one_line_without_finalizer_noise(tmp_path, capfd):
    file = tmp_path / "x.h5"
    file.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 300)
    one_line_error(["ingest", file, "--store", tmp_path / "s.zarr"], str(file))
    assert "Exception ignored" not in capfd.readouterr().err
    assert not (tmp_path / "s.zarr").exists()


def test_a_non_utf8_file_name_prints_escaped_on_one_line(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    np.save(root / os.fsdecode(b"caf\xe9\n.npy"), np.ones(4, "f4"))
    one_line_error(["ingest", root, "--store", tmp_path / "s.zarr"], "caf\\udce9\\n.npy")


def test_pickle_bomb_through_the_cli_is_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Bomb:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    torch.save({"a": Bomb()}, tmp_path / "x.pt")
    one_line_error(["ingest", tmp_path / "x.pt", "--store", tmp_path / "s.zarr"], "refused")
    assert not marker.exists()


NAMES = {
    "normalize-name-reserved": (["normalize", "{store}", "--name", "path"], "'path' cannot be"),
    "normalize-name-same": (["normalize", "{store}", "--name", "embedding"], "cannot be"),
    "normalize-name-invalid": (["normalize", "{store}", "--name", "a b"], "'a b' cannot be"),
    "pattern-group-reserved": (
        ["ingest", "{tree}", "--store", "{store}", "--pattern", "(?P<sample>.+)"],
        "'sample' cannot be a label name",
    ),
    "csv-column-reserved": (
        ["ingest", "{tree}", "--store", "{store}", "--labels", "{csv}"],
        "'feature' cannot be a label name",
    ),
}


@pytest.mark.parametrize(("args", "message"), NAMES.values(), ids=NAMES.keys())
def test_reserved_and_colliding_names_are_one_line(store, npy_tree, tmp_path, args, message):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,feature\na,b\n")
    values = {"store": store, "tree": npy_tree, "csv": csv}
    one_line_error([a.format(**values) for a in args], message)


def test_a_label_cannot_take_a_variables_name(store, npy_tree, tmp_path):
    embstore.normalize_store(store)
    csv = tmp_path / "labels.csv"
    rows = "\n".join(f"{p},x" for p in embstore.open(store).path.values)
    csv.write_text(f"path,normalized\n{rows}\n")
    np.save(npy_tree / "category000" / "00990001_6_month_level_avg.npy", np.ones(16, "f4"))
    csv.write_text(csv.read_text() + "category000/00990001_6_month_level_avg.npy,x\n")
    one_line_error(
        ["ingest", npy_tree, "--store", store, "--labels", csv], "'normalized' is a variable"
    )


# --- a full or read-only disk -----------------------------------------------------------------


def _mount_tmpfs(mount: Path, megabytes: int) -> contextlib.AbstractContextManager[Path]:
    return tmpfs(mount, megabytes * 2**20)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a disk that fills up."""
    with _mount_tmpfs(tmp_path / "small", 2) as mount:
        yield mount


def _fill(disk: Path, megabytes: float) -> Path:
    filler = disk / "filler"
    filler.write_bytes(b"\0" * int(megabytes * 2**20))
    return filler


def test_export_onto_a_full_disk_is_one_line_keeps_the_old_output_and_reruns(tmp_path, small_disk):
    store = tmp_path / "s.zarr"
    make_npy_tree(tmp_path / "emb", n_subjects=10, n_categories=10, ages=range(3), dim=992)
    embstore.ingest([tmp_path / "emb"], store=store)  # 300 files of one 4 KiB page: 1.2 MB
    out = small_disk / "out"
    filler = _fill(small_disk, 1.2)
    one_line_error(["export", store, out, "--format", "npy-tree"], "No space left on device")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no partial output
    filler.unlink()
    result = runner.invoke(app, ["export", str(store), str(out), "--format", "npy-tree"])
    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.npy"))) == 300
    before = {p: p.read_bytes() for p in out.rglob("*.npy")}
    embstore.normalize_store(store)
    one_line_error(
        ["export", store, out, "--format", "npy-tree", "--variable", "normalized", "--overwrite"],
        "No space left on device",
    )
    assert {p: p.read_bytes() for p in out.rglob("*.npy")} == before  # the old output, whole
    assert sorted(p.name for p in small_disk.iterdir()) == ["out"]


@pytest.mark.parametrize("fmt", ["pt", "hdf5", "zarr"])
def test_file_exports_onto_a_full_disk_are_one_line(tmp_path, small_disk, fmt):
    store = tmp_path / "s.zarr"
    make_npy_tree(tmp_path / "emb", n_subjects=10, n_categories=10, ages=range(3), dim=1024)
    embstore.ingest([tmp_path / "emb"], store=store)
    filler = _fill(small_disk, 1.5)
    one_line_error(["export", store, small_disk / "out", "--format", fmt], "No space left")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
    filler.unlink()
    result = runner.invoke(app, ["export", str(store), str(small_disk / "out"), "--format", fmt])
    assert result.exit_code == 0, result.output


def test_ingest_onto_a_full_disk_is_one_line_keeps_commits_and_reruns(tmp_path):
    tree = tmp_path / "emb"
    make_npy_tree(tree, n_subjects=10, n_categories=10, ages=range(3), dim=256)
    embstore.ingest([tree], store=tmp_path / "measure.zarr", batch_rows=50)
    measured = (tmp_path / "measure.zarr").rglob("*")
    size = sum(p.stat().st_blocks * 512 for p in measured if p.is_file())  # bytes on disk
    disk_mb = max(2, 3 * size // 2**20 + 1)
    with _mount_tmpfs(tmp_path / "disk", disk_mb) as disk:
        store = disk / "s.zarr"
        filler = _fill(disk, (disk_mb * 2**20 - size // 2) / 2**20)  # room for half the store
        one_line_error(
            ["ingest", tree, "--store", store, "--batch-rows", "50"],
            f"{store}: No space left on device",
            logged=True,  # the store's repair may log what it rolled back
        )
        filler.unlink()
        if store.exists():  # what was committed before the disk filled up is intact
            ds = embstore.open(store)
            for path, vector in zip(ds.path.values, ds.embedding.values, strict=True):
                np.testing.assert_array_equal(vector, np.load(tree / path))
        args = ["ingest", str(tree), "--store", str(store), "--batch-rows", "50"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert embstore.open(store).sizes["sample"] == 300


def test_export_onto_a_read_only_disk_is_one_line(tmp_path, small_disk, store):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    one_line_error(["export", store, small_disk / "out", "--format", "pt"], "Read-only file system")

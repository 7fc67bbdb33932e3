"""One line, always (issue 18, finding 4, outside extraction): third-party warnings never reach
the terminal (they go to the log ``--debug`` shows), bad files are one line; and an ingest that
creates a store says so (a mistyped ``--store`` is visible)."""

from __future__ import annotations

import logging
import warnings

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import embstore
from cli import app

runner = CliRunner()


def _run(*args: object, code: int) -> list[str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output.splitlines()


def test_a_legacy_pickle_pt_is_one_line_without_torchs_protocol_warning(tmp_path):
    file = tmp_path / "old.pt"
    vectors = {"a/b.npy": torch.ones(4), "a/c.npy": torch.zeros(4)}
    torch.save(vectors, file, _use_new_zipfile_serialization=False, pickle_protocol=4)
    (line,) = _run("ingest", file, "--store", tmp_path / "s", code=1)
    assert line.startswith(f"error: {file}: refused by torch.load")


def test_an_hdf5_file_from_another_tool_is_one_line_without_phony_dims_warning(tmp_path):
    file = tmp_path / "other.h5"
    with h5py.File(file, "w") as f:  # datasets without dimension scales, as h5py writes them
        f["embeddings"] = np.ones((3, 4), "f4")
        f["paths"] = np.array([b"a", b"b", b"c"])
    (line,) = _run("ingest", file, "--store", tmp_path / "s", code=1)
    assert line.startswith(f"error: {file}: needs") and "phony" not in line


@pytest.mark.filterwarnings("default::FutureWarning")  # as outside pytest: shown, not raised
def test_third_party_warnings_go_to_the_debug_log_not_the_terminal(store, monkeypatch):
    real = embstore.validate

    def noisy(*args, **kwargs):
        warnings.warn("a library's\nmulti-line warning", FutureWarning, stacklevel=1)
        logging.getLogger("somelib.core").warning("a library's log\nwarning")
        return real(*args, **kwargs)

    monkeypatch.setattr(embstore, "validate", noisy)
    assert _run("validate", store, code=0) == [f"{store}: valid"]
    lines = _run("--debug", "validate", store, code=0)
    assert lines[-1] == f"{store}: valid" and len(lines) == 4
    assert lines[0].startswith("DEBUG: FutureWarning: a library's multi-line warning (")
    assert lines[1:3] == ["WARNING: a library's log", "warning"]  # --debug keeps it as it is


def test_ingest_into_a_new_path_says_it_created_a_store(npy_tree, tmp_path):
    store = tmp_path / "typo.store"
    (line,) = _run("ingest", npy_tree, "--store", store, "--layout", "babyview", code=0)
    assert line == f"{store}: created a new store; added 48 rows, store has 48"
    (line,) = _run("ingest", npy_tree, "--store", store, "--layout", "babyview", code=0)
    assert line == f"{store}: added 0 rows, store has 48, 48 already stored (skipped)"

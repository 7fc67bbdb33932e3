"""Every docstring example in the package runs and prints what it shows.

The examples name the files of a small babyview store (``bv.store``, ``emb/``, ``bv.zarr``,
``subset.nc``) and the inputs of the extraction examples (``videos/`` + ``detections.csv`` with a
tiny ``dinov3/``, echo DICOMs under ``files/`` with a tiny ``vjepa2-tiny/``); see
:func:`embstore.testing.make_doc_store`. Each docstring runs in a fresh copy of them, as the
current directory, with ``embstore``, ``np`` and ``xr`` imported, so examples may write. The
installed package is what is tested (the modules are imported, not read from the checkout).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import embstore
from embstore.testing import make_doc_store

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    modules = [embstore] + [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(embstore.__path__, "embstore.")
    ]
    found = {}
    for module in modules:
        for test in finder.find(module):
            if test.examples and test.name.startswith(module.__name__):
                found[test.name] = test
    return [found[name] for name in sorted(found)]


EXAMPLES = _examples()


@pytest.fixture(scope="session")
def doc_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_doc_store(tmp_path_factory.mktemp("docs"))


def test_the_examples_are_found():
    names = {t.name for t in EXAMPLES}
    assert len(names) >= 20
    assert {"embstore._ingest.ingest", "embstore.store.read.open_store"} <= names
    # examples that once were skipped (they write, need faiss, torch or a model): they run now
    assert {
        "embstore._ann.build_index",
        "embstore._torch_dataset.torch_dataset",
        "embstore.extraction.image_extract.extract_images",
        "embstore.extraction.pipeline.extract",
        "embstore.store.committer.BackgroundCommitter",
        "embstore.store.writer.StoreWriter.run",
    } <= names


def test_no_example_is_skipped():
    skipped = [
        f"{t.name} line {(t.lineno or 0) + e.lineno + 1}"
        for t in EXAMPLES
        for e in t.examples
        if e.options.get(doctest.SKIP)
    ]
    assert skipped == [], "make these examples run on the docs store instead of skipping them"


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(test, doc_files, tmp_path, monkeypatch):
    shutil.copytree(doc_files, tmp_path / "docs")
    monkeypatch.chdir(tmp_path / "docs")
    test.globs = {**test.globs, "embstore": embstore, "np": np, "xr": xr}
    lines: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=lines.append, clear_globs=True)
    assert result.failed == 0, "".join(lines)

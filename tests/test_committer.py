"""Background commits (store/committer.py) and the one run record (StoreWriter.run)."""

import ast
import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.store import StoreWriter
from embstore.store.committer import BackgroundCommitter
from embstore.store.views import provenance
from embstore.store.writer import PROVENANCE_LIST_LIMIT, AppendResult


def _rows(start, n, dim=4):
    return [f"p{i}.npy" for i in range(start, start + n)], np.full((n, dim), start, np.float32)


def test_batches_commit_in_order_each_one_version_results_in_the_callers_thread(tmp_path):
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=4)
    seen, threads = [], set()

    def on_result(result):
        seen.append(result.rows)
        threads.add(threading.current_thread().name)

    with BackgroundCommitter(writer, in_flight=2, on_result=on_result) as committer:
        for start in (0, 3, 6):
            committer.submit(*_rows(start, 3))
    assert seen == [3, 6, 9] and threads == {threading.current_thread().name}
    ds = embstore.open(tmp_path / "s.zarr")
    assert ds.path.values.tolist() == [f"p{i}.npy" for i in range(9)]
    assert ds.embedding.values[:, 0].tolist() == [0] * 3 + [3] * 3 + [6] * 3
    assert len(embstore.log(tmp_path / "s.zarr")) == 4  # create + one version per batch


class _SlowWriter:
    """Stands in for a writer whose commits take a while; counts what is handed over."""

    path = "slow"

    def __init__(self, fail_at=None):
        self.calls, self.fail_at, self.lock = [], fail_at, threading.Lock()

    def append(self, paths, vectors, labels=None, *, extra=None):
        time.sleep(0.05)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            self.calls.append(None)
            raise OSError(28, "No space left on device")
        self.calls.append(list(paths))
        return AppendResult(added=len(paths), rows=sum(len(c) for c in self.calls if c))


def test_submit_waits_when_in_flight_batches_are_uncommitted():
    writer = _SlowWriter()
    committer = BackgroundCommitter(writer, in_flight=2)  # type: ignore[arg-type]
    most = 0
    for i in range(6):
        committer.submit([f"{i}"], np.zeros((1, 4), np.float32))
        most = max(most, committer._pending)
    committer.flush()
    committer.close()
    assert most <= 2 and len(writer.calls) == 6


def test_a_commit_error_is_raised_in_the_callers_thread_and_nothing_after_it_commits():
    writer = _SlowWriter(fail_at=1)
    committer = BackgroundCommitter(writer, in_flight=3)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space"):
        for i in range(6):
            committer.submit([f"{i}"], np.zeros((1, 4), np.float32))
        committer.flush()
    committer.close()
    assert writer.calls[0] == ["0"] and writer.calls[1] is None
    assert len(writer.calls) == 2  # batches 2.. were dropped, never committed


def test_an_error_in_the_loop_keeps_what_was_handed_over(tmp_path):
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=4)
    with pytest.raises(KeyboardInterrupt), BackgroundCommitter(writer, in_flight=2) as committer:
        committer.submit(*_rows(0, 2))
        raise KeyboardInterrupt
    assert embstore.open(tmp_path / "s.zarr").sizes["sample"] == 2


@pytest.mark.parametrize(
    ("error", "status"),
    [(None, "complete"), (ValueError, "failed"), (KeyboardInterrupt, "interrupted")],
    ids=["complete", "failed", "interrupted"],
)
def test_writer_run_records_how_a_run_ended(tmp_path, error, status):
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=4)
    expected = pytest.raises(error) if error else contextlib.nullcontext()
    with expected, writer.run("ingest", {"sources": ["a/"]}) as run:
        writer.append(*_rows(0, 2))
        run.update(bad=[f"bad{i}" for i in range(250)], bad_count=250)
        if error:
            raise error("x")
    entry = provenance(embstore.open(tmp_path / "s.zarr"))["provenance"][-1]
    assert entry["status"] == status and entry["rows_added"] == 2 and entry["sources"] == ["a/"]
    if error is None:
        assert len(entry["bad"]) == PROVENANCE_LIST_LIMIT and entry["bad_count"] == 250
    else:
        assert entry["error"] == error.__name__ and "bad" not in entry


def test_finishing_a_run_is_written_once_in_the_store():
    """ingest and extraction record their runs through StoreWriter.run: nothing outside the
    writer calls start_run / finish_run."""
    package = Path(embstore.__file__).parent
    callers = []
    for file in package.rglob("*.py"):
        if file.name == "writer.py" and file.parent.name == "store":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("start_run", "finish_run"):
                callers.append(f"{file.relative_to(package)}:{node.lineno}")
    assert callers == []

"""``embstore.writer``: a custom loop writes into a store exactly once, even after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.errors import BadInputError, DuplicatePathError
from embstore.store import StoreWriter
from embstore.store.writer import AlignedBatches

N_ROWS = 100

#: A custom extraction loop, as a lab would write it: skip what is stored, append batches.
LOOP = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import embstore

    store, slow = sys.argv[1], sys.argv[2] == "slow"
    with embstore.writer(store, feature_size=6, model="toy", row_chunk=8, batch_rows=8) as w:
        for start in range(0, 100, 5):
            paths = [f"video{i // 10}.mp4#f{i:06d}#0,0,4,4" for i in range(start, start + 5)]
            todo = w.missing(paths)
            idx = [int(p.split("#f")[1][:6]) for p in todo]
            vectors = np.asarray([np.arange(6) + 10.0 * i for i in idx])
            labels = {"subject": [f"s{i % 3}" for i in idx], "age_mo": [i % 12 for i in idx]}
            w.append(todo, vectors.reshape(len(todo), 6), labels=labels)
            print("computed", len(todo), flush=True)
            if slow:
                time.sleep(0.08)
    print("added", w.report.added, flush=True)
    """
)


def _run_loop(store: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LOOP, str(store), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _committed_rows(store: Path) -> int:
    try:
        return int(embstore.open(store).sizes["sample"])
    except Exception:  # noqa: BLE001 - not created yet
        return 0


@pytest.mark.slow
def test_kill_9_then_rerun_adds_only_what_is_missing(tmp_path: Path) -> None:
    store = tmp_path / "crops.store"
    proc = _run_loop(store, "slow")
    deadline = time.monotonic() + 60
    while _committed_rows(store) < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    before = _committed_rows(store)
    assert 24 <= before < N_ROWS
    assert before % 8 == 0  # commits end on whole chunks

    rerun = _run_loop(store, "fast")
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    computed = sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("computed"))
    assert computed == N_ROWS - before  # the re-run did only the missing work
    assert f"added {N_ROWS - before}" in out

    ds = embstore.open(store)
    paths = ds.path.values.tolist()
    assert len(paths) == len(set(paths)) == N_ROWS
    idx = np.array([int(p.split("#f")[1][:6]) for p in paths])
    expected = np.arange(6)[None, :] + 10.0 * idx[:, None]
    np.testing.assert_array_equal(ds.embedding.values, expected.astype(np.float32))
    assert ds.subject.values.tolist() == [f"s{i % 3}" for i in idx]
    assert ds.age_mo.values.tolist() == [i % 12 for i in idx]
    assert embstore.validate(store).ok
    runs = [e for e in embstore.provenance(ds)["provenance"] if e["action"] == "write"]
    assert [r["status"] for r in runs] == ["running", "complete"]  # the killed run stays visible


def test_commits_whole_chunks_and_flushes_the_rest(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with embstore.writer(store, feature_size=3, row_chunk=4) as w:
        for i in range(5):
            paths = [f"img{i}_{j}.png" for j in range(3)]
            w.append(paths, np.full((3, 3), i), labels={"category": ["ball"] * 3})
    messages = [v.message for v in embstore.log(store)]
    assert messages[1:5] == ["write: +3 rows", "write: +4 rows", "write: +4 rows", "write: +4 rows"]
    assert messages[0] == "write complete: 15 rows added"
    assert w.report.added == 15 and w.report.rows == 15 and w.report.commits == 4


def test_duplicates_skipped_and_labels_filled(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with embstore.writer(store, feature_size=2) as w:
        assert w.append(["a", "b"], np.ones((2, 2)), labels={"subject": ["x", "y"]}) == 2
        assert w.append(["b", "c"], np.zeros((2, 2)), labels={"age_mo": [3, None]}) == 1
        assert w.missing(["a", "c", "d"]) == ["d"]
    with embstore.writer(store) as again:  # feature size read from the store
        assert again.append(["a", "d"], np.full((2, 2), 2.0)) == 1
    ds = embstore.open(store)
    assert ds.path.values.tolist() == ["a", "b", "c", "d"]
    assert ds.subject.values.tolist() == ["x", "y", "", ""]
    assert ds.age_mo.values.tolist() == [-1, -1, -1, -1]
    assert w.report.already_stored == 1 and again.report.already_stored == 1


def test_on_duplicate_error_refuses_a_stored_path(tmp_path: Path) -> None:
    with embstore.writer(tmp_path / "s", feature_size=2) as w:
        w.append(["a"], np.ones((1, 2)))
    with (
        pytest.raises(DuplicatePathError, match="'a' is already in"),
        embstore.writer(tmp_path / "s", on_duplicate="error") as again,
    ):
        again.append(["b", "a"], np.ones((2, 2)))
    assert embstore.open(tmp_path / "s").path.values.tolist() == ["a"]


def test_a_failing_loop_keeps_its_rows_and_records_failure(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with pytest.raises(RuntimeError), embstore.writer(store, feature_size=2) as w:
        w.append(["a", "b"], np.ones((2, 2)))
        raise RuntimeError("model crashed")
    ds = embstore.open(store)
    assert ds.sizes["sample"] == 2
    last = embstore.provenance(ds)["provenance"][-1]
    assert last["status"] == "failed" and last["error"] == "RuntimeError"


def test_bad_input_is_refused_before_anything_is_queued(tmp_path: Path) -> None:
    with embstore.writer(tmp_path / "s", feature_size=2) as w:
        with pytest.raises(BadInputError, match="expected"):
            w.append(["a"], np.ones((1, 3)))
        with pytest.raises(BadInputError, match="'..'"):
            w.append(["../a"], np.ones((1, 2)))
        with pytest.raises(BadInputError, match="age_mo 'twelve' is not a whole number"):
            w.append(["b", "c"], np.ones((2, 2)), labels={"age_mo": ["", "twelve"]})
        assert w.missing(["b", "c"]) == ["b", "c"]  # nothing of the refused batch queued
        with (
            pytest.raises(BadInputError, match="action"),
            embstore.writer(tmp_path / "t", feature_size=2, action="bogus"),
        ):
            pass
    assert embstore.open(tmp_path / "s").sizes["sample"] == 0


def test_commits_run_off_the_loops_thread(tmp_path: Path, monkeypatch) -> None:
    """The loop (a GPU) never runs a commit itself: every append commits on the commit thread."""
    threads = []
    real = StoreWriter.append

    def append(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "append", append)
    with embstore.writer(tmp_path / "s", feature_size=2, row_chunk=2) as w:
        for i in range(5):
            w.append([f"r{i}"], np.full((1, 2), i))
            assert w.missing([f"r{i}"]) == []  # handed over counts as stored for a re-check
    assert threads == ["embstore-commit"] * 3  # rows 0-1, 2-3, then the tail 4
    assert (w.report.added, w.report.rows, w.report.commits) == (5, 5, 3)


def test_a_commit_error_is_raised_in_the_loop_and_the_run_recorded_failed(
    tmp_path: Path, monkeypatch
) -> None:
    real = StoreWriter.append
    calls = []

    def append(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "append", append)
    store = tmp_path / "s"
    with (
        pytest.raises(OSError, match="No space"),
        embstore.writer(store, feature_size=2, row_chunk=4) as w,
    ):
        for i in range(0, 40, 2):
            w.append([f"r{i}", f"r{i + 1}"], np.ones((2, 2)))
        w.flush()
    ds = embstore.open(store)
    assert ds.path.values.tolist() == [f"r{i}" for i in range(w.chunk)]  # the first commit
    last = embstore.provenance(ds)["provenance"][-1]
    assert last["status"] == "failed" and last["error"] == "OSError"


def test_batches_with_other_labels_still_commit_whole_chunks() -> None:
    aligned = AlignedBatches(0, 4, batch_rows=6)
    first = (["a", "b", "c"], np.zeros((3, 2)), {"subject": ["x", "y", "z"]})
    second = (["d", "e", "f"], np.ones((3, 2)), {"age_mo": [1, 2, 3]})
    assert aligned.take(first) == []  # fewer than batch_rows kept back
    [batch] = aligned.take(second)
    assert batch[0] == ["a", "b", "c", "d"]
    assert batch[2] == {"subject": ["x", "y", "z", ""], "age_mo": [-1, -1, -1, 1]}
    paths, vectors, labels = aligned.flush()
    assert paths == ["e", "f"] and vectors.tolist() == [[1, 1], [1, 1]]
    assert labels == {"subject": ["", ""], "age_mo": [2, 3]}
    assert aligned.position == 6


def test_a_writer_says_whether_it_created_the_store(tmp_path):
    """One place decides create-or-open (``StoreWriter``); ingest and the loop writer report it."""
    store = tmp_path / "new.store"
    assert StoreWriter(store, feature_size=4).created
    assert not StoreWriter(store, feature_size=4).created  # the same size: used, not made
    assert not StoreWriter(store).created
    with embstore.writer(tmp_path / "loop.store", feature_size=4) as w:
        w.append(["a"], np.ones((1, 4)))
    assert w.report.created and w.report.summary().startswith("created a new store; added 1")
    with embstore.writer(tmp_path / "loop.store", feature_size=4) as w:
        w.append(["b"], np.ones((1, 4)))
    assert not w.report.created and w.report.summary().startswith("added 1 rows")

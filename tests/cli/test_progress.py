"""Progress counts rows (never dask tasks), a resumed run's rate counts only this run's rows,
and an interrupted run is recorded as such."""

import os
import signal
import time

import pytest
from typer.testing import CliRunner

import cli
import embstore
from embstore.testing import make_pt_dict


def test_normalize_progress_counts_rows_written(store):
    calls = []
    embstore.normalize_store(store, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (48, 48)
    assert {total for _, total in calls} == {48}
    assert len(calls) == 6  # one call per 8-row chunk written


@pytest.mark.parametrize("jobs", [1, 2], ids=["serial", "parallel-pt"])
def test_a_resumed_ingest_counts_only_the_rows_it_adds(tmp_path, pt_file, jobs):
    """Rows stored by an earlier run are left out of done and total, so a progress bar's rate
    (rows/s) is this run's, not inflated by rows skipped in a blink."""
    file, vectors = pt_file
    other = make_pt_dict(tmp_path / "p11.pt", folder="p11", dim=16)
    store = tmp_path / "s.zarr"
    first = dict(list(vectors.items())[:5])
    embstore.StoreWriter(store, feature_size=16).append(list(first), list(first.values()))
    calls = []
    embstore.ingest(
        [file, tmp_path / "p11.pt"],
        store=store,
        jobs=jobs,
        batch_rows=4,
        progress=lambda *a: calls.append(a),
    )
    rest = len(vectors) + len(other) - 5
    assert calls[-1] == (rest, rest)
    assert all(done <= total for done, total in calls)


def test_interrupted_ingest_is_recorded_as_interrupted(npy_tree, tmp_path):
    store = tmp_path / "s.zarr"

    def stop(done: int, total: int) -> None:
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embstore.ingest([npy_tree], store=store, layout="babyview", batch_rows=10, progress=stop)
    last = embstore.provenance(embstore.open(store))["provenance"][-1]
    assert last["action"] == "ingest" and last["status"] == "interrupted"


def test_sigterm_interrupts_like_ctrl_c_then_the_old_handler_returns():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), cli._sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs between bytecodes; never reached
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_command_stopped_by_sigterm_exits_130(store, monkeypatch):
    def stop(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)

    monkeypatch.setattr(embstore.inspect, "inspect_store", stop)
    result = CliRunner().invoke(cli.app, ["inspect", str(store)])
    assert result.exit_code == 130 and "interrupted" in result.output

"""embstore.quality.report: a self-contained page whose images decode, in a real browser too."""

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.quality import report as report_module
from embstore.quality.inspect import inspect_store

PNG = b"\x89PNG\r\n\x1a\n"


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_is_self_contained_with_valid_pngs(normalized, tmp_path):
    store, excluded = normalized
    result = inspect_store(store, variable="normalized", report=tmp_path / "rep", sample=30)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "variable <b>normalized</b>" in page and "exclude_subjects" in page
    assert excluded in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    linked = re.findall(r'href="([^"]+\.png)"', page)
    on_disk = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert sorted(linked) == on_disk and "before_after.png" in on_disk and len(on_disk) == 5
    assert "profiles.png" not in on_disk and "would look alike and are left out" in page
    for name in linked:
        assert (tmp_path / "rep" / name).read_bytes().startswith(PNG)
    images = _images(page)
    assert len(images) == 5 and all(i.startswith(PNG) for i in images)
    assert result.report == str(tmp_path / "rep" / "report.html")
    assert result.color_by == "age_mo"  # the default: a label with values


def test_stored_vectors_show_their_run_log_not_an_empty_record(store, tmp_path):
    result = inspect_store(store, report=tmp_path / "rep", sample=10)
    page = (tmp_path / "rep" / "report.html").read_text()
    folded = r"<h2>Provenance of embedding</h2><details><summary>.*?</summary><pre>(.*?)</pre>"
    provenance = re.search(folded, page, re.S)
    assert provenance and provenance.group(1).strip() != "{}"
    assert "&quot;action&quot;: &quot;ingest&quot;" in provenance.group(1)
    assert result.summary.provenance["runs"][-1]["status"] == "complete"
    assert not (tmp_path / "rep" / "before_after.png").exists()  # no source variable


def test_rows_per_label_fold_the_tail_into_n_more(tmp_path, monkeypatch):
    subjects = [f"s{i:02d}" for i in range(20) for _ in range(i + 1)]
    n = len(subjects)
    embstore.StoreWriter(tmp_path / "s.zarr", feature_size=3).append(
        [str(i) for i in range(n)], np.random.default_rng(0).random((n, 3)), {"subject": subjects}
    )
    monkeypatch.setattr(report_module, "COUNT_ROWS", 5)
    inspect_store(tmp_path / "s.zarr", report=tmp_path / "rep", sample=10)
    page = (tmp_path / "rep" / "report.html").read_text()
    table = re.search(r"rows per subject \(20 values\)</h3>(<table>.*?</table>)", page).group(1)
    cells = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td></tr>", table)
    assert cells[:5] == [("s19", "20"), ("s18", "19"), ("s17", "18"), ("s16", "17"), ("s15", "16")]
    assert cells[5] == ("15 more values", str(sum(range(1, 16))))


def test_inspect_progress_counts_rows(store):
    calls = []
    inspect_store(store, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (48, 48) and all(total == 48 for _, total in calls)


def _chromium() -> str | None:
    return next(
        (
            found
            for name in ("chromium", "chromium-browser", "google-chrome")
            if (found := shutil.which(name))
        ),
        None,
    )


_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


@pytest.mark.skipif(
    _chromium() is None and os.geteuid() != 0,
    reason="no Chromium, and not root so `make test` (.ci/test-deps) cannot install it: "
    "sudo apt-get install chromium (Debian/Ubuntu) or brew install --cask chromium (macOS)",
)
def test_report_loads_in_headless_chromium(normalized, tmp_path):
    browser = _chromium()
    if browser is None:  # root: `make test` and .ci/run install it with .ci/test-deps
        pytest.fail("Chromium is missing: run .ci/test-deps (as root: apt-get install chromium)")
    store, _ = normalized
    inspect_store(store, variable="normalized", report=tmp_path / "rep", sample=30)
    page = (tmp_path / "rep" / "report.html").as_uri()
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    dom = subprocess.run(
        [browser, *_FLAGS, profile, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-loaded="ok"' in dom and 'data-images="5"' in dom
    assert "data-errors" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *_FLAGS, profile, f"--screenshot={shot}", "--window-size=1280,4000", page],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert Path(shot).read_bytes().startswith(PNG)

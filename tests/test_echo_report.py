"""Inspect reports at echo scale: many subjects, redundant id labels, a categories list."""

import re
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.quality import plots, stats
from embstore.quality.inspect import inspect_store
from embstore.store import StoreWriter

N, SUBJECTS, DIM = 600, 60, 8


@pytest.fixture
def echo(tmp_path: Path) -> Path:
    """60 subjects (10 rows each) with a redundant ``subject_id``, 5 categories, c4 offset."""
    rng = np.random.default_rng(0)
    subject = [f"p1{i // 10:07d}" for i in range(N)]
    category = [f"c{i % 5}" for i in range(N)]
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    x[np.asarray(category) == "c4"] += 1.5  # one category departs from the rest
    labels = {"subject": subject, "subject_id": [s[1:] for s in subject], "category": category}
    paths = [f"{s}/s{i}/{i}.mp4" for i, s in enumerate(subject)]
    path = tmp_path / "echo.store"
    StoreWriter(path, feature_size=DIM, row_chunk=128).append(paths, x, labels)
    return path


def test_default_colour_has_few_groups_and_aliases_merge(echo):
    ds = embstore.open(echo)
    assert stats.check_label(ds, None) == "category"  # not the 60 subjects
    merged = stats.redundant_labels(ds)  # age_mo (all missing) is never merged
    assert merged == {"subject": ["subject_id"], "category": [], "age_mo": []}
    summary = stats.summary(ds)
    assert sorted(summary.counts) == ["age_mo", "category", "subject"]
    assert summary.aliases == {"subject": ["subject_id"]}


def test_report_answers_questions_at_scale(echo, tmp_path):
    embstore.normalize_store(echo, categories=["c0", "c1", "c2", "c4"])
    result = inspect_store(echo, variable="normalized", report=tmp_path / "rep", sample=300)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert result.color_by == "category"
    assert "rows per subject (= subject_id) (60 values)" in page
    assert "rows per subject_id" not in page
    assert "60 values; rows per value: min 10, median 10, max 10" in page
    # provenance folded, after the pictures, not on the first screen
    assert re.search(r"<details><summary>[^<]*</summary><pre>", page)
    assert page.index("<h2>Health checks</h2>") < page.index("<h2>Provenance of normalized</h2>")
    assert (tmp_path / "rep" / "profiles.png").exists()  # c4 departs: its panel is drawn


def test_profiles_show_the_groups_that_differ(echo):
    ds = embstore.open(echo)
    rows = stats.sample_rows(ds, 300, order_by="category")
    assert plots.departing_groups(ds, rows, group_by="category")[0] == "c4"
    flat = ds.copy()
    flat["embedding"] = flat.embedding * 0 + np.random.default_rng(1).standard_normal((N, DIM))
    assert plots.departing_groups(flat, rows, group_by="category") == []


def test_rows_outside_the_categories_list_are_marked(echo):
    embstore.normalize_store(echo, categories=["c0", "c1"])
    ds = embstore.open(echo)
    rows = stats.sample_rows(ds, 100)
    fig = plots.plot_before_after(
        ds, rows, variable="normalized", source="embedding", categories=["c0", "c1"]
    )
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    outside = int((~np.isin(ds.category.values[rows], ["c0", "c1"])).sum())
    assert legend == ["in the statistics", f"outside the categories list ({outside} rows)"]


def test_heatmap_ordered_by_a_label_with_many_groups_draws_no_mesh(echo):
    ds = embstore.open(echo)
    rows = stats.sample_rows(ds, 200, order_by="subject")
    fig = plots.plot_cosine_heatmap(ds, rows, order_by="subject")
    assert len(fig.axes[0].lines) == 0 and "ordered by subject" in fig.axes[0].get_title()

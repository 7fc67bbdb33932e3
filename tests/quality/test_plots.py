"""embstore.quality.plots: every figure builds, with the axes and labels a reader needs."""

import numpy as np
import pytest
from matplotlib.figure import Figure

import embstore
from embstore.quality import plots, stats


@pytest.fixture
def ds(store):
    return embstore.open(store)


def test_sample_is_deterministic_and_ordered_by_the_label(ds):
    rows = stats.sample_rows(ds, 20, seed=3, order_by="subject")
    subjects = np.asarray(ds.subject.values)[rows].astype(str)
    assert list(subjects) == sorted(subjects)
    assert np.array_equal(stats.sample_rows(ds, 20, seed=3), stats.sample_rows(ds, 20, seed=3))


def test_heatmap_marks_where_the_ordering_label_changes(ds):
    rows = stats.sample_rows(ds, 30, seed=0, order_by="age_mo")
    fig = plots.plot_cosine_heatmap(ds, rows, order_by="age_mo")
    ax = fig.axes[0]
    ages = np.asarray(ds.age_mo.values)[rows]
    changes = int((ages[1:] != ages[:-1]).sum())
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(a) for a in np.unique(ages)]
    assert len(ax.lines) == 2 * changes  # one horizontal and one vertical line per boundary
    assert "ordered by age_mo" in ax.get_title() and ax.get_ylabel() == "age_mo"


def test_pca_curve_stops_at_95_percent_or_the_rank(ds):
    model = stats.pca(ds)
    rows = stats.sample_rows(ds, 30)
    fig = plots.plot_pca(ds, model, rows, color_by="subject")
    scatter, curve = fig.axes[0], fig.axes[1]
    assert (
        scatter.get_xlabel().startswith("PC1 (")
        and scatter.get_legend().get_title().get_text() == "subject"
    )
    x, y = curve.lines[0].get_data()
    needed = model.components_for(0.95)
    assert x[-1] >= needed and y[needed - 1] >= 0.95
    assert x[-1] <= model.rank and "rank" in curve.get_xlabel()
    assert any(f"{needed} components" in t.get_text() for t in curve.texts)


def test_numeric_colour_has_a_colourbar(ds):
    fig = plots.plot_pca(ds, stats.pca(ds), stats.sample_rows(ds, 30), color_by="age_mo")
    assert any(ax.get_ylabel() == "age_mo" for ax in fig.axes[2:])  # the colourbar's axes


@pytest.mark.parametrize(
    ("group_by", "titles"),
    [
        ("subject", None),
        ("age_mo", ["age_mo = 6", "age_mo = 7", "age_mo = 8", "age_mo = 9"]),
        (None, ["all rows"]),
    ],
    ids=["string", "numeric", "none"],
)
def test_profiles_are_bands_per_group(ds, group_by, titles):
    rows = stats.sample_rows(ds, 48)
    fig = plots.plot_profiles(ds, rows, group_by=group_by)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    got = [ax.get_title(loc="left") for ax in panels]
    if titles is not None:
        assert got == titles
    else:
        assert len(got) == plots.PROFILE_GROUPS and all(t.startswith("subject = ") for t in got)
    assert all(ax.collections for ax in panels)  # the std band
    assert "sorted by the mean" in panels[-1].get_xlabel()


def test_numeric_label_with_many_values_is_binned(tmp_path):
    ages = np.arange(40) % 20
    w = embstore.StoreWriter(tmp_path / "s.zarr", feature_size=3)
    w.append(
        [str(i) for i in range(40)], np.random.default_rng(0).random((40, 3)), {"age_mo": ages}
    )
    ds = embstore.open(tmp_path / "s.zarr")
    fig = plots.plot_profiles(ds, np.arange(40), group_by="age_mo", groups=4)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["age_mo = 0-4", "age_mo = 5-9", "age_mo = 10-14", "age_mo = 15-19"]


def test_before_after_marks_excluded_subjects(normalized):
    store, excluded = normalized
    ds = embstore.open(store)
    rows = stats.sample_rows(ds, 48)
    fig = plots.plot_before_after(
        ds, rows, variable="normalized", source="embedding", excluded_subjects=[excluded]
    )
    before, after, subjects = fig.axes
    assert before.get_title() == "embedding (before)" and after.get_title() == "normalized (after)"
    marked = int((np.asarray(ds.subject.values)[rows] == excluded).sum())
    for ax in (before, after):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["in the statistics", f"excluded: {excluded}"]
        assert len(ax.collections[1].get_offsets()) == marked
    names = [t.get_text() for t in subjects.get_xticklabels()]
    red = [
        n for n, bar in zip(names, subjects.patches, strict=True) if bar.get_facecolor()[0] > 0.8
    ]
    assert sorted(names) == sorted(set(ds.subject.values)) and red == [excluded]


def test_a_subject_offset_stands_out_after_normalization(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 8))
    subjects = np.repeat(["a", "b", "c"], 40)
    x[subjects == "c"] += 3.0  # c sits 3 std away from a and b
    embstore.StoreWriter(tmp_path / "s.zarr", feature_size=8).append(
        [str(i) for i in range(120)], x, {"subject": subjects}
    )
    embstore.normalize_store(tmp_path / "s.zarr", exclude_subjects=["c"])
    ds = embstore.open(tmp_path / "s.zarr")
    fig = plots.plot_before_after(
        ds, np.arange(120), variable="normalized", source="embedding", excluded_subjects=["c"]
    )
    heights = {
        t.get_text(): bar.get_height()
        for t, bar in zip(fig.axes[2].get_xticklabels(), fig.axes[2].patches, strict=True)
    }
    assert heights["c"] > 2.5 and heights["a"] < 0.5 and heights["b"] < 0.5


def test_distributions_and_norms(ds):
    summary = stats.summary(ds)
    rows = stats.sample_rows(ds, 10)
    figures = [plots.plot_distributions(ds, summary, rows), plots.plot_norms(summary)]
    assert all(isinstance(f, Figure) for f in figures)
    assert [ax.get_xlabel() for ax in figures[0].axes] == ["value", "dimension"]
    assert figures[1].axes[0].get_xlabel() == "L2 norm"
    assert embstore.inspect.plot_norms is plots.plot_norms  # the documented spelling works

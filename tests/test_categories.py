"""The categories allow-list on ingest and normalize (seed 000's categories file)."""

from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.errors import BadInputError, EmbstoreError
from embstore.labels import parse_categories, read_categories
from embstore.store.views import provenance

KEPT = ["category000", "category002"]


@pytest.fixture
def categories_file(tmp_path: Path) -> Path:
    file = tmp_path / "categories.txt"
    file.write_text(
        "# seed 000's list\ncategory000\n\n  category002  # trailing comment\nnot-here\n"
    )
    return file


def test_parse_categories_skips_blanks_and_comments():
    assert parse_categories("a\n\n# c\n b # x\na\n") == ["a", "b"]
    assert read_categories(["x", "y", "x"]) == ["x", "y"]


def test_an_empty_or_missing_file_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(BadInputError, match="lists no category"):
        read_categories(tmp_path / "empty.txt")
    with pytest.raises(BadInputError, match="unreadable"):
        read_categories(tmp_path / "missing.txt")


@pytest.mark.parametrize("given", ["file", "list"], ids=["file", "list"])
def test_ingest_keeps_only_listed_categories_and_counts_the_rest(
    tmp_path, npy_tree, categories_file, given
):
    categories = categories_file if given == "file" else KEPT
    report = embstore.ingest(
        [npy_tree], store=tmp_path / "s.zarr", layout="babyview", categories=categories
    )
    ds = embstore.open(tmp_path / "s.zarr")
    assert sorted(set(ds.category.values.tolist())) == KEPT
    assert report.rows_added == 32 and report.outside_categories == 16
    assert "16 outside the categories" in report.summary()
    entry = provenance(ds)["provenance"][-1]
    assert entry["outside_categories"] == 16 and entry["categories"][:2] == KEPT


def test_ingest_categories_need_a_category_label(tmp_path, npy_tree):
    with pytest.raises(BadInputError, match="no 'category' label"):
        embstore.ingest([npy_tree], store=tmp_path / "s.zarr", categories=KEPT)


@pytest.mark.parametrize("mask_outside", [False, True], ids=["keep-outside", "mask-outside"])
def test_normalize_statistics_over_listed_categories(store, categories_file, mask_outside):
    embstore.normalize_store(store, categories=categories_file, mask_outside=mask_outside)
    ds = embstore.open(store)
    x = ds.embedding.values.astype(np.float64)
    inside = np.isin(ds.category.values, KEPT)
    mean, std = x[inside].mean(axis=0), x[inside].std(axis=0)
    np.testing.assert_allclose(ds.normalized_mean.values, mean, rtol=1e-12)
    expected = (x - mean) / (std + 1e-10)
    out = ds.normalized.values
    np.testing.assert_allclose(out[inside], expected[inside], rtol=1e-5, atol=1e-5)
    if mask_outside:
        assert np.isnan(out[~inside]).all()
    else:
        np.testing.assert_allclose(out[~inside], expected[~inside], rtol=1e-5, atol=1e-5)
    meta = provenance(ds.normalized)
    assert meta["categories"] == [*KEPT, "not-here"] and meta["mask_outside"] is mask_outside
    assert meta["rows_used"] == int(inside.sum()) and meta["rows_outside_categories"] == 16


def test_lazy_normalize_takes_categories_with_subject_exclusions(store):
    ds = embstore.open(store)
    out = ds.emb.normalize(categories=KEPT, exclude_subjects=["00270001"], mask_outside=True)
    inside = np.isin(ds.category.values, KEPT)
    used = inside & (ds.subject.values != "00270001")
    x = ds.embedding.values.astype(np.float64)
    np.testing.assert_allclose(out.normalized_mean.values, x[used].mean(axis=0), rtol=1e-12)
    assert np.isnan(out.normalized.values[~inside]).all()
    assert np.isfinite(out.normalized.values[inside]).all()


def test_normalize_categories_need_a_category_label(tmp_path):
    writer = embstore.StoreWriter(tmp_path / "s.zarr", feature_size=2)
    writer.append(["a", "b"], np.ones((2, 2)))
    with pytest.raises(EmbstoreError, match="no 'category' labels"):
        embstore.normalize(embstore.open(tmp_path / "s.zarr"), categories=["x"])

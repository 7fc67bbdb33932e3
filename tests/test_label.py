"""Relabelling stored rows: one commit, unlabelled rows reported, ingest warns without labels."""

import logging
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore._label import label, relabel_columns
from embstore.errors import BadInputError, StoreError
from embstore.store import StoreWriter
from embstore.store.views import provenance


@pytest.fixture
def unlabelled(tmp_path: Path, npy_tree: Path) -> Path:
    """The babyview tree ingested with no layout: every label missing."""
    path = tmp_path / "plain.zarr"
    embstore.ingest([npy_tree], store=path, batch_rows=10, row_chunk=8)
    return path


def test_ingest_without_labels_warns_how_to_add_them(tmp_path, npy_tree, caplog):
    with caplog.at_level(logging.WARNING):
        embstore.ingest([npy_tree], store=tmp_path / "s.zarr")
    assert "no labels derived" in caplog.text and "embstore label" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        embstore.ingest([npy_tree], store=tmp_path / "t.zarr", layout="babyview")
    assert "no labels derived" not in caplog.text


def test_label_with_a_layout_matches_a_labelled_ingest_in_one_commit(unlabelled, store):
    before = provenance(embstore.open(unlabelled))["provenance"]
    assert (embstore.open(unlabelled).subject.values == "").all()
    report = label(unlabelled, layout="babyview")
    ds, expected = embstore.open(unlabelled), embstore.open(store)
    order = np.argsort(ds.path.values)
    ref = np.argsort(expected.path.values)
    for name in ("subject", "age_mo", "category"):
        np.testing.assert_array_equal(ds[name].values[order], expected[name].values[ref])
    assert report.columns == ["age_mo", "category", "subject"] and report.unlabelled == 0
    assert report.changed == {"age_mo": 48, "category": 48, "subject": 48}
    after = provenance(ds)["provenance"]
    assert after[:-1] == before and after[-1]["action"] == "label"  # one new entry
    assert after[-1]["layout"] == "babyview" and after[-1]["columns"] == report.columns
    assert "category" in ds.embedding.encoding["coordinates"].split()  # a label, for plain xarray
    assert embstore.validate(unlabelled).ok


def test_rows_the_source_cannot_label_are_reported_and_keep_their_labels(tmp_path):
    paths = ["a/s1_3.npy", "a/s2_4.npy", "odd-name.npy"]
    writer = StoreWriter(tmp_path / "s.zarr", feature_size=2)
    writer.append(paths, np.ones((3, 2)), {"subject": ["x", "y", "keep-me"]})
    report = label(tmp_path / "s.zarr", pattern=r"(?P<subject>s\d)_(?P<age_mo>\d+)\.npy$")
    ds = embstore.open(tmp_path / "s.zarr")
    assert ds.subject.values.tolist() == ["s1", "s2", "keep-me"]
    assert ds.age_mo.values.tolist() == [3, 4, -1]
    assert report.unlabelled == 1 and report.examples[0].startswith("odd-name.npy: ")
    assert "could not be labelled" in report.summary()
    assert provenance(ds)["provenance"][-1]["unlabelled_count"] == 1


def test_label_from_a_csv_adds_a_column(tmp_path, store):
    ds = embstore.open(store)
    csv = tmp_path / "labels.csv"
    rows = ds.path.values[:-2]  # two rows have no CSV row
    csv.write_text("path,site\n" + "".join(f"{p},site{i % 2}\n" for i, p in enumerate(rows)))
    report = label(store, labels_csv=csv)
    site = embstore.open(store).site.values
    assert site[:-2].tolist() == [f"site{i % 2}" for i in range(len(rows))]
    assert site[-2:].tolist() == ["", ""] and report.unlabelled == 2
    assert report.changed == {"site": len(rows)}


def test_relabel_columns_is_pure():
    layout = embstore.labels.get_layout(pattern=r"(?P<subject>s\d)/")
    existing = {"subject": np.array(["old1", "old2"], dtype=object)}
    columns, problems = relabel_columns(["s1/a", "b"], existing, layout=layout, table=None)
    assert columns["subject"].tolist() == ["s1", "old2"] and list(problems) == [1]
    assert existing["subject"].tolist() == ["old1", "old2"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, BadInputError, "give a layout"),
        ({"layout": "nope"}, BadInputError, "unknown layout"),
        ({"pattern": r"(?P<path>.*)"}, BadInputError, "cannot be a label name"),
    ],
    ids=["no-source", "unknown-layout", "reserved-name"],
)
def test_label_user_errors(store, kwargs, error, message):
    with pytest.raises(error, match=message):
        label(store, **kwargs)


def test_set_labels_refuses_a_wrong_length_or_a_variable(store):
    writer = StoreWriter(store)
    with pytest.raises(StoreError, match="3 values"):
        writer.set_labels({"site": np.array(["a", "b", "c"], dtype=object)})
    with pytest.raises(BadInputError):
        writer.set_labels({"embedding": np.zeros(48, dtype=object)})

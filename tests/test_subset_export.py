"""Exporting a subset (where / --subject / --category), and ``path`` kept as the index by
``ds.emb.to_dataframe`` / ``to_pandas``."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

import embstore
from cli import app
from embstore.errors import EmbstoreError

runner = CliRunner()


def _exported(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def test_export_where_query_keeps_only_matching_rows(store, tmp_path):
    ds = embstore.open(store)
    out = tmp_path / "sub.pt"
    report = embstore.export(
        store, out, format="pt", where="category in ['category001'] and age_mo >= 8"
    )
    keep = (ds.category.values == "category001") & (ds.age_mo.values >= 8)
    got = _exported(out)
    assert report.rows == len(got) == int(keep.sum()) > 0
    for path, row in zip(ds.path.values[keep], ds.embedding.values[keep], strict=True):
        np.testing.assert_array_equal(got[path], row)


def test_export_criteria_and_lists_combine(store, tmp_path):
    ds = embstore.open(store)
    subject = ds.subject.values[0]
    out = tmp_path / "sub.zarr"
    embstore.export(
        store, out, format="zarr", where=[{"subject": [subject]}, "category != 'category000'"]
    )
    keep = (ds.subject.values == subject) & (ds.category.values != "category000")
    back = embstore.prepare_dataset(xr.open_zarr(out, consolidated=False))
    assert sorted(back.path.values.tolist()) == sorted(ds.path.values[keep].tolist())


def test_cli_subject_category_and_where(store, tmp_path):
    ds = embstore.open(store)
    subject, other = ds.subject.values[0], ds.subject.values[-1]
    out = tmp_path / "cli.pt"
    args = ["export", str(store), str(out), "-f", "pt", "--subject", subject, "--subject", other]
    result = runner.invoke(app, [*args, "--category", "category002", "--where", "age_mo < 9"])
    assert result.exit_code == 0, result.output
    keep = (
        np.isin(ds.subject.values, [subject, other])
        & (ds.category.values == "category002")
        & (ds.age_mo.values < 9)
    )
    assert sorted(_exported(out)) == sorted(ds.path.values[keep].tolist())
    assert f"wrote {int(keep.sum())} rows" in result.output


def test_a_bad_query_is_one_line_and_writes_nothing(store, tmp_path):
    out = tmp_path / "bad.pt"
    with pytest.raises(EmbstoreError, match="no_such_label"):
        embstore.export(store, out, format="pt", where="no_such_label == 3")
    result = runner.invoke(app, ["export", str(store), str(out), "-f", "pt", "--where", "age_mo +"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_path_is_the_index_of_dataframes(store):
    ds = embstore.open(store)
    picked = ds.emb.rows(category="category001")
    frame = picked.emb.to_dataframe()
    assert frame.index.name == "path"
    assert frame.index.tolist() == picked.path.values.tolist()
    assert {"subject", "age_mo", "category"} <= set(frame.columns)
    wide = picked.emb.to_dataframe("embedding")
    np.testing.assert_array_equal(
        wide.filter(like="embedding_").to_numpy(), picked.embedding.values
    )
    table = picked.embedding.emb.to_pandas()
    assert isinstance(table, pd.DataFrame) and table.index.name == "path"
    np.testing.assert_array_equal(
        table.loc[picked.path.values[0]].to_numpy(), picked.embedding.values[0]
    )
    series = picked.subject.emb.to_pandas()
    assert series.index.tolist() == picked.path.values.tolist()
    assert picked.emb.to_pandas("embedding").shape == picked.embedding.shape

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import embstore
from embstore.errors import BadInputError
from embstore.store.views import provenance
from embstore.testing import make_pt_dict


def _load_tree(root: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(root).as_posix(): np.load(p) for p in sorted(root.rglob("*.npy"))}


def test_npy_tree_rows_and_labels_match_the_files(store, npy_tree):
    ds = embstore.open(store)
    files = _load_tree(npy_tree)
    assert ds.path.values.tolist() == sorted(files)  # sorted: rows grouped by category
    np.testing.assert_array_equal(ds.embedding.values, np.stack([files[p] for p in sorted(files)]))
    first = ds.isel(sample=0)
    category, name = ds.path.values[0].split("/")
    assert (str(first.category.values), str(first.subject.values)) == (category, name.split("_")[0])
    assert int(first.age_mo.values) == int(name.split("_")[1])
    assert ds.embedding.encoding["chunks"] == (8, 16)


def test_pattern_layout(tmp_path):
    root = tmp_path / "t"
    (root / "siteA").mkdir(parents=True)
    np.save(root / "siteA" / "kid7-age13.npy", np.ones(3, "f4"))
    store = tmp_path / "s.zarr"
    embstore.ingest(
        [root], store=store, pattern=r"(?P<site>[^/]+)/kid(?P<subject>\d+)-age(?P<age_mo>\d+)"
    )
    ds = embstore.open(store)
    assert (ds.site.values[0], ds.subject.values[0], int(ds.age_mo.values[0])) == ("siteA", "7", 13)


def test_float64_and_float16_vectors_are_stored_as_float32(tmp_path):
    root = tmp_path / "t" / "cat"
    root.mkdir(parents=True)
    np.save(root / "a_1_month_level_avg.npy", np.array([1.5, 2.5], "f8"))
    np.save(root / "b_2_month_level_avg.npy", np.array([1.5, 2.5], "f2"))
    embstore.ingest([tmp_path / "t"], store=tmp_path / "s.zarr", layout="babyview")
    ds = embstore.open(tmp_path / "s.zarr")
    assert ds.embedding.dtype == np.float32
    np.testing.assert_array_equal(ds.embedding.values, [[1.5, 2.5], [1.5, 2.5]])


def test_pt_dicts_several_files_mimic_layout(tmp_path):
    a = make_pt_dict(tmp_path / "p10.pt", folder="p10", dim=16, seed=1)
    b = make_pt_dict(tmp_path / "p11.pt", folder="p11", dim=16, seed=2, prefix="files/p11/")
    report = embstore.ingest(
        [tmp_path / "p10.pt", tmp_path / "p11.pt"], store=tmp_path / "s.zarr", layout="mimic-echo"
    )
    assert report.rows_added == len(a) + len(b)
    ds = embstore.open(tmp_path / "s.zarr")
    expected = {**a, **b}
    stored = ds.path.values.tolist()
    assert sorted(stored) == sorted([*a, *b])
    for part in (a, b):  # files load in parallel; each file's rows stay in sorted order
        assert [p for p in stored if p in part] == sorted(part)
    np.testing.assert_array_equal(
        ds.embedding.values, np.stack([expected[p] for p in ds.path.values])
    )
    row = ds.isel(sample=-1)
    subject, study = str(row.path.values).split("/")[-3:-1]
    assert (row.subject.values, row.study.values) == (subject, study)


def test_merged_and_per_folder_files_together_store_each_path_once(tmp_path, pt_file):
    file, data = pt_file
    torch.save(torch.load(file, weights_only=True), tmp_path / "merged.pt")
    report = embstore.ingest(
        [file, tmp_path / "merged.pt"], store=tmp_path / "s.zarr", layout="mimic-echo"
    )
    assert (report.rows_added, report.already_stored) == (len(data), len(data))


def test_a_pt_file_that_needs_code_to_load_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    file = tmp_path / "evil.pt"
    torch.save({"a/b.mp4": Evil()}, file)
    with pytest.raises(BadInputError, match=r"evil\.pt: refused"):
        embstore.ingest([file], store=tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_pt_files_load_in_parallel_and_a_bad_one_fails_alone(tmp_path, pt_file):
    file, data = pt_file
    torch.save({"a/b.mp4": torch.ones(3, dtype=torch.int64)}, tmp_path / "ints.pt")
    with pytest.raises(
        BadInputError, match=r"ints\.pt\['a/b\.mp4'\]: dtype torch.int64 is not a floating"
    ):
        embstore.ingest([file, tmp_path / "ints.pt"], store=tmp_path / "s.zarr", jobs=2)
    assert embstore.open(tmp_path / "s.zarr").sizes["sample"] == len(data)  # the good file landed
    sequential = embstore.ingest([file], store=tmp_path / "one.zarr", jobs=1)
    assert sequential.rows_added == len(data) and sequential.created


def test_a_parallel_ingest_says_whether_it_created_the_store(tmp_path, pt_file):
    file, data = pt_file
    torch.save({"c/d.mp4": torch.ones(16)}, tmp_path / "more.pt")  # pt_file's 16-d vectors
    first = embstore.ingest([file, tmp_path / "more.pt"], store=tmp_path / "s.zarr", jobs=2)
    assert first.created and first.rows_added == len(data) + 1
    again = embstore.ingest([file, tmp_path / "more.pt"], store=tmp_path / "s.zarr", jobs=2)
    assert not again.created and again.already_stored == len(data) + 1


def test_labels_csv_joins_mimic_record_list(tmp_path, pt_file):
    file, data = pt_file
    rows = [
        {
            "subject_id": p.split("/")[0][1:],
            "study_id": p.split("/")[1][1:],
            "acquisition_datetime": f"2180-01-0{i % 9 + 1} 10:00:00",
            "dicom_filepath": "files/p10/" + p.replace(".mp4", ".dcm"),
        }
        for i, p in enumerate(sorted(data))
    ]
    rows.append(
        {**rows[0], "dicom_filepath": "files/p19/p19000000/s1/1_0001.dcm"}
    )  # not ingested: fine
    pd.DataFrame(rows).to_csv(tmp_path / "echo-record-list.csv", index=False)
    embstore.ingest(
        [file],
        store=tmp_path / "s.zarr",
        layout="mimic-echo",
        labels_csv=tmp_path / "echo-record-list.csv",
        labels_key="dicom_filepath",
    )
    ds = embstore.open(tmp_path / "s.zarr")
    assert ds.acquisition_datetime.values.tolist() == [r["acquisition_datetime"] for r in rows[:-1]]
    assert ds.subject_id.values[0] == ds.subject.values[0][1:]


def test_rows_without_a_csv_row_are_a_clear_error(tmp_path, pt_file):
    file, data = pt_file
    pd.DataFrame({"path": sorted(data)[1:], "site": "x"}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(BadInputError, match=r"no row in .*l\.csv"):
        embstore.ingest([file], store=tmp_path / "s.zarr", labels_csv=tmp_path / "l.csv")
    report = embstore.ingest(
        [file], store=tmp_path / "s.zarr", labels_csv=tmp_path / "l.csv", skip_bad=True
    )
    assert report.rows_added == len(data) - 1 and len(report.bad) == 1


def _truncated(f: Path) -> None:
    np.save(f, np.ones(16, "f4"))
    f.write_bytes(f.read_bytes()[:-10])


BAD_FILES = {
    "truncated": (_truncated, "truncated"),
    "2-D": (lambda f: np.save(f, np.ones((2, 8), "f4")), "expected a 1-D vector"),
    "wrong-length": (lambda f: np.save(f, np.ones(12, "f4")), "12 values, the store holds 16-d"),
    "int-dtype": (lambda f: np.save(f, np.ones(16, "i4")), "not a floating-point type"),
    "object-pickle": (
        lambda f: np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True),
        "pickles",
    ),
    "not-npy": (lambda f: f.write_bytes(b"hello world, not numpy"), "not a .npy file"),
    "empty": (lambda f: f.write_bytes(b""), "empty file"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_fails_naming_it_and_commits_nothing_of_its_batch(tmp_path, npy_tree, kind):
    make, problem = BAD_FILES[kind]
    bad = npy_tree / "category001" / "00990001_7_month_level_avg.npy"
    make(bad)
    store = tmp_path / "s.zarr"
    with pytest.raises(BadInputError, match=problem) as info:
        embstore.ingest([npy_tree], store=store, layout="babyview", batch_rows=1000)
    assert str(bad) in str(info.value)
    assert not store.exists() or embstore.open(store).sizes["sample"] == 0


def test_unparseable_filename_fails_then_skip_bad_reports_every_bad_row(tmp_path, npy_tree):
    oops = npy_tree / "category000" / "oops.npy"
    np.save(oops, np.ones(16, "f4"))
    store = tmp_path / "s.zarr"
    with pytest.raises(BadInputError, match="path does not match the 'babyview' layout") as info:
        embstore.ingest([npy_tree], store=store, layout="babyview")
    assert str(info.value).startswith(f"{oops}: ")
    BAD_FILES["truncated"][0](npy_tree / "category002" / "00990001_6_month_level_avg.npy")
    report = embstore.ingest([npy_tree], store=store, layout="babyview", skip_bad=True)
    assert report.rows_added == 48 and len(report.bad) == 2
    assert {Path(b.source).name for b in report.bad} == {
        "oops.npy",
        "00990001_6_month_level_avg.npy",
    }
    entry = provenance(embstore.open(store))["provenance"][-1]
    assert entry["status"] == "complete" and entry["bad_count"] == 2


def test_earlier_batches_stay_committed_and_a_rerun_completes(tmp_path, npy_tree):
    victim = npy_tree / "category002" / "00280001_8_month_level_avg.npy"
    good = victim.read_bytes()
    victim.write_bytes(good[:-4])
    store = tmp_path / "s.zarr"
    with pytest.raises(BadInputError):
        embstore.ingest([npy_tree], store=store, layout="babyview", batch_rows=10)
    # sorted order puts the victim at row 38: three full batches came before its batch
    assert embstore.open(store).sizes["sample"] == 30
    victim.write_bytes(good)
    report = embstore.ingest([npy_tree], store=store, layout="babyview", batch_rows=10)
    assert (report.rows_added, report.already_stored, report.rows) == (18, 30, 48)
    assert provenance(embstore.open(store))["provenance"][-2]["status"] == "failed"


def test_nonfinite_vectors_are_ingested_and_flagged(tmp_path, npy_tree):
    v = np.ones(16, "f4")
    v[3] = np.nan
    np.save(npy_tree / "category000" / "00990001_6_month_level_avg.npy", v)
    v[3] = np.inf
    np.save(npy_tree / "category000" / "00990001_7_month_level_avg.npy", v)
    report = embstore.ingest([npy_tree], store=tmp_path / "s.zarr", layout="babyview")
    assert len(report.nonfinite) == 2
    ds = embstore.open(tmp_path / "s.zarr")
    assert sorted(ds.path.values[ds.nonfinite.values].tolist()) == sorted(report.nonfinite)
    assert embstore.info(tmp_path / "s.zarr")["flagged"]["nonfinite"] == 2


def test_hdf5_round_trip_keeps_vectors_and_labels(tmp_path, store):
    embstore.export(store, tmp_path / "x.h5", format="hdf5")
    assert xr.open_dataset(tmp_path / "x.h5", engine="h5netcdf").sizes["sample"] == 48
    embstore.ingest([tmp_path / "x.h5"], store=tmp_path / "back.zarr")
    a, b = embstore.open(store), embstore.open(tmp_path / "back.zarr")
    for name in ("embedding", "path", "subject", "age_mo", "category"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_unknown_source_type_is_named(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BadInputError, match=r"x\.txt: unknown source type"):
        embstore.ingest([tmp_path / "x.txt"], store=tmp_path / "s.zarr")


def test_pickle_module_is_not_needed_for_npy(tmp_path):
    # the fast reader must never unpickle, even a file np.load would need allow_pickle for
    f = tmp_path / "t" / "c" / "a_1_month_level_avg.npy"
    f.parent.mkdir(parents=True)
    with f.open("wb") as fh:
        np.lib.format.write_array(fh, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="pickles are never loaded"):
        embstore.ingest([tmp_path / "t"], store=tmp_path / "s.zarr", layout="babyview")
    assert pickle  # imported to make the intent explicit


def test_an_ingest_config_is_the_same_as_its_keywords(tmp_path, npy_tree):
    config = embstore.IngestConfig(layout="babyview", batch_rows=16)
    by_config = embstore.ingest([npy_tree], store=tmp_path / "a.store", config=config)
    by_keywords = embstore.ingest(
        [npy_tree], store=tmp_path / "b.store", layout="babyview", batch_rows=16
    )
    assert by_config.rows_added == by_keywords.rows_added > 0
    a, b = embstore.open(tmp_path / "a.store"), embstore.open(tmp_path / "b.store")
    assert list(a.path.values) == list(b.path.values)
    assert list(a.subject.values) == list(b.subject.values)
    # a keyword overrides the config; an unknown one names itself, before anything is made
    again = embstore.ingest([npy_tree], store=tmp_path / "a.store", config=config, jobs=2)
    assert again.already_stored == by_config.rows_added
    with pytest.raises(BadInputError, match=r"^batchrows: is not an ingest setting"):
        embstore.ingest([npy_tree], store=tmp_path / "c.store", batchrows=16)
    with pytest.raises(BadInputError, match=r"^batch_rows: must be at least 1, got 0"):
        embstore.ingest([npy_tree], store=tmp_path / "c.store", batch_rows=0)
    assert not (tmp_path / "c.store").exists()

"""The README's query idioms, on a store ingested in sorted path order."""

import numpy as np
from dask.callbacks import Callback

import embstore


def test_readme_idioms(store):
    embstore.normalize_store(store, exclude_subjects=["00270001"])
    ds = embstore.open(store)
    x, subject, age, category, path = (
        ds[n].values for n in ("embedding", "subject", "age_mo", "category", "path")
    )
    one_subject = ds.isel(sample=(ds.subject == "00270001").values)
    np.testing.assert_array_equal(one_subject.embedding.values, x[subject == "00270001"])
    age_range = ds.isel(sample=((ds.age_mo >= 7) & (ds.age_mo <= 8)).values)
    assert sorted(set(age_range.age_mo.values.tolist())) == [7, 8]
    a_category = ds.isel(sample=(ds.category == "category001").values)
    assert a_category.sizes["sample"] == int((category == "category001").sum())
    one_path = ds.isel(sample=(ds.path == path[5]).values)
    np.testing.assert_array_equal(one_path.embedding.values, x[5:6])
    wanted = (category == "category002") & (age == 7)
    picked = ds.normalized.isel(
        sample=((ds.category == "category002") & (ds.age_mo == 7)).values
    ).values
    np.testing.assert_array_equal(picked, ds.normalized.values[wanted])
    by_age = ds.embedding.groupby(ds.age_mo.compute()).mean()
    np.testing.assert_allclose(  # float32 summed in flox's order: ~1 ulp off near zero
        by_age.sel(age_mo=6).values, x[age == 6].mean(axis=0), rtol=1e-6, atol=1e-6
    )


def test_selecting_one_subject_reads_only_its_chunks(tmp_path):
    writer = embstore.StoreWriter(tmp_path / "s.zarr", feature_size=4, row_chunk=10)
    paths = [f"p{s:03d}/s1/{i}.mp4" for s in range(10) for i in range(10)]  # 10 subjects x 10 rows
    writer.append(paths, np.ones((100, 4)), {"subject": [p.split("/")[0] for p in paths]})
    ds = embstore.open(tmp_path / "s.zarr")
    mask = (ds.subject == "p004").values
    reads = []

    class Reads(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(key, tuple) and "embedding" in key[0]:
                reads.append(key[1:])  # the chunk's block index

    with Reads():
        assert ds.embedding.isel(sample=mask).values.shape == (10, 4)
    assert set(reads) == {(4, 0)}  # one 10-row chunk of ten

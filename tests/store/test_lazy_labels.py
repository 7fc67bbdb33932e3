"""Labels read on first use, once, and a ``path`` index built on the first lookup (issue 11's
open-cost goal), without giving up any xarray idiom (tests/store/test_views.py)."""

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import embstore
from embstore.errors import StoreError
from embstore.store import StoreWriter
from embstore.store.lazy import LabelArray, PathIndex

SUBJECT = "00280001"


def _chunk_objects(store: Path) -> set[str]:
    """The chunk objects of a local repository (small chunks are inlined in manifests)."""
    return {p.name for p in (store / "chunks").iterdir()} if (store / "chunks").is_dir() else set()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How many times each label was read from its source."""
    counts: Counter = Counter()
    original = LabelArray.values

    def counting(self: LabelArray) -> np.ndarray:
        if not self.loaded:
            counts[self.name] += 1
        return original(self)

    monkeypatch.setattr(LabelArray, "values", counting)
    return counts


def test_open_reads_no_label_and_each_label_at_most_once(store, reads):
    ds = embstore.open(store)
    assert not reads and not ds.xindexes["path"].built
    rows = ds.emb.rows(subject=SUBJECT, age_mo=slice(7, 8))
    assert rows.embedding.values.shape[0] > 0
    assert reads == {"subject": 1, "age_mo": 1}  # the one-subject query reads what it asks
    # copies, deep copies and subsets share the one read
    np.testing.assert_array_equal(ds.copy(deep=True).subject.values, ds.subject.values)
    assert ds.isel(sample=slice(2, 5)).subject.values.tolist() == ds.subject.values[2:5].tolist()
    assert reads == {"subject": 1, "age_mo": 1}
    assert rows.path.values.tolist() == [
        p
        for p, s, a in zip(ds.path.values, ds.subject.values, ds.age_mo.values, strict=True)
        if s == SUBJECT and 7 <= a <= 8
    ]
    assert reads == {"subject": 1, "age_mo": 1, "path": 1}
    # xarray's where() compares every coordinate while merging: each label is read, once
    one = ds.where(ds.subject == SUBJECT, drop=True)
    assert set(one.subject.values.tolist()) == {SUBJECT}
    assert set(reads.values()) == {1} and set(reads) == {n for n in ds.coords if n != "feature"}


def test_labels_are_read_only_and_the_callers_arrays_stay_writable(store):
    ds = embstore.open(store)
    with pytest.raises(ValueError, match="read-only"):
        ds.subject.values[0] = "someone"
    renamed = ds.assign_coords(subject=("sample", np.full(ds.sizes["sample"], "x", object)))
    assert set(renamed.subject.values.tolist()) == {"x"} and ds.subject.values[0] != "x"
    mine = np.arange(3, dtype=np.int32)
    prepared = embstore.prepare_dataset(xr.Dataset(coords={"age_mo": ("sample", mine)}))
    assert prepared.age_mo.values.tolist() == [0, 1, 2]
    mine[0] = 7  # still writable, and the prepared dataset took a copy
    assert prepared.age_mo.values[0] == 0


def test_the_path_index_is_built_on_the_first_lookup_and_shared_by_copies(store, reads):
    ds = embstore.open(store)
    early_copy = ds.copy()
    subset = ds.isel(sample=slice(3, 9))
    assert isinstance(subset.xindexes["path"], PathIndex) and not subset.xindexes["path"].built
    paths = ds.path.values
    assert not ds.xindexes["path"].built  # reading the coordinate builds no index
    assert ds.sel(path=paths[4]).embedding.values.tolist() == ds.embedding.values[4].tolist()
    assert ds.xindexes["path"].built and early_copy.xindexes["path"].built
    assert ds.sel(path=[paths[7], paths[1]]).path.values.tolist() == [paths[7], paths[1]]
    # a subset's index is its own (positions differ) but reads nothing new
    assert subset.sel(path=paths[4]).embedding.values.tolist() == ds.embedding.values[4].tolist()
    assert reads == {"path": 1}
    with pytest.raises(KeyError):
        subset.sel(path=paths[0])


def test_alignment_and_concat_use_the_path_index(store):
    ds = embstore.open(store)
    a, b = ds.isel(sample=slice(0, 6)), ds.isel(sample=slice(4, 10))
    left, right = xr.align(a, b, join="inner")
    assert left.path.values.tolist() == right.path.values.tolist() == ds.path.values[4:6].tolist()
    # three or more: xarray joins pairwise, so a joined index must join again
    c = ds.isel(sample=slice(5, 12))
    for how, rows in (("inner", [5]), ("outer", list(range(12)))):
        aligned = xr.align(a, b, c, join=how)
        assert isinstance(aligned[0].xindexes["path"], PathIndex), how
        assert sorted(aligned[2].path.values.tolist()) == ds.path.values[rows].tolist(), how
        assert aligned[0].sel(path=ds.path.values[5]).age_mo.item() == ds.age_mo.values[5], how
    rolled = a.roll(sample=2, roll_coords=True)
    assert rolled.sel(path=ds.path.values[0]).age_mo.item() == ds.age_mo.values[0]
    assert rolled.path.values.tolist() == np.roll(ds.path.values[:6], 2).tolist()
    both = xr.concat([a, ds.isel(sample=slice(6, 10))], dim="sample")
    assert both.path.values.tolist() == ds.path.values[:10].tolist()
    assert both.sel(path=ds.path.values[8]).age_mo.item() == ds.age_mo.values[8]
    xr.testing.assert_identical(ds.isel(sample=slice(0, 6)), a)  # equal indexes compare equal


@pytest.mark.parametrize("loaded", [False, True], ids=["unread", "read"])
def test_a_dataset_pickles_with_its_labels(store, loaded):
    ds = embstore.open(store)
    if loaded:
        ds.sel(path=ds.path.values[0])
    back = pickle.loads(pickle.dumps(ds))
    xr.testing.assert_identical(back, ds)
    assert back.sel(path=ds.path.values[5]).subject.item() == ds.subject.values[5]


def test_a_lost_label_chunk_is_one_line_on_its_first_read_only(tmp_path: Path):
    path = tmp_path / "s"
    writer = StoreWriter(path, feature_size=8, row_chunk=4)
    rng = np.random.default_rng(0)
    writer.append([f"p/{i:03d}" for i in range(12)], rng.random((12, 8)), {"subject": ["a"] * 12})
    before = _chunk_objects(path)
    # random 300-character values: a chunk too large to be inlined into the manifest
    site = ["".join(rng.choice(list("abcdefgh"), 300)) for _ in range(12)]
    StoreWriter(path).set_labels({"site": site})
    (victim,) = _chunk_objects(path) - before
    (path / "chunks" / victim).unlink()
    ds = embstore.open(path)  # opening reads no label
    assert ds.subject.values.tolist() == ["a"] * 12  # the other labels read fine
    with pytest.raises(StoreError) as err:
        ds.site.values.tolist()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "'site'" in message


# one row selection: a slice, positions (any order, repeats allowed) or a boolean mask
_SELECTIONS = st.one_of(
    st.tuples(st.just("slice"), st.integers(0, 20), st.integers(0, 48), st.integers(1, 3)),
    st.tuples(st.just("take"), st.lists(st.integers(0, 47), min_size=1, max_size=12)),
    st.tuples(st.just("mask"), st.integers(0, 2**48 - 1)),
)


def _apply(ds: xr.Dataset, rows: np.ndarray, how: tuple) -> tuple[xr.Dataset, np.ndarray]:
    n = len(rows)
    if how[0] == "slice":
        picked = slice(how[1] % max(n, 1), how[2], how[3])
    elif how[0] == "take":
        picked = np.array([i % n for i in how[1]]) if n else np.array([], dtype=int)
    else:
        picked = np.array([(how[1] >> i) & 1 == 1 for i in range(n)], dtype=bool)
    return ds.isel(sample=picked), rows[picked]


@given(steps=st.lists(_SELECTIONS, min_size=1, max_size=3), data=st.data())
def test_sel_by_path_after_any_row_selection_matches_numpy(store, steps, data):
    ds = embstore.open(store)
    paths, x = ds.path.values, ds.embedding.values
    view, rows = ds, np.arange(len(paths))
    for how in steps:
        view, rows = _apply(view, rows, how)
    assert view.path.values.tolist() == paths[rows].tolist()
    np.testing.assert_array_equal(view.embedding.values, x[rows])
    unique = sorted(set(rows.tolist()))
    if len(unique) != len(rows) or not unique:
        return  # a repeated row makes its path ambiguous, as in pandas; nothing left to look up
    wanted = data.draw(st.lists(st.sampled_from(unique), min_size=1, max_size=5, unique=True))
    got = view.sel(path=paths[wanted].tolist())
    assert got.path.values.tolist() == paths[wanted].tolist()
    np.testing.assert_array_equal(got.embedding.values, x[wanted])
    absent = sorted(set(range(len(paths))) - set(unique))
    if absent:
        with pytest.raises(KeyError):
            view.sel(path=paths[absent[0]])


def test_open_reads_each_metadata_document_once(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a version reads the group's and every array's ``zarr.json`` once: the state
    check, the integrity check and xarray share the metadata read by the first listing."""
    import icechunk

    gets: Counter = Counter()
    original = icechunk.IcechunkStore.get

    async def counting(self: icechunk.IcechunkStore, key: str, *args: object, **kw: object):
        gets[key] += 1
        return await original(self, key, *args, **kw)

    monkeypatch.setattr(icechunk.IcechunkStore, "get", counting)
    ds = embstore.open(store)
    documents = {k: n for k, n in gets.items() if k.endswith("zarr.json")}
    assert "embedding/zarr.json" in documents and "zarr.json" in documents
    assert max(documents.values()) == 1, documents
    assert ds.embedding.shape[0] == int(ds.subject.size)


def test_two_opens_of_one_version_give_the_same_dask_names(tmp_path):
    """The metadata kept in memory is in a fixed order: xarray's dask names (tokens) are the
    same for the same version, so dask can reuse what it computed, and differ between versions."""
    store = tmp_path / "s.store"
    x = np.arange(60, dtype="f4").reshape(20, 3)
    writer = StoreWriter(store, feature_size=3, row_chunk=5)
    writer.append([f"c/{i}.npy" for i in range(10)], x[:10], {"subject": ["a"] * 10})
    writer.append([f"c/{i}.npy" for i in range(10, 20)], x[10:], {"subject": ["b"] * 10})
    names = {embstore.open(store).embedding.data.name for _ in range(4)}
    assert len(names) == 1
    previous = embstore.open(store, version=embstore.log(store)[1].id).embedding.data.name
    assert previous not in names

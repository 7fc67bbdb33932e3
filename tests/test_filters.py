"""Label filters from cached codes: one read per label per version, in any process."""

from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.store import StoreWriter, label_cache
from embstore.store.lazy import LabelArray


def _rows(start: int, stop: int) -> tuple[list[str], np.ndarray, dict]:
    paths = [f"p1{i // 5:07d}/s5{i // 2:07d}/{i:05d}.mp4" for i in range(start, stop)]
    labels = {
        "subject": [p.split("/")[0] for p in paths],
        "study": [p.split("/")[1] for p in paths],
    }
    x = np.arange(start, stop, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    return paths, x, labels


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Path, str]:
    """A store of 60 rows (12 subjects) whose newest version appended 40 more."""
    path = tmp_path / "s.store"
    writer = StoreWriter(path, feature_size=4, row_chunk=16)
    writer.append(*_rows(0, 60))
    first = embstore.log(path)[0].id
    writer.append(*_rows(60, 100))
    return path, first


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EMBSTORE_CACHE_DIR", str(root))
    return root


def test_second_open_selects_rows_without_reading_the_label(two_versions, cache, monkeypatch):
    store, _ = two_versions
    first = embstore.open(store).emb.rows(subject="p10000003")
    assert first.path.values.tolist() == [
        f"p10000003/s5{i // 2:07d}/{i:05d}.mp4" for i in range(15, 20)
    ]

    def no_read(self):  # a later process loads codes; it never decodes the label again
        raise AssertionError(f"label {self.name!r} read from the store")

    monkeypatch.setattr(LabelArray, "_read", no_read)
    again = embstore.open(store).emb.rows(subject=["p10000003", "p10000019"])
    assert again.sizes["sample"] == 10
    np.testing.assert_array_equal(again.embedding.values[:5], first.embedding.values)
    assert embstore.open(store).subject.values.tolist() == _rows(0, 100)[2]["subject"]


def test_every_version_gets_its_own_codes(two_versions, cache):
    store, old = two_versions
    new = embstore.open(store).emb.rows(subject="p10000015")
    before = embstore.open(store, version=old).emb.rows(subject="p10000015")
    assert new.sizes["sample"] == 5 and before.sizes["sample"] == 0  # rows 75-79: appended later
    assert embstore.open(store, version=old).emb.rows(subject="p10000011").sizes["sample"] == 5
    versions = sorted(p.name for p in (cache / "labels").iterdir())
    assert len(versions) == 2 and old in versions
    assert (cache / "labels" / old / "subject" / "codes.npy").exists()


def test_a_damaged_cache_entry_is_rebuilt(two_versions, cache):
    store, _ = two_versions
    embstore.open(store).emb.rows(subject="p10000001")
    (codes,) = (cache / "labels").glob("*/subject/codes.npy")
    np.save(codes, np.zeros(7, dtype=np.int32))  # wrong length: not this label
    picked = embstore.open(store).emb.rows(subject="p10000001")
    assert picked.path.values.tolist() == [
        f"p10000001/s5{i // 2:07d}/{i:05d}.mp4" for i in range(5, 10)
    ]


def test_cache_off_still_selects(two_versions, monkeypatch):
    monkeypatch.setenv("EMBSTORE_CACHE_DIR", "off")
    assert label_cache.cache_root() is None
    store, _ = two_versions
    assert embstore.open(store).emb.rows(subject="p10000002").sizes["sample"] == 5


@pytest.mark.parametrize(
    ("criteria", "rows"),
    [
        ({"subject": "10000004"}, 5),
        ({"subject": 10000004}, 5),
        ({"subject": ["10000004", "p10000005"]}, 10),
        ({"study": "50000010"}, 2),
        ({"study": "s50000010"}, 2),
        ({"subject": "x10000004"}, 0),
    ],
    ids=["bare-id", "int-id", "mixed-list", "bare-study", "prefixed-study", "other-prefix"],
)
def test_subject_and_study_ids_match_in_either_spelling(two_versions, cache, criteria, rows):
    store, _ = two_versions
    assert embstore.open(store).emb.rows(**criteria).sizes["sample"] == rows


def test_selection_on_a_subset_uses_the_subset_rows(two_versions, cache):
    store, _ = two_versions
    ds = embstore.open(store)
    tail = ds.isel(sample=slice(50, None))
    picked = tail.emb.rows(subject="p10000010")
    assert picked.path.values.tolist() == [
        f"p10000010/s5{i // 2:07d}/{i:05d}.mp4" for i in range(50, 55)
    ]
    every_other = ds.isel(sample=np.arange(0, 100, 2))
    assert every_other.emb.rows(subject="p10000000").sizes["sample"] == 3

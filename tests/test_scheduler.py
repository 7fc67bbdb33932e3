"""A dask.distributed LocalCluster gives the same numbers as the threaded scheduler."""

import numpy as np
import pytest

import embstore
from embstore.errors import EmbstoreError

pytestmark = pytest.mark.slow


def test_localcluster_normalize_equals_threaded(store):
    embstore.normalize_store(store, exclude_subjects=["00270001"], name="threaded")
    embstore.normalize_store(
        store, exclude_subjects=["00270001"], name="cluster", scheduler="local:2"
    )
    ds = embstore.open(store)
    np.testing.assert_array_equal(ds.cluster.values, ds.threaded.values)
    np.testing.assert_array_equal(ds.cluster_mean.values, ds.threaded_mean.values)
    np.testing.assert_array_equal(ds.cluster_std.values, ds.threaded_std.values)
    versions = embstore.log(store)
    assert versions[0].message == "normalize embedding -> cluster"
    assert versions[1].message == "normalize embedding -> threaded"  # one version each


def test_localcluster_inspect_equals_threaded(store):
    threaded = embstore.inspect.inspect_store(store)
    cluster = embstore.inspect.inspect_store(store, scheduler="local:2")
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_array_equal(
            cluster.summary.features[name].values, threaded.summary.features[name].values
        )
    assert cluster.health["count"].tolist() == threaded.health["count"].tolist()


def test_a_bad_scheduler_is_one_line(store):
    with pytest.raises(EmbstoreError, match="local:N with N >= 1"):
        embstore.normalize_store(store, scheduler="local:zero")
    with pytest.raises(EmbstoreError, match="cannot connect"):
        embstore.normalize_store(store, scheduler="tcp://127.0.0.1:1")
    assert "normalized" not in embstore.open(store)

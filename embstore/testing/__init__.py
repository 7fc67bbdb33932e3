"""Builders for tests, demos and benchmarks: one home for every piece of generated test data.

- :mod:`embstore.testing.data`: npy trees, ``.pt`` dicts, DICOMs, tiny models, small stores;
- :mod:`embstore.testing.s3`: a local S3-compatible server (moto) and fresh buckets;
- :mod:`embstore.testing.roundtrip`: :class:`~embstore.testing.roundtrip.FormatRoundTripTests`,
  the round-trip tests every format's test module reuses (needs pytest and hypothesis).

Importing this package loads numpy only; each builder imports what it needs when called.
"""

from .data import (
    MALFORMED,
    make_defective_store,
    make_dicom,
    make_dicom_with_secret,
    make_doc_store,
    make_keyed_store,
    make_npy_tree,
    make_pt_dict,
    make_schema1_store,
    make_store,
    make_tiny_vjepa2,
)
from .s3 import S3_TEST_ENV, local_s3_server, new_bucket

__all__ = [
    "MALFORMED",
    "S3_TEST_ENV",
    "local_s3_server",
    "make_defective_store",
    "make_dicom",
    "make_dicom_with_secret",
    "make_doc_store",
    "make_keyed_store",
    "make_npy_tree",
    "make_pt_dict",
    "make_schema1_store",
    "make_store",
    "make_tiny_vjepa2",
    "new_bucket",
]

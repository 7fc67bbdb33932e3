"""Embedding videos and echo DICOMs with a frozen encoder, straight into a store.

``decode`` (DICOM and video frames), ``preprocess`` (V-JEPA2's frozen-evaluation sampling and
resizing), ``encoders`` (the extractor interface, its registry, V-JEPA2), ``dataset`` (work in
DataLoader workers), ``pipeline`` (:func:`extract`), ``convert`` (:func:`convert_dicom`).
"""

from .convert import ConvertReport, convert_dicom
from .encoders import REGISTRY, Extractor
from .pipeline import ExtractReport, extract, parse_shard
from .preprocess import ClipSpec

__all__ = [
    "REGISTRY",
    "ClipSpec",
    "ConvertReport",
    "ExtractReport",
    "Extractor",
    "convert_dicom",
    "extract",
    "parse_shard",
]

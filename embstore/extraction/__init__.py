"""Embedding videos and echo DICOMs with a frozen encoder, straight into a store.

``config`` (:class:`ExtractConfig`, a run's settings), ``decode`` (DICOM and video frames on the
CPU), ``gpu`` (the GPU decoders and their choice), ``preprocess`` (V-JEPA2's frozen-evaluation
sampling and resizing), ``encoders`` (the extractor interface, its registry, V-JEPA2),
``dataset`` (work in DataLoader workers), ``devices`` (one process per GPU), ``pipeline``
(:func:`extract`), ``convert`` (:func:`convert_dicom`).

Names are imported on first use, so ``embstore.extraction.encoders.REGISTRY`` (the CLI's
``--family`` choices) costs no store or model imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_API: dict[str, tuple[str, str]] = {
    "REGISTRY": (".encoders", "REGISTRY"),
    "Extractor": (".encoders", "Extractor"),
    "ClipSpec": (".preprocess", "ClipSpec"),
    "ConvertReport": (".convert", "ConvertReport"),
    "convert_dicom": (".convert", "convert_dicom"),
    "ExtractConfig": (".config", "ExtractConfig"),
    "ExtractReport": (".pipeline", "ExtractReport"),
    "extract": (".pipeline", "extract"),
}

__all__ = [
    "REGISTRY",
    "ClipSpec",
    "ConvertReport",
    "ExtractConfig",
    "ExtractReport",
    "Extractor",
    "convert_dicom",
    "extract",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:
    from .config import ExtractConfig
    from .convert import ConvertReport, convert_dicom
    from .encoders import REGISTRY, Extractor
    from .pipeline import ExtractReport, extract
    from .preprocess import ClipSpec

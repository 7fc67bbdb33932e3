"""embstore: embeddings in chunked, labelled Zarr stores that plain xarray can read.

The public API is the table ``_API`` below, written once: ``__all__`` is its keys, and each name
is imported from its module on first use (PEP 562), so ``import embstore`` (and the CLI's
``--help``) does not pay for xarray, dask, zarr or torch. The verbs live in private modules whose
names differ from the functions (``embstore._ingest.ingest``), so no function hides a module.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> (module, attribute); attribute ``None`` means the module itself.
_API: dict[str, tuple[str, str | None]] = {
    "inspect": (".inspect", None),  # the module: embstore.inspect.health(ds)
    "run_demo": (".demo", "run_demo"),
    "BadInputError": (".errors", "BadInputError"),
    "DuplicatePathError": (".errors", "DuplicatePathError"),
    "EmbstoreError": (".errors", "EmbstoreError"),
    "SchemaError": (".errors", "SchemaError"),
    "StoreError": (".errors", "StoreError"),
    "StaleVariableError": (".errors", "StaleVariableError"),
    "AggregateReport": ("._aggregate", "AggregateReport"),
    "aggregate": ("._aggregate", "aggregate"),
    "ExportReport": ("._export", "ExportReport"),
    "export": ("._export", "export"),
    "ValidationReport": ("._info", "ValidationReport"),
    "info": ("._info", "info"),
    "validate": ("._info", "validate"),
    "IngestConfig": (".ingest_config", "IngestConfig"),
    "IngestReport": ("._ingest", "IngestReport"),
    "ingest": ("._ingest", "ingest"),
    "NormalizeReport": ("._normalize", "NormalizeReport"),
    "normalize": ("._normalize", "normalize"),
    "normalize_store": ("._normalize", "normalize_store"),
    "LabelReport": ("._label", "LabelReport"),
    "label": ("._label", "label"),
    "neighbors": ("._neighbors", "neighbors"),
    "ImageExtractConfig": (".extraction.image_extract", "ImageExtractConfig"),
    "ImageExtractReport": (".extraction.image_extract", "ImageExtractReport"),
    "extract_images": (".extraction.image_extract", "extract_images"),
    "IndexReport": ("._ann", "IndexReport"),
    "build_index": ("._ann", "build_index"),
    "create_store": (".store.writer", "create_store"),
    "open": (".store.read", "open_store"),  # ``embstore.open(path)``: the one public spelling
    "StoreWriter": (".store.writer", "StoreWriter"),
    "writer": (".store.loop", "writer"),
    "WriterReport": (".store.loop", "WriterReport"),
    "VersionInfo": (".store.history", "VersionInfo"),
    "RestoreReport": (".store.history", "RestoreReport"),
    "GcReport": (".store.history", "GcReport"),
    "log": (".store.history", "log"),
    "tag": (".store.history", "tag"),
    "restore": (".store.history", "restore"),
    "recover": (".store.history", "recover"),
    "RecoverReport": (".store.history", "RecoverReport"),
    "gc": (".store.history", "gc"),
    "UpgradeReport": (".store.migrate", "UpgradeReport"),
    "upgrade": (".store.migrate", "upgrade"),
    "TagInfo": (".store.tags", "TagInfo"),
    "tags": (".store.tags", "tags"),
    "prepare_dataset": (".store.views", "prepare_dataset"),
    "provenance": (".store.views", "provenance"),
    "stale_variables": (".store.variables", "stale_variables"),
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    found = importlib.import_module(module, __name__)
    if "xarray" in sys.modules:  # datasets are about: give them ``ds.emb``
        importlib.import_module(".accessor", __name__)
    value = found if attribute is None else getattr(found, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # what type checkers and IDEs see; tests/test_house.py checks it equals _API
    from . import inspect
    from ._aggregate import AggregateReport, aggregate
    from ._ann import IndexReport, build_index
    from ._export import ExportReport, export
    from ._info import ValidationReport, info, validate
    from ._ingest import IngestReport, ingest
    from ._label import LabelReport, label
    from ._neighbors import neighbors
    from ._normalize import NormalizeReport, normalize, normalize_store
    from .demo import run_demo
    from .errors import (
        BadInputError,
        DuplicatePathError,
        EmbstoreError,
        SchemaError,
        StaleVariableError,
        StoreError,
    )
    from .extraction.image_extract import ImageExtractConfig, ImageExtractReport, extract_images
    from .ingest_config import IngestConfig
    from .store.history import (
        GcReport,
        RecoverReport,
        RestoreReport,
        VersionInfo,
        gc,
        log,
        recover,
        restore,
        tag,
    )
    from .store.loop import WriterReport, writer
    from .store.migrate import UpgradeReport, upgrade
    from .store.read import open_store as open  # noqa: A004
    from .store.tags import TagInfo, tags
    from .store.variables import stale_variables
    from .store.views import prepare_dataset, provenance
    from .store.writer import StoreWriter, create_store

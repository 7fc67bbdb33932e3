"""embstore: embeddings in chunked, labelled Zarr stores that plain xarray can read."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embstore")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

from . import inspect  # noqa: E402 - the module: embstore.inspect.health(ds)
from .demo import run_demo
from .errors import BadInputError, DuplicatePathError, EmbstoreError, SchemaError, StoreError
from .export import ExportReport, export
from .info import ValidationReport, info, validate
from .ingest import IngestReport, ingest
from .normalize import NormalizeReport, normalize, normalize_store
from .store import (
    GcReport,
    RestoreReport,
    StoreWriter,
    VersionInfo,
    create_store,
    gc,
    log,
    open_store,
    restore,
    tag,
    upgrade,
)

open = open_store  # noqa: A001 - ``embstore.open(path)`` is the documented entry point

__all__ = [
    "BadInputError",
    "DuplicatePathError",
    "EmbstoreError",
    "ExportReport",
    "IngestReport",
    "NormalizeReport",
    "SchemaError",
    "StoreError",
    "StoreWriter",
    "tag",
    "VersionInfo",
    "GcReport",
    "RestoreReport",
    "ValidationReport",
    "__version__",
    "create_store",
    "export",
    "gc",
    "info",
    "inspect",
    "ingest",
    "normalize",
    "normalize_store",
    "open",
    "log",
    "open_store",
    "restore",
    "run_demo",
    "upgrade",
    "validate",
]

"""embstore: embeddings in chunked, labelled Zarr stores that plain xarray can read."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embstore")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

from . import (
    accessor,  # noqa: F401 - registers ``ds.emb``
    inspect,  # noqa: E402 - the module: embstore.inspect.health(ds)
)
from .demo import run_demo
from .errors import BadInputError, DuplicatePathError, EmbstoreError, SchemaError, StoreError
from .export import ExportReport, export
from .info import ValidationReport, info, validate
from .ingest import IngestReport, ingest
from .neighbors import neighbors
from .normalize import NormalizeReport, normalize, normalize_store
from .relabel import LabelReport, label
from .store import create_store, open_store, repair
from .views import prepare_dataset, provenance
from .writer import StoreWriter

open = open_store  # noqa: A001 - ``embstore.open(path)`` is the documented entry point

__all__ = [
    "BadInputError",
    "DuplicatePathError",
    "EmbstoreError",
    "ExportReport",
    "IngestReport",
    "LabelReport",
    "NormalizeReport",
    "SchemaError",
    "StoreError",
    "StoreWriter",
    "ValidationReport",
    "__version__",
    "create_store",
    "export",
    "info",
    "inspect",
    "ingest",
    "label",
    "neighbors",
    "normalize",
    "normalize_store",
    "open",
    "open_store",
    "prepare_dataset",
    "provenance",
    "repair",
    "run_demo",
    "validate",
]

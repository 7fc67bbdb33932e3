"""embstore: embeddings in chunked, labelled Zarr stores that plain xarray can read."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embstore")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

from .errors import BadInputError, DuplicatePathError, EmbstoreError, SchemaError, StoreError
from .store import StoreWriter, create_store, open_store

open = open_store  # noqa: A001 - ``embstore.open(path)`` is the documented entry point

__all__ = [
    "BadInputError",
    "DuplicatePathError",
    "EmbstoreError",
    "SchemaError",
    "StoreError",
    "StoreWriter",
    "__version__",
    "create_store",
    "open",
    "open_store",
]

"""embstore: embeddings in chunked, labelled Zarr stores that plain xarray can read.

The public names below are imported on first use (PEP 562), so ``import embstore`` (and the
CLI's ``--help``) does not pay for xarray, dask, zarr or torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("embstore")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

#: public name -> (module, attribute); attribute ``None`` means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "inspect": (".inspect", None),  # the module: embstore.inspect.health(ds)
    "run_demo": (".demo", "run_demo"),
    "BadInputError": (".errors", "BadInputError"),
    "DuplicatePathError": (".errors", "DuplicatePathError"),
    "EmbstoreError": (".errors", "EmbstoreError"),
    "SchemaError": (".errors", "SchemaError"),
    "StoreError": (".errors", "StoreError"),
    "ExportReport": (".export", "ExportReport"),
    "export": (".export", "export"),
    "ValidationReport": (".info", "ValidationReport"),
    "info": (".info", "info"),
    "validate": (".info", "validate"),
    "IngestReport": (".ingest", "IngestReport"),
    "ingest": (".ingest", "ingest"),
    "NormalizeReport": (".normalize", "NormalizeReport"),
    "normalize": (".normalize", "normalize"),
    "normalize_store": (".normalize", "normalize_store"),
    "create_store": (".store", "create_store"),
    "open_store": (".store", "open_store"),
    "open": (".store", "open_store"),  # ``embstore.open(path)`` is the documented entry point
    "StoreWriter": (".store", "StoreWriter"),
    "VersionInfo": (".store", "VersionInfo"),
    "RestoreReport": (".store", "RestoreReport"),
    "GcReport": (".store", "GcReport"),
    "UpgradeReport": (".store", "UpgradeReport"),
    "log": (".store", "log"),
    "tag": (".store", "tag"),
    "restore": (".store", "restore"),
    "gc": (".store", "gc"),
    "upgrade": (".store", "upgrade"),
    "neighbors": (".neighbors", "neighbors"),
    "LabelReport": (".relabel", "LabelReport"),
    "label": (".relabel", "label"),
    "prepare_dataset": (".store.views", "prepare_dataset"),
    "provenance": (".store.views", "provenance"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    found = importlib.import_module(module, __name__)
    if "xarray" in sys.modules:  # datasets are about: give them ``ds.emb``
        importlib.import_module(".accessor", __name__)
    value = found if attribute is None else getattr(found, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``embstore.ingest`` stays the function once the module ``embstore.ingest`` is imported
    (the import system sets the submodule as an attribute of its package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name, ("", None))[1] == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what type checkers and IDEs see
    from . import inspect  # noqa: F401
    from .demo import run_demo  # noqa: F401
    from .errors import BadInputError, DuplicatePathError, EmbstoreError, SchemaError, StoreError  # noqa: F401
    from .export import ExportReport, export  # noqa: F401
    from .info import ValidationReport, info, validate  # noqa: F401
    from .ingest import IngestReport, ingest  # noqa: F401
    from .neighbors import neighbors  # noqa: F401
    from .normalize import NormalizeReport, normalize, normalize_store  # noqa: F401
    from .relabel import LabelReport, label  # noqa: F401
    from .store import (  # noqa: F401
        GcReport,
        RestoreReport,
        StoreWriter,
        UpgradeReport,
        VersionInfo,
        create_store,
        gc,
        log,
        open_store,
        restore,
        tag,
        upgrade,
    )
    from .store import open_store as open  # noqa: A004, F401
    from .store.views import prepare_dataset, provenance  # noqa: F401

"""The store: the only code that knows how bytes are committed.

- :mod:`.layout`: dims, label kinds and their missing values, the chunk policy;
- :mod:`.location`: local folders and ``s3://`` URLs as Icechunk storage;
- :mod:`.repo`: opening a repository, a version's state, damage as one-line errors;
- :mod:`.transaction`: ``with transaction(store) as tx`` -- the only write path;
- :mod:`.writer`: creating stores and appending rows (exactly once) through it;
- :mod:`.variables`: adding or replacing derived variables (normalize...), the inputs they
  record, and why one is stale;
- :mod:`.read`: ``open_store(store, version=...)`` -> :class:`xarray.Dataset`;
- :mod:`.history`: log, tag, restore, gc;
- :mod:`.schema`: the versioned schema in ``schemas/``;
- :mod:`.attachments`: derived arrays kept beside the rows as a version (search indexes);
- :mod:`.label_cache`: labels as codes + dictionary per version, cached outside the store;
- :mod:`.tags`: listing tags.
"""

from .history import GcReport, RestoreReport, VersionInfo, gc, log, parse_age, restore, tag
from .layout import FEATURE, ROOT_ATTR, SAMPLE, TOKEN, choose_row_chunk
from .location import Location, parse_location
from .migrate import UpgradeReport, upgrade
from .read import open_store
from .repo import StoreState, is_store, open_repository, readonly_group
from .transaction import Transaction, run_transaction  # not ``transaction``: it is the module
from .writer import AppendResult, StoreWriter, create_store

__all__ = [
    "FEATURE",
    "ROOT_ATTR",
    "SAMPLE",
    "TOKEN",
    "AppendResult",
    "GcReport",
    "Location",
    "RestoreReport",
    "StoreState",
    "StoreWriter",
    "Transaction",
    "VersionInfo",
    "choose_row_chunk",
    "create_store",
    "gc",
    "is_store",
    "log",
    "open_repository",
    "open_store",
    "parse_age",
    "parse_location",
    "readonly_group",
    "restore",
    "run_transaction",
    "tag",
    "upgrade",
    "UpgradeReport",
]

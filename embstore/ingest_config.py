"""How an ingest is set up: one :class:`IngestConfig` instead of a dozen keywords.

Only the standard library is imported here (the CLI builds it at start-up, before any array
library is loaded). :func:`embstore.ingest` takes it whole (``config=``) or its fields as
keywords; it is checked when it is made, so a wrong setting fails before a source is opened,
and every error names the parameter, never a command-line flag. A parallel ``.pt`` ingest
hands the same config to each worker process (it pickles).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from .errors import BadInputError

if TYPE_CHECKING:
    from .labels import Layout

#: ``on_duplicate`` choices: drop rows whose path is stored, or refuse the batch.
ON_DUPLICATE = ("skip", "error")


@dataclass(frozen=True)
class IngestConfig:
    """Everything an ingest needs besides its sources and its store.

    Parameters
    ----------
    layout, pattern
        How labels are read from each path: ``"babyview"``, ``"mimic-echo"``, or a regex whose
        named groups become labels (``age_mo`` is parsed as an integer).
    labels_csv, labels_key
        A CSV whose ``labels_key`` column holds paths; its other columns become labels.
        Without a layout, pattern or CSV no labels are derived (a warning says so); add them
        later with :func:`embstore.label`.
    categories
        An allow-list (a file with one category per line, ``#`` comments allowed, or the
        names): only rows whose ``category`` label is listed are ingested; the others are
        counted in the report (``outside_categories``).
    skip_bad
        By default the first bad row (unreadable, wrong shape or dtype, a key that breaks the
        path policy, unparseable path, no CSV row) fails the ingest and nothing of its batch
        is committed. With ``skip_bad`` every bad row is skipped and listed in the report and
        the store's provenance.
    on_duplicate
        ``"skip"`` rows whose path is already stored, or ``"error"``.
    model
        The embedding model's name, recorded when the store is created.
    batch_rows
        Rows per commit (default ``store.layout.DEFAULT_BATCH_ROWS``). A crash loses at most
        the batch in flight; re-running the same ingest completes the store with no row lost
        or duplicated.
    row_chunk
        Rows per embedding chunk when the store is created (default: chosen from the first
        commit's size, :func:`embstore.store.layout.row_chunk_for_ingest`).
    jobs
        Processes that load ``.pt`` files at once when every source is a ``.pt`` file
        (unpickling is single-threaded Python; each process commits into the same store under
        its lock). Default 1: a worker costs ~3 s of imports, so this pays off for many files
        on many cores (10 per-folder files on a 16-core node), not for two files on two cores.

    Examples
    --------
    >>> config = IngestConfig(layout="babyview", batch_rows=500)
    >>> config.with_(jobs=4).jobs
    4
    >>> IngestConfig(on_duplicate="keep")
    Traceback (most recent call last):
    embstore.errors.BadInputError: on_duplicate: must be one of skip, error, got 'keep'
    """

    layout: str | Layout | None = None
    pattern: str | None = None
    labels_csv: str | os.PathLike[str] | None = None
    labels_key: str = "path"
    categories: str | os.PathLike[str] | Sequence[str] | None = None
    skip_bad: bool = False
    on_duplicate: str = "skip"
    model: str | None = None
    batch_rows: int | None = None
    row_chunk: int | None = None
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.on_duplicate not in ON_DUPLICATE:
            choices = ", ".join(ON_DUPLICATE)
            raise BadInputError(
                "on_duplicate", f"must be one of {choices}, got {self.on_duplicate!r}"
            )
        for name in ("batch_rows", "row_chunk", "jobs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise BadInputError(name, f"must be a whole number, got {value!r}")
            if value is not None and value < 1:
                raise BadInputError(name, f"must be at least 1, got {value}")

    def with_(self, **changes: Any) -> IngestConfig:
        """A copy with ``changes`` (checked like a new config)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise BadInputError(unknown[0], "is not an ingest setting")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The settings as keywords (what :func:`embstore.ingest` also accepts)."""
        return asdict(self)

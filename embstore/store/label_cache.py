"""Label columns as codes + a small dictionary, built once per version and kept on disk.

Selecting rows by a label (``ds.emb.rows(subject=...)``) used to read and decode the whole
label (zstd + VLenUTF8 + conversion to ``str``: ~0.12 s for 300K rows) in every process and
for every version. A version of a store never changes (its snapshot id names it), so the first
read of a label of a version factorizes it into ``int32`` codes and its distinct values and
writes both under the cache folder, keyed by the version's snapshot id; later reads of that
label of that version, in any process, load ~1.2 MB of codes and a dictionary the size of the
distinct values (~5 ms for 300K rows, 20K subjects). Equality and membership then compare
integers (:func:`~embstore.store.views.label_mask`).

The cache is an optimisation, never a source of truth: a missing, unreadable or mismatched
entry (wrong length) is rebuilt from the store; nothing is written into the store. Where:
``$EMBSTORE_CACHE_DIR`` if set (``off`` disables it), else ``$XDG_CACHE_HOME/embstore`` or
``~/.cache/embstore``; at most :data:`MAX_VERSIONS` versions are kept (least recently used go).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Versions (snapshot folders) kept in the cache; the least recently used beyond go.
MAX_VERSIONS = 128
#: Separator of the dictionary's values on disk (row keys and labels never hold NUL).
_SEP = "\x00"


def cache_root() -> Path | None:
    """The cache folder, or ``None`` when ``EMBSTORE_CACHE_DIR=off``."""
    given = os.environ.get("EMBSTORE_CACHE_DIR")
    if given is not None:
        return None if given.strip().lower() in ("off", "0", "") else Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embstore"


class Factorized:
    """A label as ``codes`` (``int32``, -1 never occurs) into ``uniques`` (``object`` of
    ``str`` for strings, the values' dtype otherwise)."""

    def __init__(self, codes: np.ndarray, uniques: np.ndarray) -> None:
        self.codes, self.uniques = codes, uniques
        self._lookup: pd.Index | None = None

    @classmethod
    def of(cls, values: np.ndarray) -> Factorized:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        return cls(codes.astype(np.int32, copy=False), np.asarray(uniques, dtype=values.dtype))

    def values(self) -> np.ndarray:
        """The label's values (one ``take``; strings stay shared Python objects)."""
        return self.uniques.take(self.codes)

    def positions(self, wanted: np.ndarray) -> np.ndarray:
        """Codes of the ``wanted`` values that occur (absent values are dropped)."""
        if self._lookup is None:
            self._lookup = pd.Index(self.uniques, dtype=self.uniques.dtype, copy=False)
        found = self._lookup.get_indexer(pd.Index(wanted, dtype=self.uniques.dtype))
        return found[found >= 0].astype(np.int32)


def _entry(snapshot: str, name: str) -> Path | None:
    root = cache_root()
    if root is None or not snapshot.isalnum() or not name.isidentifier():
        return None
    return root / "labels" / snapshot / name


def load(snapshot: str, name: str, rows: int) -> Factorized | None:
    """The cached factorization of label ``name`` of version ``snapshot``, or ``None``."""
    entry = _entry(snapshot, name)
    if entry is None or not (entry / "codes.npy").exists():
        return None
    try:
        codes = np.load(entry / "codes.npy", allow_pickle=False)
        kind = (entry / "kind").read_text()
        if kind == "str":
            text = (entry / "uniques.txt").read_bytes().decode("utf-8")
            uniques = np.array(text.split(_SEP) if text or len(codes) else [], dtype=object)
        else:
            uniques = np.load(entry / "uniques.npy", allow_pickle=False)
        ok = codes.shape == (rows,) and (rows == 0 or int(codes.max()) < len(uniques))
        if not ok:
            log.warning("label cache %s does not match the store; rebuilding it", entry)
            return None
        os.utime(entry.parent)  # recently used
        return Factorized(codes, uniques)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("label cache %s unreadable (%s); rebuilding it", entry, exc)
        return None


def save(snapshot: str, name: str, factorized: Factorized) -> None:
    """Keep ``factorized`` for later reads (best effort: a failure only logs)."""
    entry = _entry(snapshot, name)
    if entry is None:
        return
    uniques = factorized.uniques
    strings = uniques.dtype == object
    if strings and any(_SEP in u or not isinstance(u, str) for u in uniques):
        return  # not representable as NUL-separated text; read from the store each time
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{name}-"))
        np.save(tmp / "codes.npy", factorized.codes)
        if strings:
            (tmp / "uniques.txt").write_bytes(_SEP.join(uniques.tolist()).encode("utf-8"))
        else:
            np.save(tmp / "uniques.npy", uniques)
        (tmp / "kind").write_text("str" if strings else "array")
        try:
            tmp.rename(entry)  # atomic; a concurrent reader sees all of it or nothing
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process got there first
        _prune(entry.parent.parent)
    except OSError as exc:
        log.warning("cannot write the label cache under %s (%s)", entry.parent, exc)


def _prune(labels: Path) -> None:
    versions = sorted(labels.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in versions[: max(0, len(versions) - MAX_VERSIONS)]:
        shutil.rmtree(old, ignore_errors=True)

"""``.pt`` dict files ``{relative_path: tensor[D]}``, as the V-JEPA2 extraction scripts write."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..torchzip import VectorDict, read_vector_dict
from . import BadRow, SourceBatch, stack


class PtDictSource:
    """One ``.pt`` dict file; rows in sorted key order."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        self.name = str(self.file)
        self._data: VectorDict | None = None

    @property
    def data(self) -> VectorDict:
        if self._data is None:
            self._data = read_vector_dict(self.file)
        return self._data

    def __len__(self) -> int:
        return len(self.data)

    def locate(self, path: str) -> str:
        return f"{self.file}[{path!r}]"

    def batches(
        self, *, batch_rows: int, feature_size: int | None, skip: Callable[[str], bool]
    ) -> Iterator[SourceBatch]:
        data = self.data
        bad_keys = [BadRow(self.locate(k), "key is not a string") for k in data.other_keys]
        keys, feature_size = data.keys, feature_size or data.feature_size()
        problems = data.problems(feature_size)
        for start in range(0, len(keys), batch_rows):
            stop = min(start + batch_rows, len(keys))
            kept = [i for i in range(start, stop) if not skip(keys[i])]
            bad = [BadRow(self.locate(keys[i]), problems[i]) for i in kept if i in problems]
            good = [i for i in kept if i not in problems] if bad else kept
            vectors = data.rows(good, feature_size) if good else stack([], feature_size)
            paths = [keys[i] for i in good]
            yield SourceBatch(
                paths,
                vectors,
                bad=(bad_keys if start == 0 else []) + bad,
                skipped=stop - start - len(kept),
            )
        if not keys and bad_keys:
            yield SourceBatch([], stack([], feature_size), bad=bad_keys)
        self._data = None  # one dict in memory at a time, however many files are ingested

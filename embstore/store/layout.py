"""What a store holds: dimensions, label kinds and their missing values, the chunk policy.

Everything here is pure: no I/O, so every other part of :mod:`embstore.store` and the verbs
share one definition of each concept.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from zarr.codecs import Crc32cCodec, ZstdCodec

from ..labels import INTEGER_LABELS, MISSING_AGE, MISSING_STR

#: Root group attribute holding embstore's own metadata (schema version, rows, provenance...).
ROOT_ATTR = "embstore"
SAMPLE, FEATURE, TOKEN = "sample", "feature", "token"
#: The branch every version of a store lives on.
BRANCH = "main"

#: Rows per chunk of every 1-D (label) array: large, so opening and loading labels is fast
#: (NOTES.md: 100K-row string chunks open 15x faster than 1K-row ones).
COORD_CHUNK = 131072
#: Target bytes per chunk of an embedding matrix (the whole feature axis per chunk).
TARGET_CHUNK_BYTES = 16 * 2**20
#: Embedding matrices are stored uncompressed: float32 embeddings shrink by only ~7% under
#: zstd or blosc+shuffle (measured on 768-d data), while compression made writes 2-4x and
#: reads 2-6x slower. Labels keep zarr's default zstd (paths compress well). Every array of a
#: new store carries a crc32c checksum per chunk, verified on every read (zarr v3's standard
#: codec), so same-size corruption or a truncated chunk is an error, never silently wrong data.
MATRIX_COMPRESSORS: tuple[Any, ...] = (Crc32cCodec(),)
#: Codecs of every label array: zarr's default zstd, then the checksum of the compressed bytes
#: (so a garbled chunk is named as such, never handed to the decompressor).
LABEL_COMPRESSORS: tuple[Any, ...] = (ZstdCodec(level=0), Crc32cCodec())
#: Rows committed together by ``ingest`` when not told (8 chunks of 4096 rows; ~100 MB of
#: 768-d float32).
DEFAULT_BATCH_ROWS = 32768

#: Variables beyond the embedding that rows may carry, and their dimensions.
EXTRA_DIMS: Mapping[str, tuple[str, ...]] = {"tokens": (SAMPLE, TOKEN, FEATURE)}

#: kind -> (zarr dtype, fill value = the missing value of that kind)
LABEL_KINDS: Mapping[str, tuple[Any, Any]] = {
    "string": (str, MISSING_STR),
    "int": ("int32", MISSING_AGE),
    "bool": ("bool", False),
}


def now() -> str:
    """Current UTC time as an ISO 8601 string (what provenance records)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def label_kind(name: str) -> str:
    """The kind of a label column by its name (``age_mo`` is an integer, others strings)."""
    return "int" if name in INTEGER_LABELS else "string"


def choose_row_chunk(feature_size: int, *, itemsize: int = 4) -> int:
    """Rows per embedding chunk: a power of two giving ~8-16 MiB chunks, at most COORD_CHUNK.

    A whole-feature-axis chunk of this many rows is what every workload here reads: row
    selections (one subject), column statistics (normalize) and row exports. A power of two
    divides :data:`COORD_CHUNK`, so label and embedding chunk edges line up, and an ingest
    batch that is a multiple of it never rewrites a partial chunk.

    >>> choose_row_chunk(768), choose_row_chunk(1024), choose_row_chunk(8)
    (4096, 4096, 131072)
    """
    rows = max(1, TARGET_CHUNK_BYTES // (feature_size * itemsize))
    return min(COORD_CHUNK, 1 << (rows.bit_length() - 1))


def row_chunk_for_commits(feature_size: int, rows_per_commit: int) -> int:
    """Rows per embedding chunk for a store that grows by ``rows_per_commit`` rows a commit.

    Every version keeps the chunks it wrote, so a commit that rewrites a partly filled chunk
    leaves the old copy behind until ``gc``: 16 commits of 256 rows into one 4,096-row chunk
    write it 16 times. A chunk no larger than a commit (a power of two, so label and
    embedding chunk edges still line up) is written once.

    >>> row_chunk_for_commits(1024, 256), row_chunk_for_commits(1024, 100_000)
    (256, 4096)
    """
    per_commit = 1 << (max(1, rows_per_commit).bit_length() - 1)
    return min(choose_row_chunk(feature_size), per_commit)


def dims_of(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """Dimension names of an array's metadata document."""
    return tuple(meta.get("dimension_names") or ())


#: The smallest row chunk ingest chooses from a small first commit (1 MiB of 1024-d float32).
MIN_INGEST_ROW_CHUNK = 256


def row_chunk_for_ingest(feature_size: int, first_commit_rows: int) -> int:
    """Rows per embedding chunk of a store an ingest creates with a first commit of
    ``first_commit_rows`` rows: whole chunks per commit (see :func:`row_chunk_for_commits`),
    at least :data:`MIN_INGEST_ROW_CHUNK` rows so that reads stay fast.

    >>> [row_chunk_for_ingest(d, n) for d, n in ((768, 500), (1024, 32768), (16, 8))]
    [256, 4096, 256]
    """
    floor = min(choose_row_chunk(feature_size), MIN_INGEST_ROW_CHUNK)
    return max(floor, row_chunk_for_commits(feature_size, first_commit_rows))

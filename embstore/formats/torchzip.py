"""Read torch's zip ``.pt`` files of ``{key: 1-D tensor}`` fast and safely, as float32 rows.

``torch.load(weights_only=True)`` of a 51,000 x 1024 dict spends ~3 s of CPU building 51,000
tensors through a Python-level unpickler (measured on 2 cores; this module takes ~0.6 s).
For the dicts that embedding extraction writes, this module instead

* checks that the archive is laid out as ``torch.save`` writes it (one folder, uncompressed
  records, no gaps or overlaps; checked on the mapped archive with numpy, not per record);
* unpickles ``data.pkl`` with a :class:`pickle.Unpickler` whose ``find_class`` resolves only
  the tensor-rebuild function, ``collections.OrderedDict`` and the four floating-point storage
  types, so no tensor (nor any other object) is built, only a small record per tensor, each
  checked against its storage's bounds;
* reads the rows in blocks, one ``pread`` per block, and copies each run of evenly spaced
  tensors into the float32 matrix with one numpy assignment.

Whatever this path does not handle (other globals that ``weights_only`` allows, other dtypes,
big-endian data, compressed members, the legacy non-zip format) is read by
``torch.load(weights_only=True)`` instead, into the same :class:`VectorDict`. A global that
``weights_only`` never allows (``os.system``, ``builtins.eval``, ...) is refused outright.
Either way an unreadable or refused file raises one :class:`~embstore.errors.BadInputError`
naming it.

One known difference: torch's own unpickler implements fewer opcodes than CPython's, so a
damaged pickle using, say, ``BINSTRING`` is read here where torch refuses it. Both resolve
globals through the same narrow gate, so this is never a way to run code.
"""

from __future__ import annotations

import contextlib
import gc
import io
import mmap
import os
import pickle
import re
import struct
import weakref
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, first_line

#: Storage types read natively: name -> numpy dtype of the raw bytes.
_STORAGES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # bfloat16: the upper half of a float32
}
_CODES = {name: code for code, name in enumerate(_STORAGES)}
_NUMPY = list(_STORAGES.values())
_BF16 = _CODES["BFloat16Storage"]
#: Globals outside ``torch`` that ``torch.load(weights_only=True)`` may resolve.
_WEIGHTS_ONLY_EXTRA = {
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "complex"),
}


#: ``version`` records that torch writes today and reads.
_VERSIONS = {b"1\n", b"2\n", b"3\n", b"1", b"2", b"3"}


class _Unusual(Exception):
    """The file is outside what the fast path reads; ``torch.load`` reads it instead."""


class _Refused(Exception):
    """The pickle asks for a global that ``weights_only=True`` never allows."""


class _StorageType:
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_STORAGE_TYPES = {name: _StorageType(code) for name, code in _CODES.items()}


class _Storage:
    __slots__ = ("code", "numel", "start")

    def __init__(self, code: int, numel: int, start: int) -> None:
        self.code, self.numel, self.start = code, numel, start


class _Tensor:
    """What ``_rebuild_tensor_v2`` would have built: a strided view of a storage."""

    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class _RecordUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` into plain containers holding :class:`_Tensor` records."""

    def __init__(self, data: bytes, members: dict[str, tuple[int, int]]) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.members = members  # storage key -> (data start in the archive, bytes)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 names Python 2 modules (``__builtin__``); map them as pickle and torch do
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        else:
            module = IMPORT_MAPPING.get(module, module)
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self.rebuild
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if (
            module == "torch"
            or module.startswith("torch.")
            or (module, name) in _WEIGHTS_ONLY_EXTRA
        ):
            raise _Unusual(f"{module}.{name}")
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            type(pid) is tuple
            and len(pid) == 5
            and pid[0] == "storage"
            and type(pid[1]) is _StorageType
            and type(pid[2]) is str
            and type(pid[4]) is int
        ):
            raise _Unusual("persistent id")
        key = pid[2]
        storage = self.storages.get(key)  # torch, too, reuses the first load of a key
        if storage is None:
            if key not in self.members:
                raise _Unusual(f"no record data/{key}")
            start, size = self.members[key]
            code, numel = pid[1].code, pid[4]
            if numel < 0 or numel * _NUMPY[code].itemsize > size:
                raise _Unusual(f"record data/{key} is shorter than its storage")
            storage = self.storages[key] = _Storage(code, numel, start)
        return storage

    @staticmethod
    def rebuild(
        storage: Any,
        offset: Any,
        shape: Any,
        stride: Any,
        requires_grad: Any,
        hooks: Any,
        metadata: Any = None,
    ) -> _Tensor:
        if not (
            type(storage) is _Storage
            and type(offset) is int
            and offset >= 0
            and type(shape) is tuple
            and type(stride) is tuple
            and len(shape) == len(stride)
            and type(requires_grad) is bool
            and type(hooks) is OrderedDict
            and not hooks
            and metadata is None
        ):
            raise _Unusual("tensor record")
        if len(shape) == 1:  # the common case, checked without generators
            n, s = shape[0], stride[0]
            if type(n) is int and type(s) is int and n >= 0 and s >= 0:
                if n == 0 or offset + s * (n - 1) < storage.numel:
                    return _Tensor(storage, offset, shape, stride)
                raise _Unusual("tensor reaches past its storage")
        if not all(type(n) is int and n >= 0 for n in shape + stride):
            raise _Unusual("tensor record")
        if 0 not in shape:
            last = offset + sum(s * (n - 1) for n, s in zip(shape, stride, strict=True))
            if last >= storage.numel:
                raise _Unusual("tensor reaches past its storage")
        return _Tensor(storage, offset, shape, stride)


class VectorDict:
    """The string keys of a ``{key: tensor}`` file, sorted, and their vectors as float32 rows.

    Parameters
    ----------
    keys
        The string keys, sorted.
    other_keys
        Keys that are not strings (never rows).
    lengths
        Per key, the vector's length, or 0 where the value is not a usable vector.
    problems
        Per key position, why the value is not a vector whatever the feature size.
    gather
        ``gather(positions, d)`` -> ``(len(positions), d)`` float32 rows of good positions.
    """

    def __init__(
        self,
        keys: list[str],
        other_keys: list[Any],
        lengths: np.ndarray,
        problems: dict[int, str],
        gather: Callable[[np.ndarray, int], np.ndarray],
    ) -> None:
        self.keys, self.other_keys, self._gather = keys, other_keys, gather
        self._lengths, self._problems = lengths, problems

    def __len__(self) -> int:
        return len(self.keys) + len(self.other_keys)

    def feature_size(self) -> int | None:
        """The length of the first (in key order) vector, or ``None`` if there is none."""
        ok = np.flatnonzero(self._lengths > 0)
        return int(self._lengths[ok[0]]) if len(ok) else None

    def problems(self, feature_size: int | None) -> dict[int, str]:
        """Per position in :attr:`keys`, why its value cannot be a ``feature_size``-d row."""
        found = dict(self._problems)
        if feature_size is not None:
            for i in np.flatnonzero((self._lengths > 0) & (self._lengths != feature_size)):
                found[int(i)] = (
                    f"vector has {self._lengths[i]} values, the store holds "
                    f"{feature_size}-d vectors"
                )
        return found

    def rows(self, positions: Sequence[int] | np.ndarray, feature_size: int) -> np.ndarray:
        """The float32 rows of ``positions`` (ascending, all free of problems)."""
        return self._gather(np.asarray(positions, dtype=np.int64), feature_size)


def read_vector_dict(file: str | os.PathLike[str]) -> VectorDict:
    """Read a ``.pt`` file holding a ``{key: 1-D tensor}`` dict.

    Loads nothing that ``torch.load(weights_only=True)`` would refuse, and gives the same
    values as ``torch.load`` (converted to float32).

    Raises
    ------
    BadInputError
        The file is not a readable ``.pt`` file, is not a dict, or asks for code to run.
    """
    file = Path(file)
    try:
        return _read_fast(file)
    except _Refused as exc:
        msg = f"refused: loading it would run arbitrary code (the pickle asks for {exc})"
        raise BadInputError(str(file), msg) from None
    except _Unusual:
        return _read_with_torch(file)


def _read_fast(file: Path) -> VectorDict:
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError as exc:
        raise BadInputError(str(file), f"cannot read: {exc.strerror or exc}") from None
    try:
        try:
            archive = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # an empty file cannot be mapped
            raise _Unusual("empty file") from exc
        obj, members = _parse(file, archive)
        if not isinstance(obj, dict):
            msg = f"expected a dict {{path: tensor}}, got {type(obj).__name__}"
            raise BadInputError(str(file), msg)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            archive.madvise(mmap.MADV_DONTNEED)  # rows are read with pread: drop the mapping
        keys, other_keys, lengths, problems, rows = _vector_dict(obj)
        gather = _ArchiveGather(str(file), fd, archive, *rows)
    except BaseException:
        os.close(fd)
        raise
    return VectorDict(keys, other_keys, lengths, problems, gather)


def _parse(file: Path, archive: mmap.mmap) -> tuple[Any, dict[str, tuple[int, int]]]:
    """The unpickled ``data.pkl`` (tensors as records) and the storage records it uses."""
    try:
        with zipfile.ZipFile(file) as zf:
            infos = zf.infolist()
            starts = _check_layout(archive, infos)
            data = _read_records(zf, infos)
    except (_Unusual, _Refused, BadInputError):
        raise
    except Exception as exc:  # zipfile raises many types on a broken archive
        raise _Unusual("unreadable archive") from exc
    prefix = infos[0].filename.split("/", 1)[0] + "/"
    members = {
        i.filename[len(prefix) + 5 :]: (start, i.file_size)
        for i, start in zip(infos, starts, strict=True)
        if i.filename.startswith(prefix + "data/")
    }
    collecting = gc.isenabled()
    gc.disable()  # unpickling makes ~3 objects per tensor, none of them cyclic garbage
    try:
        return _RecordUnpickler(data, members).load(), members
    except (_Unusual, _Refused):
        raise
    except Exception as exc:  # a broken pickle: torch.load says what is wrong with it
        raise _Unusual("pickle") from exc
    finally:
        if collecting:
            gc.enable()


def _check_layout(archive: mmap.mmap, infos: list[zipfile.ZipInfo]) -> list[int]:
    """Where each record's bytes start, if the archive is laid out as ``torch.save`` does it.

    Anything else (a comment, several disks, compressed or encrypted records, gaps, overlaps,
    names outside one folder) goes to ``torch.load``, whose zip reader is stricter than
    :mod:`zipfile` and decides what to make of it.
    """
    size = len(archive)
    if size < 22 or archive[size - 22 : size - 18] != b"PK\x05\x06":
        raise _Unusual("no end of central directory at the end")
    disk, cd_disk, on_disk, total, cd_size, cd_offset, comment = struct.unpack(
        "<HHHHIIH", archive[size - 18 : size]
    )
    end = size - 22
    if size >= 42 and archive[size - 42 : size - 38] == b"PK\x06\x07":  # zip64, as torch writes
        end = struct.unpack("<Q", archive[size - 34 : size - 26])[0]
        if end + 56 > size - 42 or archive[end : end + 4] != b"PK\x06\x06":
            raise _Unusual("bad zip64 end record")
        disk, cd_disk, on_disk, total, cd_size, cd_offset = struct.unpack(
            "<IIQQQQ", archive[end + 16 : end + 56]
        )
    if (disk, cd_disk, comment) != (0, 0, 0) or not on_disk == total == len(infos) > 0:
        raise _Unusual("several disks, a comment, or a wrong record count")
    # each central record's name, extra and comment lengths, as read and as written
    lengths = np.array(
        [(len(i.orig_filename), len(i.extra), len(i.comment)) for i in infos], dtype=np.int64
    ).reshape(-1, 3)
    entry = cd_offset + np.concatenate([[0], np.cumsum(46 + lengths.sum(axis=1))])
    if cd_offset + cd_size != end or entry[-1] != end:
        raise _Unusual("central directory out of place")
    raw = np.frombuffer(archive, dtype=np.uint8)
    for k in range(3):
        at = entry[:-1] + 28 + 2 * k
        if ((raw[at].astype(np.int64) | raw[at + 1].astype(np.int64) << 8) != lengths[:, k]).any():
            raise _Unusual("central directory lengths disagree")
    names = [i.filename for i in infos]
    if any(i.orig_filename != i.filename or i.external_attr & 0x10 for i in infos):
        raise _Unusual("a name with a NUL byte, or a folder record")  # as miniz sees them
    prefix = names[0].split("/", 1)[0] + "/"
    if (
        "/" not in names[0]
        or not all(n.startswith(prefix) and n.isascii() for n in names)
        or len({n.lower() for n in names}) != len(names)
        or prefix + "data.pkl" not in names
    ):
        raise _Unusual("unexpected record names")
    fields = np.array(
        [
            (i.header_offset, i.compress_size, i.file_size, i.compress_type, i.flag_bits, i.volume)
            for i in infos
        ],
        dtype=np.int64,
    )
    header, packed, unpacked, method, flags, volume = fields.T
    if (method != 0).any() or (packed != unpacked).any() or (flags & ~0x0808).any():
        raise _Unusual("compressed, encrypted or flagged records")
    if (volume != 0).any() or header[0] != 0 or (header < 0).any() or (header + 30 > end).any():
        raise _Unusual("records out of place")
    for k, byte in enumerate(b"PK\x03\x04"):
        if (raw[header + k] != byte).any():
            raise _Unusual("bad local header")
    name_len = raw[header + 26].astype(np.int64) | raw[header + 27].astype(np.int64) << 8
    extra_len = raw[header + 28].astype(np.int64) | raw[header + 29].astype(np.int64) << 8
    start = header + 30 + name_len + extra_len
    order = np.argsort(header)
    stop = (start + packed)[order]
    if stop[-1] > cd_offset or (stop[:-1] > header[order][1:]).any():
        raise _Unusual("records overlap")
    return start.tolist()


def _read_records(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> bytes:
    """``data.pkl``, after checking the small records that ``torch.load`` reads too."""
    prefix = infos[0].filename.split("/", 1)[0] + "/"
    names = {i.filename for i in infos}

    def record(name: str) -> bytes | None:
        return zf.read(prefix + name) if prefix + name in names else None

    version = record(".data/version") or record("version")
    if version not in _VERSIONS:
        raise _Unusual("unknown format version")
    if record("byteorder") not in (None, b"little"):
        raise _Unusual("not little-endian")
    alignment = record(".storage_alignment")
    if alignment is not None and not alignment.isdigit():
        raise _Unusual("bad storage alignment")
    record(".format_version")
    serialization_id = record(".data/serialization_id")
    if serialization_id is not None:
        serialization_id.decode("utf-8")
    return zf.read(prefix + "data.pkl")


def _vector_dict(obj: dict) -> tuple:
    """Sorted string keys, and per key its vector's length, position and dtype or a problem."""
    other_keys = [k for k in obj if not isinstance(k, str)]
    keys = sorted(k for k in obj if isinstance(k, str))
    n = len(keys)
    lengths = np.zeros(n, dtype=np.int64)
    start = np.zeros(n, dtype=np.int64)
    step = np.zeros(n, dtype=np.int64)
    code = np.zeros(n, dtype=np.int8)
    problems: dict[int, str] = {}
    for i, key in enumerate(keys):
        value = obj[key]
        if type(value) is not _Tensor:
            problems[i] = f"value is a {type(value).__name__}, not a tensor"
        elif len(value.shape) != 1:
            problems[i] = f"expected a 1-D vector, got shape {value.shape}"
        elif value.shape[0] == 0:
            problems[i] = "empty vector"
        else:
            storage = value.storage
            itemsize = _NUMPY[storage.code].itemsize
            lengths[i] = value.shape[0]
            start[i] = storage.start + value.offset * itemsize
            step[i] = value.stride[0] * itemsize
            code[i] = storage.code
    return keys, other_keys, lengths, problems, (start, step, code)


class _ArchiveGather:
    """Copies rows out of the archive, one numpy assignment per run of evenly spaced rows.

    Rows are read in blocks: each block's byte span is read with one ``pread`` when it is
    compact (the common case: rows stored in key order), else the rows are copied from the
    mapping. Either way numpy checks that every view stays inside what was read.
    """

    BLOCK_ROWS = 4096
    MAX_SPAN = 64 << 20

    def __init__(
        self,
        name: str,
        fd: int,
        archive: mmap.mmap,
        start: np.ndarray,
        step: np.ndarray,
        code: np.ndarray,
    ) -> None:
        self.name, self.fd, self.archive = name, fd, archive
        self.start, self.step, self.code = start, step, code
        weakref.finalize(self, os.close, fd)

    def __call__(self, positions: np.ndarray, d: int) -> np.ndarray:
        out = np.empty((len(positions), d), dtype=np.float32)
        for a in range(0, len(positions), self.BLOCK_ROWS):
            block = positions[a : a + self.BLOCK_ROWS]
            self._block(out[a : a + len(block)], block, d)
        return out

    def _block(self, out: np.ndarray, positions: np.ndarray, d: int) -> None:
        start, step, code = self.start[positions], self.step[positions], self.code[positions]
        lo = int(start.min())
        hi = int((start + step * (d - 1)).max()) + _NUMPY[int(code.max())].itemsize
        if hi - lo <= self.MAX_SPAN:
            buffer: Any = bytearray(hi - lo)
            if os.preadv(self.fd, [buffer], lo) != len(buffer):
                raise BadInputError(self.name, "the file changed while it was read")
            start = start - lo
        else:
            buffer = self.archive
        if (step == step[0]).all() and (code == code[0]).all():
            spacing = np.diff(start)
            # runs of equal spacing; neighbouring runs share their boundary row
            cuts = np.flatnonzero(spacing[1:] != spacing[:-1]) + 1
            for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(spacing)], strict=True):
                gap = int(spacing[a]) if len(spacing) else 0
                _copy(out[a : b + 1], buffer, int(start[a]), gap, int(step[0]), int(code[0]))
        else:
            for i in range(len(positions)):
                _copy(out[i : i + 1], buffer, int(start[i]), 0, int(step[i]), int(code[i]))


def _copy(rows: np.ndarray, buffer: Any, first: int, gap: int, step: int, code: int) -> None:
    """Fill ``rows`` from ``buffer``: row ``i`` at ``first + i * gap``, items ``step`` apart."""
    if gap < 0:  # rows run backwards through the archive: read them forwards
        first, gap, rows = first + gap * (len(rows) - 1), -gap, rows[::-1]
    view = np.ndarray(
        rows.shape, dtype=_NUMPY[code], buffer=buffer, offset=first, strides=(gap, step)
    )
    if code == _BF16:
        rows[...] = (view.astype(np.uint32) << 16).view(np.float32)
    else:
        rows[...] = view


def _read_with_torch(file: Path) -> VectorDict:
    """``torch.load(weights_only=True)``, then the same :class:`VectorDict`."""
    import torch

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message opens with advice; the reason is on its "WeightsUnpickler error" line
        reason = re.search(r"Unpickler error:\s*(.+)", str(exc))
        first = reason.group(1) if reason else (str(exc).strip() or type(exc).__name__)
        msg = f"refused by torch.load(weights_only=True): {first.splitlines()[0].split('. ')[0]}"
        raise BadInputError(str(file), msg) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types on a broken archive
        raise BadInputError(str(file), f"unreadable .pt file ({first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise BadInputError(
            str(file), f"expected a dict {{path: tensor}}, got {type(obj).__name__}"
        )
    other_keys = [k for k in obj if not isinstance(k, str)]
    keys = sorted(k for k in obj if isinstance(k, str))
    lengths = np.zeros(len(keys), dtype=np.int64)
    problems: dict[int, str] = {}
    for i, key in enumerate(keys):
        value = obj[key]
        if not isinstance(value, torch.Tensor):
            problems[i] = f"value is a {type(value).__name__}, not a tensor"
        elif value.layout != torch.strided:
            problems[i] = f"a {value.layout} tensor; only dense (strided) tensors are read"
        elif not value.dtype.is_floating_point:
            problems[i] = f"dtype {value.dtype} is not a floating-point type"
        elif value.ndim != 1:
            problems[i] = f"expected a 1-D vector, got shape {tuple(value.shape)}"
        elif value.shape[0] == 0:
            problems[i] = "empty vector"
        else:
            lengths[i] = value.shape[0]

    def gather(positions: np.ndarray, d: int) -> np.ndarray:
        if not len(positions):
            return np.empty((0, d), dtype=np.float32)
        tensors = [obj[keys[i]] for i in positions.tolist()]
        return torch.stack(tensors).detach().to(torch.float32).resolve_neg().numpy()

    return VectorDict(keys, other_keys, lengths, problems, gather)

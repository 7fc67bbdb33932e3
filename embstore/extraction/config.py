"""How an extraction run is set up: one :class:`ExtractConfig` instead of two dozen keywords.

Only the standard library is imported here (the CLI reads the choices at start-up). The CLI
builds it from its flags, :func:`embstore.extraction.extract` runs it, and the store
records it in the run's provenance entry (:meth:`ExtractConfig.record`). It is checked when it
is made, so a wrong setting fails before a model is loaded or an input read; every error names
the parameter (``num_frames``, ``shard``...), never a command-line flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import BadInputError

#: Frame sampling and resizing rules (:mod:`embstore.extraction.preprocess`).
SAMPLINGS = ("upstream", "centered")
RESIZES = ("upstream", "antialias")

DEFAULT_MAX_SIZE = 100_000_000_000  # bytes (100 GB)
#: ``dtype`` choices: ``auto`` is float32 on CPU and bfloat16 weights on CUDA;
#: ``bfloat16-autocast`` is float32 weights under bf16 autocast (what earlier runs used on CUDA).
DTYPES = ("auto", "float32", "bfloat16", "float16", "bfloat16-autocast")
#: ``decoder`` choices: ``auto`` is ``gpu`` on CUDA when its libraries are installed, else ``cpu``.
DECODERS = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything an extraction run needs besides its input folder and its store.

    Parameters
    ----------
    checkpoint
        An original V-JEPA2 ``.pt`` checkpoint, or a local Hugging Face folder.
    family
        The extractor family: a name in :data:`embstore.extraction.encoders.REGISTRY`.
    model
        A preset (``vitl``, ``vith``, ``vitg``, ``vitg-384``) or a config JSON; optional for a
        Hugging Face folder.
    checkpoint_key
        ``target_encoder`` (the frozen evaluations' choice) or ``encoder``.
    num_frames, frame_step, clips, sampling, resize
        Frames per clip, the step between them, clips per video (averaged) and the
        preprocessing rules (:mod:`embstore.extraction.preprocess`).
    pool
        ``mean`` (only the pooled ``embedding``), ``grid:T,H,W`` or ``none`` (also ``tokens``).
    max_size, confirm
        Tokens projected above ``max_size`` bytes are refused unless ``confirm``.
    layout, dicom_tags
        Labels from paths (a layout name) and the allow-listed DICOM header keywords.
    limit, shard
        At most ``limit`` inputs; ``shard=(i, n)`` keeps the inputs of shard ``i`` of ``n``.
    device, devices
        ``cuda``/``cpu`` (default: CUDA when present); ``devices`` lists CUDA device indices,
        one process each, filling one store (each takes a shard of this run's inputs).
    dtype, compile
        The encoder's weights' dtype (:data:`DTYPES`) and whether to ``torch.compile`` it.
    decoder
        Where frames are decoded (:data:`DECODERS`).
    batch_size, num_workers, commit_every, in_flight
        Videos per batch, DataLoader workers (capped to the CPUs available), videos per
        commit, and batches on the device (and commits queued) at once.
    family_options
        Settings only one family understands, passed to its factory.
    """

    checkpoint: str
    family: str = "vjepa2"
    model: str | None = None
    checkpoint_key: str = "target_encoder"
    num_frames: int = 16
    frame_step: int = 4
    clips: int = 1
    sampling: str = "upstream"
    resize: str = "upstream"
    pool: str = "mean"
    max_size: int = DEFAULT_MAX_SIZE
    confirm: bool = False
    layout: str | None = None
    dicom_tags: tuple[str, ...] = ()
    limit: int | None = None
    shard: tuple[int, int] | None = None
    device: str | None = None
    devices: tuple[int, ...] = ()
    dtype: str = "auto"
    compile: bool = False
    decoder: str = "auto"
    batch_size: int = 8
    num_workers: int = 4
    commit_every: int = 256
    in_flight: int = 2
    family_options: dict[str, Any] = field(default_factory=dict)  # settings of one family

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        object.__setattr__(self, "dicom_tags", tuple(self.dicom_tags))
        object.__setattr__(self, "devices", tuple(int(d) for d in self.devices))
        if self.shard is not None:
            object.__setattr__(self, "shard", tuple(self.shard))
        for name in ("num_frames", "frame_step", "clips", "batch_size", "commit_every"):
            _at_least(name, getattr(self, name), 1)
        _at_least("in_flight", self.in_flight, 1)
        _at_least("num_workers", self.num_workers, 0)
        _at_least("max_size", self.max_size, 0)
        if self.limit is not None:
            _at_least("limit", self.limit, 1)
        _one_of("sampling", self.sampling, SAMPLINGS)
        _one_of("resize", self.resize, RESIZES)
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("decoder", self.decoder, DECODERS)
        self._check_shard()
        if len(set(self.devices)) != len(self.devices) or any(d < 0 for d in self.devices):
            raise BadInputError("devices", f"expected distinct device indices, got {self.devices}")
        from .pipeline import parse_pool  # the pool grammar lives with the pooling

        parse_pool(self.pool)

    def _check_shard(self) -> None:
        if self.shard is None:
            return
        if len(self.shard) != 2 or not 0 <= self.shard[0] < self.shard[1]:
            raise BadInputError("shard", f"need (i, n) with 0 <= i < n, got {self.shard}")

    def with_(self, **changes: Any) -> ExtractConfig:
        """A copy with ``changes`` (checked like a new config)."""
        return replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The settings as plain values, for the store's provenance."""
        out = asdict(self)
        out["dicom_tags"] = list(self.dicom_tags)
        out["devices"] = list(self.devices)
        out["shard"] = list(self.shard) if self.shard else None
        return out

    @classmethod
    def names(cls) -> list[str]:
        """The settings' names (what :func:`~embstore.extraction.extract` takes as keywords)."""
        return [f.name for f in fields(cls)]


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise BadInputError(name, f"must be an integer >= {low}, got {value!r}")


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BadInputError(name, f"{value!r} is not one of {', '.join(choices)}")


__all__ = ["DECODERS", "DEFAULT_MAX_SIZE", "DTYPES", "RESIZES", "SAMPLINGS", "ExtractConfig"]

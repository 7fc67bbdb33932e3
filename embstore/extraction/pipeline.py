"""Extraction: echo DICOMs and videos -> frozen encoder -> embeddings committed to the store.

:func:`extract` runs an :class:`~embstore.extraction.config.ExtractConfig`. DataLoader workers
decode and resize (:mod:`.dataset`), or, with the GPU decoder, only read bytes (:mod:`.gpu`);
the main process normalizes on the model's device and runs the encoder batched under
``torch.inference_mode()``. Nothing waits for anything it does not need: on CUDA the batches
come prefetched into pinned memory, ``in_flight`` batches are on the device at once (their
results copied back without blocking), and commits run on a background thread
(:class:`~embstore.store.committer.BackgroundCommitter`) every ``commit_every`` videos. A killed
run loses at most the uncommitted videos: re-running the same command skips every committed
path. ``shard=(i, n)`` splits the inputs by a stable hash of their paths, so ``n`` processes (a
SLURM array, or ``devices``: one per GPU) can fill one store at once.

Besides the pooled ``embedding (sample, feature)`` (the mean over tokens, then over clips),
``pool="grid:T,H,W"`` or ``pool="none"`` also stores ``tokens (sample, token, feature)`` in
float16: the token grid average-pooled to T x H x W, or every token.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Progress
from ..errors import BadInputError, EmbstoreError, StoreError
from ..formats.base import BadRow
from ..keys import check_keys
from ..labels import get_layout
from ..store import AppendResult, StoreWriter
from ..store.committer import BackgroundCommitter
from ..store.layout import row_chunk_for_commits
from ..store.location import StoreLike
from .config import ExtractConfig
from .dataset import VideoDataset, list_inputs, make_loader, shard_of, warnings_to_log
from .decode import check_keywords
from .devices import pick_device, run_on_devices
from .encoders import REGISTRY, Extractor
from .gpu import DECODER_NAMES, choose_decoder, has_nvdec

log = logging.getLogger(__name__)

#: Extraction settings that must match for two runs to share a store (they define the numbers).
DEFINING = (
    "family",
    "checkpoint_sha256",
    "checkpoint_key",
    "architecture",
    "pooling",
    "dtype",
    "clip",
    "sampling",
    "resize",
    "pool",
    "decoder",
)
#: What stores made before ``sampling``/``resize``/``pool`` were recorded used.
LEGACY = {"sampling": "centered", "resize": "antialias", "pool": "mean"}
#: Settings recorded later, and what a store made before them used.
LATER = {"decoder": DECODER_NAMES["cpu"]}


@dataclass
class ExtractReport:
    """What :func:`extract` did."""

    store: str
    inputs: int = 0
    added: int = 0
    already_stored: int = 0
    stills: list[str] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0
    rows: int = 0
    token_bytes: int = 0

    def summary(self) -> str:
        rate = self.clips / self.seconds if self.seconds else 0.0
        text = (
            f"embedded {self.added} of {self.inputs} inputs "
            f"({self.clips} clips, {rate:.1f} clips/s); "
            f"{self.already_stored} already stored, {len(self.stills)} single-frame stills skipped"
        )
        return (
            text
            + (f", {len(self.bad)} bad (skipped)" if self.bad else "")
            + f"; store has {self.rows}"
        )


def parse_pool(pool: str) -> tuple[int, int, int] | None | str:
    """``"mean"`` -> ``"mean"``; ``"none"`` -> ``None`` (all tokens); ``"grid:T,H,W"`` -> the
    target grid."""
    if pool in ("mean", "none"):
        return None if pool == "none" else "mean"
    kind, _, sizes = pool.partition(":")
    try:
        grid = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        grid = ()
    if kind != "grid" or len(grid) != 3 or min(grid) < 1:
        raise BadInputError("pool", f"expected mean, none or grid:T,H,W, got {pool!r}")
    return grid[0], grid[1], grid[2]


def pool_tokens(tokens: Any, native: tuple[int, int, int], pool: str) -> Any:
    """``(n, T*H*W, D)`` tokens on the ``native`` grid -> what ``pool`` stores as ``tokens``:
    None for ``"mean"``, the tokens for ``"none"``, the grid average-pooled for ``"grid:…"``."""
    import torch.nn.functional as F

    target = parse_pool(pool)
    if isinstance(target, str):  # "mean"
        return None
    if target is None:
        return tokens
    if any(t > n for t, n in zip(target, native, strict=True)):
        raise BadInputError("pool", f"grid {target} is finer than the token grid {native}")
    n, _, dim = tokens.shape
    grid = tokens.reshape(n, *native, dim).permute(0, 4, 1, 2, 3)
    pooled = F.adaptive_avg_pool3d(grid, target)  # (n, D, T, H, W)
    return pooled.permute(0, 2, 3, 4, 1).reshape(n, -1, dim)


def token_count(native: tuple[int, int, int], pool: str) -> int:
    """Tokens per row that ``pool`` stores (0 for ``"mean"``)."""
    target = parse_pool(pool)
    if isinstance(target, str):  # "mean"
        return 0
    return int(np.prod(native if target is None else target))


def check_token_size(rows: int, tokens: int, dim: int, *, max_size: int, confirm: bool) -> int:
    """Projected bytes of ``tokens`` (float16) for at most ``rows`` rows; refuse above
    ``max_size`` unless ``confirm``."""
    size = rows * tokens * dim * 2
    if tokens:
        log.warning(
            "tokens: %d rows x %d tokens x %d features x 2 bytes = %.3g GB",
            rows,
            tokens,
            dim,
            size / 1e9,
        )
    if size > max_size and not confirm:
        msg = (
            f"tokens would take {size / 1e9:.3g} GB, above max_size ({max_size / 1e9:.3g} GB): "
            "pool them to a coarser grid, raise max_size, or pass confirm=True"
        )
        raise EmbstoreError(msg)
    return size


def describe_run(
    extractor: Extractor,
    spec: Any,
    pool: str,
    store: StoreLike,
    decoder: str = DECODER_NAMES["cpu"],
) -> dict[str, Any]:
    """The extraction record for the store; for a store made before ``sampling``, ``resize``
    and ``pool`` were recorded, only the earlier rules (:data:`LEGACY`) may add to it, and
    before ``decoder`` was, only the CPU decoder (:data:`LATER`)."""
    rules = {"sampling": spec.sampling, "resize": spec.resize, "pool": pool}
    record = {**extractor.describe(), "clip": spec.geometry(), **rules, "decoder": decoder}
    existing = _existing_record(store)
    if existing is None:
        return record
    for key, before in LATER.items():
        if key not in existing:
            if record[key] != before:
                msg = f"{store}: made with {key}={before!r}; this run's is {record[key]!r}"
                raise StoreError(msg)
            del record[key]
    if "sampling" in existing:
        return record
    if rules != LEGACY:
        earlier = ", ".join(f"{k}={v!r}" for k, v in LEGACY.items())
        raise StoreError(
            f"{store}: made with the earlier extraction rules; add to it with {earlier}"
        )
    return {k: v for k, v in record.items() if k not in LEGACY}


def _existing_record(store: StoreLike) -> dict[str, Any] | None:
    from ..store import is_store, open_store
    from ..store.views import provenance

    if not is_store(store):
        return None
    return provenance(open_store(store)).get("extraction")


def extract(
    input: str | os.PathLike[str],  # noqa: A002 - mirrors the CLI
    *,
    store: StoreLike,
    config: ExtractConfig | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> ExtractReport:
    """Embed every DICOM and video under ``input`` into ``store``, resumable and shardable.

    Parameters
    ----------
    input
        A folder, searched recursively for DICOMs (by suffix or preamble) and videos.
    store
        The store; created if missing. Its provenance records ``config``.
    config
        The run's settings (:class:`~embstore.extraction.config.ExtractConfig`).
    progress
        Called with ``(clips_done, clips_total)`` after each batch.
    **settings
        :class:`ExtractConfig` fields, instead of ``config`` or overriding it.

    Only the DICOM header fields named in ``dicom_tags`` are stored (as labels); nothing else
    from a header reaches the store.

    Examples
    --------
    With a real checkpoint: ``ExtractConfig(checkpoint="vitl.pt", model="vitl",
    layout="mimic-echo")``. Here a tiny random V-JEPA2 (:func:`embstore.testing.make_tiny_vjepa2`)
    embeds two 4-frame echo DICOMs:

    >>> config = ExtractConfig(checkpoint="vjepa2-tiny/original.pt",
    ...                        model="vjepa2-tiny/config.json", layout="mimic-echo",
    ...                        num_frames=4, frame_step=1, num_workers=0)
    >>> report = embstore.extraction.extract("files/", store="echo.store", config=config)
    >>> report.added, report.rows
    (2, 2)
    >>> echo = embstore.open("echo.store")
    >>> echo.path.values.tolist()
    ['p10/p10000000/s90000000/90000000_0001.dcm', 'p10/p10000001/s90000001/90000001_0001.dcm']
    >>> echo.subject.values.tolist(), echo.study.values.tolist(), echo.embedding.shape
    (['p10000000', 'p10000001'], ['s90000000', 's90000001'], (2, 32))
    >>> embstore.extraction.extract("files/", store="echo.store", config=config).already_stored
    2
    """
    if config is None:
        if "checkpoint" not in settings:
            raise BadInputError("checkpoint", "needed (give config= or checkpoint=)")
        config = ExtractConfig(**settings)
    elif settings:
        config = config.with_(**settings)
    root = Path(input)
    if not root.is_dir():
        raise BadInputError(str(root), "not a folder")
    if len(config.devices) > 1:
        part = functools.partial(_extract_part, str(root), str(store))
        return run_on_devices(config, part, functools.partial(_merge, str(store)))
    return _extract(root, store, config, progress)


def _extract_part(root: str, store: str, config: ExtractConfig) -> ExtractReport:
    """One device's process of a ``devices`` run (module-level: it is pickled)."""
    return _extract(Path(root), store, config, None)


def _merge(store: str, reports: list[ExtractReport]) -> ExtractReport:
    merged = ExtractReport(store=store)
    for r in reports:
        merged.inputs += r.inputs
        merged.added += r.added
        merged.already_stored += r.already_stored
        merged.stills += r.stills
        merged.bad += r.bad
        merged.clips += r.clips
        merged.token_bytes += r.token_bytes
        merged.seconds = max(merged.seconds, r.seconds)
        merged.rows = max(merged.rows, r.rows)
    return merged


def _extract(
    root: Path, store: str | os.PathLike[str], config: ExtractConfig, progress: Any
) -> ExtractReport:
    layout = get_layout(config.layout)
    keywords = check_keywords(config.dicom_tags)
    extractor, spec = _build(config)  # the checkpoint is checked before any input is read
    decoder = _decoder(config, extractor.device)
    paths, refused = _inputs(root, config)
    tokens = token_count(extractor.token_grid(config.num_frames), config.pool)
    most = len(paths) if config.limit is None else min(config.limit, len(paths))
    token_bytes = check_token_size(
        most, tokens, extractor.dim, max_size=config.max_size, confirm=config.confirm
    )  # before the store is touched
    description = describe_run(extractor, spec, config.pool, store, DECODER_NAMES[decoder])
    writer = StoreWriter(
        store,
        feature_size=extractor.dim,
        model=description["model"],
        row_chunk=row_chunk_for_commits(extractor.dim, config.commit_every),  # whole chunks
    )
    writer.claim("extraction", description, defining=DEFINING)
    report = ExtractReport(store=str(store), inputs=len(paths), token_bytes=token_bytes)
    report.bad += [BadRow(str(root), str(v)) for v in refused]
    todo = [p for p in paths if not writer.contains(p)]
    report.already_stored = len(paths) - len(todo)
    todo = todo[: config.limit] if config.limit is not None else todo
    dataset = VideoDataset(
        root, todo, spec, keywords, decoder=decoder, nvdec=decoder == "gpu" and has_nvdec()
    )
    options = {"input": str(root), "config": config.record(), "device": str(extractor.device)}
    options.update(decoder=DECODER_NAMES[decoder], model=description["model"])
    with contextlib.ExitStack() as stack:
        record = stack.enter_context(writer.run("extract", options))
        run = _Run(extractor, spec, config, writer, layout, report, root)
        run.committer = stack.enter_context(
            BackgroundCommitter(writer, in_flight=config.in_flight, on_result=run.count)
        )
        stack.enter_context(warnings_to_log())
        run.loop(dataset, progress)
        run.finish(record)
    report.rows = writer.rows
    for row in report.bad:
        log.warning("skipped %s", row)
    return report


def _build(config: ExtractConfig) -> tuple[Extractor, Any]:
    """The extractor (from the registry) and its preprocessing for ``config``."""
    device = pick_device(config.device, config.devices)
    if config.family not in REGISTRY:
        msg = f"unknown model family {config.family!r} (have: {', '.join(REGISTRY)})"
        raise BadInputError("family", msg)
    extractor = REGISTRY[config.family](
        checkpoint=config.checkpoint,
        model=config.model,
        checkpoint_key=config.checkpoint_key,
        device=device,
        dtype=config.dtype,
        compile=config.compile,
        **config.family_options,
    )
    spec = extractor.clip_spec(
        num_frames=config.num_frames,
        frame_step=config.frame_step,
        clips=config.clips,
        sampling=config.sampling,
        resize=config.resize,
    )
    return extractor, spec


def _decoder(config: ExtractConfig, device: Any) -> str:
    if config.resize != "upstream" and config.decoder != "cpu":
        if config.decoder == "gpu":
            raise BadInputError("decoder", "the GPU decoder resizes as resize='upstream' only")
        return "cpu"
    return choose_decoder(config.decoder, device)


def _inputs(root: Path, config: ExtractConfig) -> tuple[list[str], list[Any]]:
    """The run's input paths (its shard), and the names refused by the key policy."""
    paths = list_inputs(root)
    # file names become row keys: ones that break the key policy are reported and skipped
    refused = check_keys(paths, source=str(root), skip_bad=True)
    paths = [p for i, p in enumerate(paths) if i not in {v.index for v in refused}]
    if config.shard is not None:
        index, count = config.shard
        paths = [p for p in paths if shard_of(p, count) == index]
    return paths, refused


@dataclass
class _Flight:
    """One batch on its way: launched on the device, its results copied back asynchronously."""

    paths: list[str]
    labels: list[dict[str, str]]
    vectors: Any
    tokens: Any
    event: Any = None

    def land(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.event is not None:
            self.event.synchronize()
        kept = None if self.tokens is None else self.tokens.numpy()
        return self.vectors.numpy(), kept


class _Run:
    """One extraction run's loop: batches in flight on the device, rows waiting for their
    commit (so :func:`extract` stays short)."""

    def __init__(
        self,
        extractor: Extractor,
        spec: Any,
        config: ExtractConfig,
        writer: StoreWriter,
        layout: Any,
        report: ExtractReport,
        root: Path,
    ) -> None:
        self.extractor, self.spec, self.config, self.writer = extractor, spec, config, writer
        self.layout, self.report, self.root = layout, report, root
        self.device = extractor.device
        self.cuda = self.device.type == "cuda"
        self.native = extractor.token_grid(spec.num_frames)
        self.pending: dict[str, list[Any]] = {"paths": [], "vectors": [], "labels": []}
        self.pending["tokens"] = []
        self.flights: deque[_Flight] = deque()
        self.committer: BackgroundCommitter | None = None
        self._jpeg: Callable[[list[Any]], list[Any]] | None = None
        self.deviation: dict[str, Any] | None = None
        self.start = time.perf_counter()

    def loop(self, dataset: VideoDataset, progress: Progress | None) -> None:
        config = self.config
        loader = make_loader(
            dataset,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            pin_memory=self.cuda,
        )
        done, total = 0, len(dataset) * self.spec.clips
        for batch in loader:
            self.report.stills += batch["stills"]
            self.report.bad += [BadRow(str(self.root / p), why) for p, why in batch["bad"]]
            if batch["paths"]:
                self.flights.append(self._launch(batch))
            while len(self.flights) > (config.in_flight if self.cuda else 0):
                self._land(self.flights.popleft())
            done += len(batch["paths"]) + len(batch["stills"]) + len(batch["bad"])
            if progress:  # in clips, so a progress bar's rate reads clips/s
                progress(done * self.spec.clips, total)
        while self.flights:
            self._land(self.flights.popleft())
        self._commit()

    def _clips(self, batch: dict[str, Any]) -> Any:
        """The batch's normalized clips on the device (decoded there when the GPU decodes)."""
        if batch["clips"] is not None:
            return self.spec.normalize(batch["clips"], device=self.device)
        import torch

        from .gpu import decode_jpeg_items, decode_video_on_device, gpu_jpeg_decoder

        if self._jpeg is None:
            self._jpeg = gpu_jpeg_decoder(self.device)
        crop, items = self.spec.crop, batch["items"]
        jpegs = iter(decode_jpeg_items([p for k, p in items if k == "jpeg"], crop, self._jpeg))
        parts = []
        for (kind, payload), path in zip(items, batch["paths"], strict=True):
            if kind == "crops":
                parts.append(payload.to(self.device, non_blocking=True))
            elif kind == "jpeg":
                parts.append(next(jpegs))
            else:
                wanted = self.spec.indices
                parts.append(
                    decode_video_on_device(str(self.root / path), wanted, crop, self.device)
                )
        return self.spec.normalize(torch.stack(parts), device=self.device)

    def _launch(self, batch: dict[str, Any]) -> _Flight:
        clips = self._clips(batch)
        if self.deviation is None:  # once a run: the dtype's deviation from float32
            measure = getattr(self.extractor, "dtype_deviation", None)
            self.deviation = (measure(clips) if measure else None) or {}
        tokens = self.extractor.tokens(clips)  # (videos * clips, L, D)
        n, per = len(batch["paths"]), self.spec.clips
        vectors = tokens.mean(dim=1).reshape(n, per, -1).mean(dim=1)
        kept = pool_tokens(tokens, self.native, self.config.pool)
        if kept is not None:
            kept = kept.reshape(n, per, *kept.shape[1:]).mean(dim=1).half()
        self.report.clips += n * per
        flight = _Flight(batch["paths"], batch["labels"], _to_host(vectors), _to_host(kept))
        if self.cuda:
            import torch

            flight.event = torch.cuda.Event()
            flight.event.record()
        return flight

    def _land(self, flight: _Flight) -> None:
        vectors, kept = flight.land()
        for i, path in enumerate(flight.paths):
            self.pending["paths"].append(path)
            self.pending["vectors"].append(vectors[i])
            self.pending["labels"].append(flight.labels[i])
            self.pending["tokens"].append(None if kept is None else kept[i])
        if len(self.pending["paths"]) >= self.config.commit_every:
            self._commit()

    def _commit(self) -> None:
        pending, report = self.pending, self.report
        if not pending["paths"]:
            return
        columns, bad = _label_columns(pending["paths"], pending["labels"], self.layout, report)
        keep = [i for i, p in enumerate(pending["paths"]) if p not in bad]
        if keep and self.committer is not None:
            extra = None
            if pending["tokens"][0] is not None:
                extra = {"tokens": np.stack([pending["tokens"][i] for i in keep])}
            self.committer.submit(
                [pending["paths"][i] for i in keep],
                np.stack([pending["vectors"][i] for i in keep]),
                columns,
                extra=extra,
            )
        for key in pending:
            pending[key] = []

    def count(self, result: AppendResult) -> None:
        """Called with each commit's result (in this thread)."""
        self.report.added += result.added
        self.report.already_stored += len(result.duplicates)
        self.report.rows = result.rows

    def finish(self, record: Any) -> None:
        """Wait for the last commits; give the run record its summary."""
        if self.committer is not None:
            self.committer.flush()
        report = self.report
        report.seconds = time.perf_counter() - self.start
        record.update(
            added=report.added,
            stills=len(report.stills),
            bad_count=len(report.bad),
            bad=[str(b) for b in report.bad],
            clips=report.clips,
            seconds=round(report.seconds, 3),
        )
        if self.deviation:
            record.update(dtype_deviation=self.deviation)


def _to_host(tensor: Any) -> Any:
    """``tensor`` copied to the CPU: on CUDA into pinned memory without waiting (the batch's
    event says when it is there)."""
    if tensor is None or tensor.device.type == "cpu":
        return tensor
    import torch

    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


def _label_columns(
    paths: list[str], header: list[dict[str, str]], layout: Any, report: ExtractReport
) -> tuple[dict[str, Any], set[str]]:
    """Layout labels plus allow-listed header labels; rows the layout can't parse are bad."""
    columns: dict[str, Any] = {}
    bad: set[str] = set()
    keep = list(range(len(paths)))
    if layout is not None:
        parsed, failed = layout.parse_columns(paths)
        for i, problem in failed.items():
            bad.add(paths[i])
            report.bad.append(BadRow(paths[i], problem))
        keep = [i for i in keep if i not in failed]
        columns.update({k: [v[i] for i in keep] for k, v in parsed.items()})
    for key in header[0] if header else {}:
        columns[key] = [header[i][key] for i in keep]
    return columns, bad

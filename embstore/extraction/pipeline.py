"""Extraction: echo DICOMs and videos -> frozen encoder -> embeddings committed to the store.

Workers decode and resize (:mod:`.dataset`); the main process normalizes on the model's
device and runs the encoder batched under ``torch.inference_mode()`` (bf16 autocast on CUDA,
float32 on CPU); rows are committed every ``commit_every`` videos. A killed run loses at most
the uncommitted videos: re-running the same command skips every committed path.
``shard=(i, n)`` splits the inputs by a stable hash of their paths, so ``n`` processes (a
SLURM array) can fill one store at once.

Besides the pooled ``embedding (sample, feature)`` (the mean over tokens, then over clips),
``pool="grid:T,H,W"`` or ``pool="none"`` also stores ``tokens (sample, token, feature)`` in
float16: the token grid average-pooled to T x H x W, or every token.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._progress import Progress
from ..errors import BadInputError, EmbstoreError, StoreError
from ..formats.base import BadRow
from ..keys import check_keys
from ..labels import get_layout
from ..store import StoreWriter
from ..store.layout import row_chunk_for_commits
from ..store.location import StoreLike
from .dataset import VideoDataset, collate, init_worker, list_inputs, shard_of
from .decode import check_keywords
from .encoders import REGISTRY, Extractor

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
)
#: What stores made before ``sampling``/``resize``/``pool`` were recorded used.
LEGACY = {"sampling": "centered", "resize": "antialias", "pool": "mean"}
DEFAULT_MAX_SIZE = 100_000_000_000  # bytes (100 GB)


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


def pick_device(device: str | None) -> str:
    """`None` -> `cuda` when available, else `cpu`; asking for CUDA without one is an error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmbstoreError(f"device={device!r}: no CUDA device here (use device='cpu')")
    return device


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BadInputError("shard", f"expected I/N (e.g. 0/10), got {text!r}") from None
    if not 0 <= index < count:
        raise BadInputError("shard", f"need 0 <= I < N, got {text!r}")
    return index, count


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


def describe_run(extractor: Extractor, spec: Any, pool: str, store: StoreLike) -> dict[str, Any]:
    """The extraction record for the store; for a store made before ``sampling``, ``resize``
    and ``pool`` were recorded, only the earlier rules (:data:`LEGACY`) may add to it."""
    rules = {"sampling": spec.sampling, "resize": spec.resize, "pool": pool}
    record = {**extractor.describe(), "clip": spec.geometry(), **rules}
    existing = _existing_record(store)
    if existing is None or "sampling" in existing:
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
    checkpoint: str | os.PathLike[str],
    model: str | None = None,
    family: str = "vjepa2",
    checkpoint_key: str = "target_encoder",
    num_frames: int = 16,
    frame_step: int = 4,
    clips: int = 1,
    sampling: str = "upstream",
    resize: str = "upstream",
    pool: str = "mean",
    max_size: int = DEFAULT_MAX_SIZE,
    confirm: bool = False,
    batch_size: int = 8,
    num_workers: int = 4,
    device: str | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    layout: str | None = None,
    dicom_tags: Sequence[str] = (),
    commit_every: int = 256,
    progress: Progress | None = None,
) -> ExtractReport:
    """Embed every DICOM and video under ``input`` into ``store``, resumable and shardable.

    Parameters are those of ``embstore extract``. ``sampling`` and ``resize`` pick the
    preprocessing rules (``"upstream"``: as facebookresearch/vjepa2's frozen evaluation; see
    :mod:`embstore.extraction.preprocess`). ``pool`` is ``"mean"`` (only the pooled
    ``embedding``), ``"grid:T,H,W"`` or ``"none"`` (also ``tokens``, float16; refused above
    ``max_size`` bytes unless ``confirm``). ``shard=(i, n)`` keeps the inputs whose stable path
    hash falls in shard ``i`` of ``n``. Only the DICOM header fields named in ``dicom_tags``
    are stored (as labels); nothing else from a header reaches the store.
    """
    root = Path(input)
    if not root.is_dir():
        raise BadInputError(str(root), "not a folder")
    parse_pool(pool)
    device = pick_device(device)
    resolved = get_layout(layout)
    keywords = check_keywords(dicom_tags)
    if family not in REGISTRY:
        raise EmbstoreError(f"unknown model family {family!r} (have: {', '.join(REGISTRY)})")
    paths = list_inputs(root)
    # file names become row keys: ones that break the key policy are reported and skipped
    refused = check_keys(paths, source=str(root), skip_bad=True)
    paths = [p for i, p in enumerate(paths) if i not in {v.index for v in refused}]
    if shard is not None:
        paths = [p for p in paths if shard_of(p, shard[1]) == shard[0]]
    extractor = REGISTRY[family](
        checkpoint=str(checkpoint), model=model, checkpoint_key=checkpoint_key, device=device
    )
    spec = extractor.clip_spec(
        num_frames=num_frames, frame_step=frame_step, clips=clips, sampling=sampling, resize=resize
    )
    tokens = token_count(extractor.token_grid(num_frames), pool)
    most = len(paths) if limit is None else min(limit, len(paths))  # before the store is touched
    token_bytes = check_token_size(most, tokens, extractor.dim, max_size=max_size, confirm=confirm)
    description = describe_run(extractor, spec, pool, store)
    writer = StoreWriter(
        store,
        feature_size=extractor.dim,
        model=description["model"],
        row_chunk=row_chunk_for_commits(extractor.dim, commit_every),  # whole chunks per commit
    )
    writer.claim("extraction", description, defining=DEFINING)
    report = ExtractReport(store=str(store), inputs=len(paths), token_bytes=token_bytes)
    report.bad += [BadRow(str(root), str(v)) for v in refused]
    todo = [p for p in paths if not writer.contains(p)]
    report.already_stored = len(paths) - len(todo)
    todo = todo[:limit] if limit is not None else todo
    writer.start_run(
        "extract", input=str(root), shard=list(shard) if shard else None, model=description["model"]
    )
    run = _Run(extractor, spec, pool, writer, resolved, report, root)
    dataset = VideoDataset(root, todo, spec, keywords)
    try:
        run.loop(dataset, batch_size, num_workers, commit_every, progress)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        writer.finish_run(status, error=type(exc).__name__)  # texts may quote inputs
        raise
    return run.finish()


class _Run:
    """One extraction run's loop and pending rows (so :func:`extract` stays short)."""

    def __init__(
        self,
        extractor: Extractor,
        spec: Any,
        pool: str,
        writer: StoreWriter,
        layout: Any,
        report: ExtractReport,
        root: Path,
    ) -> None:
        self.extractor, self.spec, self.pool, self.writer = extractor, spec, pool, writer
        self.layout, self.report, self.root = layout, report, root
        self.native = extractor.token_grid(spec.num_frames)
        self.pending: dict[str, list[Any]] = {"paths": [], "vectors": [], "labels": []}
        self.pending["tokens"] = []
        self.start = time.perf_counter()

    def loop(
        self,
        dataset: VideoDataset,
        batch_size: int,
        num_workers: int,
        commit_every: int,
        progress: Progress | None,
    ) -> None:
        import torch

        loader: torch.utils.data.DataLoader[dict[str, Any]] = torch.utils.data.DataLoader(
            cast(Any, dataset),  # map-style (len + getitem) without subclassing torch's Dataset
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate,
            worker_init_fn=init_worker,
            pin_memory=self.extractor.device.type == "cuda",
        )
        done, total = 0, len(dataset) * self.spec.clips
        for batch in loader:
            self.report.stills += batch["stills"]
            self.report.bad += [BadRow(str(self.root / p), why) for p, why in batch["bad"]]
            if batch["paths"]:
                self._embed(batch)
            if len(self.pending["paths"]) >= commit_every:
                self._commit()
            done += len(batch["paths"]) + len(batch["stills"]) + len(batch["bad"])
            if progress:  # in clips, so a progress bar's rate reads clips/s
                progress(done * self.spec.clips, total)
        self._commit()

    def _embed(self, batch: dict[str, Any]) -> None:
        clips = self.spec.normalize(batch["clips"], device=self.extractor.device)
        tokens = self.extractor.tokens(clips)  # (videos * clips, L, D)
        n, per = len(batch["paths"]), self.spec.clips
        vectors = tokens.mean(dim=1).reshape(n, per, -1).mean(dim=1).cpu().numpy()
        kept = pool_tokens(tokens, self.native, self.pool)
        if kept is not None:
            kept = kept.reshape(n, per, *kept.shape[1:]).mean(dim=1).half().cpu().numpy()
        for i, path in enumerate(batch["paths"]):
            self.pending["paths"].append(path)
            self.pending["vectors"].append(vectors[i])
            self.pending["labels"].append(batch["labels"][i])
            self.pending["tokens"].append(None if kept is None else kept[i])
        self.report.clips += n * per

    def _commit(self) -> None:
        pending, report = self.pending, self.report
        if not pending["paths"]:
            return
        columns, bad = _label_columns(pending["paths"], pending["labels"], self.layout, report)
        keep = [i for i, p in enumerate(pending["paths"]) if p not in bad]
        if keep:
            extra = None
            if pending["tokens"][0] is not None:
                extra = {"tokens": np.stack([pending["tokens"][i] for i in keep])}
            result = self.writer.append(
                [pending["paths"][i] for i in keep],
                np.stack([pending["vectors"][i] for i in keep]),
                columns,
                extra=extra,
            )
            report.added += result.added
            report.already_stored += len(result.duplicates)
            report.rows = result.rows
        for key in pending:
            pending[key] = []

    def finish(self) -> ExtractReport:
        report = self.report
        report.seconds = time.perf_counter() - self.start
        report.rows = self.writer.rows
        self.writer.finish_run(
            "complete",
            added=report.added,
            stills=len(report.stills),
            bad_count=len(report.bad),
            bad=[str(b) for b in report.bad[:100]],
            clips=report.clips,
            seconds=round(report.seconds, 3),
        )
        for row in report.bad:
            log.warning("skipped %s", row)
        return report


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

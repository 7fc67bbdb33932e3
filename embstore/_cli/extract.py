"""Commands that make embeddings from medical images, videos and images: convert-dicom, extract,
extract-images (and their argument parsers)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

import embstore
from embstore._cli.app import (
    _STORE_HELP,
    LAYOUT_HELP,
    Layout,
    Quiet,
    StorePath,
    _command,
    _progress,
    _say,
    err,
    one_line,
)
from embstore.extraction.config import DECODERS, DTYPES
from embstore.extraction.encoders import REGISTRY


@_command
def convert_dicom(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Folder of DICOMs (searched recursively).")
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="Folder for the MP4s (same relative paths).")
    ],
    target_size: Annotated[int, typer.Option(help="Output width and height (even).")] = 256,
    fps: Annotated[float | None, typer.Option(help="Frame rate (default: from the DICOM).")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Convert at most this many files.")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Convert multi-frame DICOMs to H.264 MP4; stills are skipped, bad files reported."""
    from embstore.extraction import convert_dicom as run

    with _progress(quiet, "convert", "files") as progress:
        report = run(
            input_dir, output, target_size=target_size, fps=fps, limit=limit, progress=progress
        )
    _say(quiet, report.summary())
    for file, problem in report.failed:
        err.print(f"[red]failed:[/red] {file}: {problem}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected I/N (e.g. 0/10), got {text!r}") from None
    if not 0 <= index < count:
        raise typer.BadParameter(f"need 0 <= I < N, got {text!r}")
    return index, count


def parse_devices(text: str) -> tuple[int, ...]:
    """``--devices 0,1,3`` -> ``(0, 1, 3)``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected CUDA device indices like 0,1,2, got {text!r}") from None


#: ``--family`` choices: the extractor registry; ``--dtype`` and ``--decoder`` from the config.
Family = StrEnum("Family", {n.replace("-", "_"): n for n in REGISTRY})  # type: ignore[misc]
Dtype = StrEnum("Dtype", {n.replace("-", "_"): n for n in DTYPES})  # type: ignore[misc]
Decoder = StrEnum("Decoder", {n: n for n in DECODERS})  # type: ignore[misc]


@_command
def extract(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Folder of DICOMs and/or videos.")
    ],
    store: StorePath,
    checkpoint: Annotated[
        Path, typer.Option(help="Original .pt checkpoint or a local Hugging Face folder.")
    ],
    family: Annotated[
        Family, typer.Option(help="The encoder family (the extractor registry).")
    ] = "vjepa2",  # type: ignore[assignment]
    model: Annotated[
        str | None,
        typer.Option(
            help="vitl, vith, vitg, vitg-384, or a config JSON (optional for HF folders)."
        ),
    ] = None,
    checkpoint_key: Annotated[
        str, typer.Option(help="target_encoder (frozen-eval choice) or encoder.")
    ] = "target_encoder",
    num_frames: Annotated[int, typer.Option(min=1, help="Frames per clip.")] = 16,
    frame_step: Annotated[int, typer.Option(min=1, help="Step between sampled frames.")] = 4,
    clips: Annotated[int, typer.Option(min=1, help="Clips per video, averaged.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per batch.")] = 8,
    num_workers: Annotated[
        int, typer.Option(min=0, help="DataLoader worker processes (capped to the CPUs).")
    ] = 4,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda when available).")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(help="CUDA devices, e.g. 0,1,2,3: one process each, one store."),
    ] = None,
    dtype: Annotated[
        Dtype,
        typer.Option(help="Encoder weights: auto = bfloat16 on CUDA, float32 on CPU."),
    ] = "auto",  # type: ignore[assignment]
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the encoder (CUDA).")
    ] = False,
    decoder: Annotated[
        Decoder,
        typer.Option(help="Decode frames on the cpu or gpu (auto: gpu on CUDA if installed)."),
    ] = "auto",  # type: ignore[assignment]
    limit: Annotated[
        int | None, typer.Option(min=1, help="Embed at most this many inputs.")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: this process's part of the inputs.")
    ] = None,
    layout: Annotated[Layout | None, typer.Option(help=LAYOUT_HELP)] = None,
    dicom_tags: Annotated[
        list[str] | None,
        typer.Option(help="A DICOM keyword to store as a label (repeat for more)."),
    ] = None,
    commit_every: Annotated[int, typer.Option(min=1, help="Videos per commit.")] = 256,
    sampling: Annotated[
        str, typer.Option(help="Frame sampling: upstream (V-JEPA2 eval) or centered (earlier).")
    ] = "upstream",
    resize: Annotated[
        str, typer.Option(help="Resizing: upstream (V-JEPA2 eval) or antialias (earlier).")
    ] = "upstream",
    pool: Annotated[
        str, typer.Option(help="mean, grid:T,H,W or none: also store tokens (float16).")
    ] = "mean",
    max_size: Annotated[
        float, typer.Option(min=0, help="Refuse tokens projected above this many GB.")
    ] = 100.0,
    yes: Annotated[bool, typer.Option("--yes", help="Store tokens above --max-size.")] = False,
    quiet: Quiet = False,
) -> None:
    """Embed DICOMs and videos with a frozen encoder (V-JEPA2), straight into the store."""
    from transformers.utils import logging as hf_logging

    from embstore.extraction import ExtractConfig
    from embstore.extraction import extract as run

    config = ExtractConfig(
        checkpoint=str(checkpoint),
        family=str(family),
        model=model,
        checkpoint_key=checkpoint_key,
        num_frames=num_frames,
        frame_step=frame_step,
        clips=clips,
        sampling=sampling,
        resize=resize,
        pool=pool,
        max_size=int(max_size * 1e9),
        confirm=yes,
        layout=layout.value if layout else None,
        dicom_tags=tuple(dicom_tags or ()),
        limit=limit,
        shard=parse_shard(shard) if shard else None,
        device=device,
        devices=parse_devices(devices) if devices else (),
        dtype=str(dtype),
        compile=compile_model,
        decoder=str(decoder),
        batch_size=batch_size,
        num_workers=num_workers,
        commit_every=commit_every,
    )
    hf_logging.disable_progress_bar()
    with _progress(quiet, "extract", "clips") as progress:
        report = run(input_dir, store=store, config=config, progress=progress)
    _say(quiet, f"{store}: {report.summary()}")
    for bad in report.bad:
        _say(quiet, one_line(f"  skipped {bad}"))


@_command
def extract_images(
    input_dir: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Folder of images, or the media folder of --detections."
        ),
    ],
    store: Annotated[str, typer.Argument(metavar="STORE", help=_STORE_HELP)],
    checkpoint: Annotated[
        Path, typer.Option(help="Local Hugging Face folder (DINOv3, DINOv2, CLIP, SigLIP).")
    ],
    detections: Annotated[
        Path | None,
        typer.Option(help="CSV/Parquet: path, frame or time, x0,y0,x1,y1, label columns."),
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="dinov3, dinov2, clip or siglip (default: from config).")
    ] = None,
    pooling: Annotated[
        str, typer.Option(help="cls (pooled output), mean (patch tokens) or projected (CLIP).")
    ] = "cls",
    path_column: Annotated[
        str | None, typer.Option(help="Table column of paths [default: path/video/image/file].")
    ] = None,
    label_column: Annotated[
        list[str] | None,
        typer.Option(help="Keep only this table column as a label (repeatable) [default: all]."),
    ] = None,
    key_column: Annotated[
        list[str] | None,
        typer.Option(help="Append this column to keys, for repeated boxes (repeatable)."),
    ] = None,
    pattern: Annotated[
        str | None, typer.Option(help="Image folders: regex with named groups for labels.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per forward pass.")] = 64,
    num_workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda when available).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 (CUDA autocast).")] = "float32",
    processor_backend: Annotated[
        str | None, typer.Option(help="pil or torchvision [default: what transformers picks].")
    ] = None,
    commit_rows: Annotated[
        int | None, typer.Option(min=1, help="Rows per commit [default: one chunk].")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Embed at most this many.")] = None,
    quiet: Quiet = False,
) -> None:
    """Embed images, or the crops of a detections table, with an image model into STORE."""
    from embstore.extraction.images import quiet_transformers

    config = embstore.ImageExtractConfig(
        checkpoint=checkpoint,
        family=family,
        pooling=pooling,
        dtype=dtype,
        processor_backend=processor_backend,
        detections=detections,
        path_column=path_column,
        label_columns=label_column or None,
        key_columns=key_column or (),
        pattern=pattern,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        commit_rows=commit_rows,
        limit=limit,
    )
    with quiet_transformers(), _progress(quiet, "extract", "crops") as progress:
        report = embstore.extract_images(input_dir, store=store, config=config, progress=progress)
    _say(quiet, f"{store}: {report.summary()}")
    for bad in report.bad[:20]:
        _say(quiet, one_line(f"  skipped {bad}"))

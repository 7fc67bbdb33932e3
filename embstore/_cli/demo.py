"""The ``demo`` command: build sample data and run the whole pipeline on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import embstore
from embstore._cli.app import (
    Quiet,
    _command,
    _progress,
    _say,
)


@_command
def demo(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Folder for the generated data, store and exports."),
    ],
    subjects: Annotated[int, typer.Option(min=2, help="Subjects to generate.")] = 6,
    categories: Annotated[int, typer.Option(min=1, help="Categories to generate.")] = 20,
    dim: Annotated[int, typer.Option(min=1, help="Feature size.")] = 768,
    seed000: Annotated[
        bool,
        typer.Option(
            "--seed000",
            help="Instead: seed 000 from videos (a new DIR): detections -> crops embedded by a "
            "tiny DINOv3 -> aggregate -> normalize -> the notebook's .npy tree.",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Generate a babyview-style .npy tree and run the whole job on it: ingest, normalize
    (first subject excluded from the statistics), info, export."""
    if seed000:
        _seed000_demo(directory, quiet)
        return
    with _progress(quiet, "demo") as progress:
        result = embstore.run_demo(
            directory, n_subjects=subjects, n_categories=categories, dim=dim, progress=progress
        )
    _say(quiet, f"generated {result.files} .npy files in {result.tree}")
    _say(quiet, f"ingest: {result.ingest.summary()}")
    _say(quiet, f"normalize: {result.normalize.summary()}")
    _say(quiet, f"export: {result.export.summary()}")
    _say(quiet, f"store: {result.store}  (try: embstore info {result.store})")


def _seed000_demo(directory: Path, quiet: bool) -> None:
    from embstore.demo_crops import run_seed000_demo
    from embstore.extraction.images import quiet_transformers

    with quiet_transformers(), _progress(quiet, "seed 000", "crops") as progress:
        result = run_seed000_demo(directory, progress=progress)
    _say(quiet, f"detections: {result.detections}")
    _say(quiet, f"extract-images: {result.extract.summary()}")
    _say(quiet, f"aggregate: {result.aggregate.summary()}")
    _say(quiet, f"normalize: {result.normalize.summary()}")
    _say(quiet, f"export: {result.export.summary()}")

"""Does the extraction pipeline overlap decode, the encoder and commits? (CPU, no GPU needed)

A stand-in encoder takes a fixed time per batch without holding the GIL (``time.sleep``, as a
GPU does: the main thread only waits; normalizing the uint8 crops, the GPU's work on a GPU, is
part of that time), so the pipeline can at best run at the slower of the
decode rate (DataLoader workers decoding copies of pydicom-data's real 120-frame 480x640 JPEG
echo cine) and the stand-in's rate; commits every ``--commit-every`` videos. Measured side by
side in one run:

- decode alone: the same DataLoader, no encoder, no store (clips/s);
- the stand-in alone: ``batch / seconds per batch`` (by default set equal to the decode rate:
  the hardest case for overlap);
- ``extract()`` as it is (background commits, batches in flight) and the same with commits made
  inline (what the loop did before: the encoder waits for every commit).

Rates are steady rates (clips after the first batch over the time since it came: worker
start-up is not overlap); the end-to-end rate (``ExtractReport``) is shown beside them.

Goal (issue 19): pipeline >= 0.9 x min(decode, stand-in). Appends its table to
bench/RESULTS.md::

    python bench/pipeline_overlap.py [--inputs 96] [--workers 2] [--batch-size 8]
        [--commit-every 32] [--standin-ms auto]

The issue's setting is ``--inputs 1024 --commit-every 256`` (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DIM = 1024


class StandIn:
    """An extractor that holds no GIL for ``seconds`` per batch and returns zeros."""

    name = "standin"

    def __init__(self, seconds: float, **_: Any) -> None:
        self.seconds, self.dim, self.crop = seconds, DIM, 256
        self.device = torch.device("cpu")

    def clip_spec(self, **settings: Any) -> Any:
        from embstore.extraction.preprocess import ClipSpec

        class OnDevice(ClipSpec):
            """Normalizing is the GPU's work there (part of the stand-in's time): skipped."""

            def normalize(self, crops: Any, *, device: Any = None) -> Any:
                return crops

        return OnDevice(crop=self.crop, **settings)

    def token_grid(self, num_frames: int) -> tuple[int, int, int]:
        return (num_frames // 2, 16, 16)

    def tokens(self, clips: Any) -> Any:
        time.sleep(self.seconds)
        return torch.zeros(len(clips), 4, DIM)

    def describe(self) -> dict[str, Any]:
        return {"family": "standin", "model": f"sleep {self.seconds:.3f}s", "dtype": "float32"}


class InlineCommitter:
    """Commits in the caller's thread: the loop as it was before background commits."""

    def __init__(self, writer: Any, *, in_flight: int = 2, on_result: Any = None) -> None:
        self.writer, self.on_result = writer, on_result

    def submit(self, paths: Any, vectors: Any, labels: Any = None, *, extra: Any = None) -> None:
        result = self.writer.append(paths, vectors, labels, extra=extra)
        if self.on_result:
            self.on_result(result)

    def flush(self) -> None:
        pass

    def __enter__(self) -> InlineCommitter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def make_inputs(root: Path, n: int) -> None:
    """``n`` hard links to the real JPEG echo cine (distinct paths, one file on disk)."""
    from pydicom.data import get_testdata_file

    source = Path(str(get_testdata_file("color3d_jpeg_baseline.dcm")))
    for i in range(n):
        folder = root / f"p{10000000 + i}" / "s1"
        folder.mkdir(parents=True)
        os.link(source, folder / f"{i}.dcm")


def decode_rate(root: Path, workers: int, batch: int) -> float:
    from embstore.extraction.dataset import VideoDataset, list_inputs, make_loader
    from embstore.extraction.preprocess import ClipSpec

    spec = ClipSpec(num_frames=16, frame_step=4, crop=256)
    dataset = VideoDataset(root, list_inputs(root), spec, [])
    loader = make_loader(dataset, batch_size=batch, num_workers=workers, pin_memory=False)
    clock = Clock()
    clips = 0
    for item in loader:  # normalizing is the GPU's work (see StandIn.clip_spec)
        clips += len(item["paths"])
        clock(clips, 0)
    return clock.rate()


class Clock:
    """A progress callback that gives the steady rate: clips after the first batch over the
    time since it came (worker start-up and the first decode are not what overlap is about)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.marks.append((time.perf_counter(), done))

    def rate(self) -> float:
        (t0, c0), (t1, c1) = self.marks[0], self.marks[-1]
        return (c1 - c0) / (t1 - t0)


def pipeline_rate(
    root: Path, store: Path, args: argparse.Namespace, seconds: float
) -> tuple[float, float]:
    from embstore.extraction import encoders, extract

    encoders.REGISTRY["standin"] = lambda **kw: StandIn(seconds)
    clock = Clock()
    report = extract(
        root,
        store=store,
        checkpoint="none",
        family="standin",
        device="cpu",
        num_workers=args.workers,
        batch_size=args.batch_size,
        commit_every=args.commit_every,
        progress=clock,
    )
    assert report.added == args.inputs, report.summary()
    return clock.rate(), report.clips / report.seconds  # steady; end to end (start-up, last commit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--commit-every", type=int, default=32)
    parser.add_argument("--standin-ms", default="auto", help="ms per batch, or auto (= decode)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    from embstore.extraction import pipeline

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        make_inputs(root, args.inputs)
        decode_rate(root, args.workers, args.batch_size)  # warm the page cache and imports
        before = decode_rate(root, args.workers, args.batch_size)
        decode = before
        if args.standin_ms == "auto":
            seconds = args.batch_size / decode
        else:
            seconds = float(args.standin_ms) / 1000
        standin = args.batch_size / seconds
        print(f"decode {decode:.1f} clips/s; stand-in {standin:.1f} clips/s", flush=True)
        rows: list[tuple[str, float, float, float]] = []
        for name, committer in (
            ("extract(): background commits, batches in flight", pipeline.BackgroundCommitter),
            ("same, commits inline (the loop before)", InlineCommitter),
        ):
            pipeline.BackgroundCommitter = committer  # type: ignore[misc,assignment]
            rate, whole = pipeline_rate(root, Path(tmp) / f"{len(rows)}.store", args, seconds)
            ratio = rate / min(decode, standin)
            rows.append((name, rate, ratio, whole))
            print(f"{name}: {rate:.1f} clips/s, {ratio:.2f} x min(decode, stand-in)", flush=True)
        after = decode_rate(root, args.workers, args.batch_size)  # a shared machine drifts
        decode = (before + after) / 2
        rows = [(n, r, r / min(decode, standin), w) for n, r, _, w in rows]
    command = "python bench/pipeline_overlap.py " + " ".join(sys.argv[1:])
    lines = [
        "",
        "## Extraction pipeline overlap, CPU stand-in encoder (issue 19)",
        "",
        f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} "
        f"cores (load {os.getloadavg()[0]:.1f}): {args.inputs} links to the real 120-frame "
        f"JPEG echo cine, one 16-frame clip at 256 px each, {args.workers} workers, batch "
        f"{args.batch_size}, a commit every {args.commit_every} videos ({DIM}-d rows). The "
        f"stand-in sleeps {seconds * 1000:.0f} ms per batch (no GIL held). Goal: >= 0.9.",
        "",
        "| what | clips/s (steady) | x min(decode, stand-in) | clips/s end to end |",
        "|---|---|---|---|",
        f"| decode alone (DataLoader), before / after the runs | {before:.1f} / {after:.1f} |"
        " (their mean is the decode rate) | |",
        f"| stand-in encoder alone | {standin:.1f} | | |",
        *(f"| {n} | {r:.1f} | {x:.2f} | {w:.1f} |" for n, r, x, w in rows),
    ]
    with args.results.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

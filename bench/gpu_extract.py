"""GPU extraction benchmark (issue 19): the encoder alone, decode alone, the whole pipeline.

One prepared script for one H100/H200: random-weight V-JEPA2 encoders from ``VJEPA2_PRESETS``,
16 frames x 256 px, inputs = hard links to pydicom-data's ``color3d_jpeg_baseline.dcm`` (120
frames 480x640 JPEG YBR). It prints issue 19's whole table, then the new rows, each with
clips/s and MFU against the chip's dense bf16 peak, and the goals:

- ViT-L pipeline >= 0.85 x the encoder alone; encoder >= 45 % MFU (>= 270 clips/s on an
  H100/H200); ViT-g pipeline >= 0.85 x its encoder alone;
- how far the GPU decoder moves pixels and embeddings from the CPU path (max |d| pixel, relative
  difference of the embedding), and each ``dtype``'s deviation from float32 on the same clips.

Rows print as they are measured (and go to ``--results``), so a run cut short keeps what it
measured; stages past ``--budget-s`` seconds are skipped with a note. Pipeline rates are
steady rates (clips after the first batch over the time since: model loading, worker start-up
and ``torch.compile`` are not in them); the end-to-end rate is shown beside them.

What it needs (installs nothing itself). On the lent H200 (its image has torch 2.11 + cu130,
torchvision 0.26 (nvJPEG), transformers, opencv, pillow, xarray, typer, rich), carry Python 3.12
wheels for what the image lacks, made here in the repo root::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl icechunk==1.1.21 zarr==3.1.6 numcodecs==0.16.6 \\
        donfig google-crc32c pydicom==3.0.2 dask==2026.8.0 jsonschema jsonschema-specifications \\
        referencing rpds-py tblib importlib-metadata lazy-importer
    cp "$(python -c 'from pydicom.data import get_testdata_file as g; \\
        print(g("color3d_jpeg_baseline.dcm"))')" .whl/

and run (``carry: [".whl"]``, timeout 600)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
      && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 \\
      && python3 bench/gpu_extract.py --dicom .whl/color3d_jpeg_baseline.dcm \\
         --results $OUT/gpu_extract.md

Optional: ``torchcodec`` (NVDEC, for videos; the inputs here are DICOMs, so it is not needed).
``--smoke`` runs every stage on the CPU with a tiny model and a CPU stand-in for nvJPEG, to
check the script itself (no numbers worth keeping)::

    python bench/gpu_extract.py --smoke --results /tmp/smoke.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2.0}


class Bench:
    """Shared state: the device, the inputs, the table printed and written as it grows."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp, self.start = args, tmp, time.perf_counter()
        self.smoke = args.smoke
        self.device = torch.device("cpu" if self.smoke else "cuda")
        self.name = "cpu (smoke)" if self.smoke else torch.cuda.get_device_name()
        self.peak = next((v for k, v in PEAK_BF16.items() if k in self.name), float("nan"))
        self.crop = 32 if self.smoke else 256
        self.rows: list[str] = []
        self.results = args.results
        self.inputs = tmp / "in"
        self.flops: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self, what: str) -> bool:
        if self.elapsed() <= self.args.budget_s:
            return False
        self.row(what, "skipped: past --budget-s", "", "")
        return True

    def section(self, title: str) -> None:
        self.emit(["", f"### {title}", "", "| what | clips/s | MFU | note |", "|---|---|---|---|"])

    def row(self, what: str, rate: Any, model: str | None, note: str = "") -> None:
        if isinstance(rate, float):
            mfu = f"{rate * self.flops[model] / self.peak:.1%}" if model else ""
            self.emit([f"| {what} | {rate:.1f} | {mfu} | {note} |"])
        else:
            self.emit([f"| {what} | {rate} | {model or ''} | {note} |"])

    def emit(self, lines: list[str]) -> None:
        for line in lines:
            print(line, flush=True)
        with self.results.open("a") as f:
            f.write("\n".join(lines) + "\n")


def flops_per_clip(config: Any, frames: int) -> float:
    """Forward FLOPs of the V-JEPA2 encoder on one clip (multiply-add = 2 FLOPs)."""
    d, p, t = config.hidden_size, config.patch_size, config.tubelet_size
    n = (frames // t) * (config.crop_size // p) ** 2
    per_layer = (
        2 * n * d * 3 * d
        + 2 * 2 * n * n * d
        + 2 * n * d * d
        + 2 * 2 * n * d * int(config.mlp_ratio * d)
    )
    return config.num_hidden_layers * per_layer + 2 * n * (3 * t * p * p) * d


def config_of(bench: Bench, name: str) -> Any:
    from transformers import VJEPA2Config

    from embstore.extraction.encoders import VJEPA2_PRESETS

    preset = {**VJEPA2_PRESETS[name], **(TINY | {"crop_size": 32} if bench.smoke else {})}
    config = VJEPA2Config(**preset, frames_per_clip=16)
    bench.flops[name] = flops_per_clip(config, 16)
    return config


def build(bench: Bench, name: str, dtype: torch.dtype) -> Any:
    from transformers import VJEPA2Model

    with torch.device(bench.device):
        model = VJEPA2Model(config_of(bench, name)).eval()
    return model.to(dtype)


def sync(bench: Bench) -> None:
    if not bench.smoke:
        torch.cuda.synchronize()


# ------------------------------------------------------------------------ encoder alone


def encoder_rate(bench: Bench, name: str, batch: int, mode: str) -> float:
    """Clips/s of the encoder on ready batches; ``mode``: autocast, bf16, fp16, +compile."""
    dtype = {"autocast": torch.float32, "fp16": torch.float16}.get(mode, torch.bfloat16)
    model = build(bench, name, dtype)
    if "cudagraphs" in mode:  # CUDA graphs for the fixed batch shape
        forward = torch.compile(model, mode="reduce-overhead")
    else:
        forward = torch.compile(model) if "compile" in mode else model
    batch = 2 if bench.smoke else batch
    x = torch.randn(batch, 16, 3, bench.crop, bench.crop, device=bench.device, dtype=dtype)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "autocast")
    reps = 2 if bench.smoke else 10
    with torch.inference_mode(), autocast:
        for _ in range(3):
            forward(pixel_values_videos=x, skip_predictor=True)
        sync(bench)
        start = time.perf_counter()
        for _ in range(reps):
            forward(pixel_values_videos=x, skip_predictor=True)
        sync(bench)
    del model, forward
    torch.cuda.empty_cache() if not bench.smoke else None
    return reps * batch / (time.perf_counter() - start)


#: (key, model, batch, mode, core): core rows run first; the others after the deviations.
ENCODER_ROWS = (
    ("L32ac", "vitl", 32, "autocast", True),
    ("L64bf", "vitl", 64, "bf16", True),
    ("L64bfc", "vitl", 64, "bf16+compile", False),
    ("H32ac", "vith", 32, "autocast", True),
    ("g32ac", "vitg", 32, "autocast", True),
    ("g64bf", "vitg", 64, "bf16", True),
    ("L64fp", "vitl", 64, "fp16", False),
    ("L128bf", "vitl", 128, "bf16", False),
    ("L64bfg", "vitl", 64, "bf16+compile-cudagraphs", False),
    ("g64bfc", "vitg", 64, "bf16+compile", False),
)


def encoders_alone(bench: Bench, rates: dict[str, float], core: bool) -> None:
    bench.section("Encoder alone (ready batches on the GPU)" + ("" if core else ", more"))
    for key, name, batch, mode, first in ENCODER_ROWS:
        what = f"encoder {name} alone, batch {batch}, {mode}"
        if first != core or ("compile" in mode and bench.args.no_compile):
            continue
        if not bench.over_budget(what):
            rates[key] = encoder_rate(bench, name, batch, mode)
            bench.row(what, rates[key], name)


# ------------------------------------------------------------------------ decode alone


def make_inputs(bench: Bench, n: int) -> None:
    from pydicom.data import get_testdata_file

    source = Path(str(bench.args.dicom or get_testdata_file("color3d_jpeg_baseline.dcm")))
    for i in range(n):
        folder = bench.inputs / f"p{10000000 + i}" / "s1"
        folder.mkdir(parents=True)
        os.link(source, folder / f"{i}.dcm")


def pil_decoder(data: list[Any]) -> list[Any]:
    """The smoke run's stand-in for nvJPEG (CPU, libjpeg-turbo)."""
    from PIL import Image

    out = []
    for tensor in data:
        with Image.open(BytesIO(tensor.numpy().tobytes())) as image:
            out.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    return out


def jpeg_decoder(bench: Bench) -> Callable[[list[Any]], list[Any]]:
    from embstore.extraction.gpu import gpu_jpeg_decoder

    return pil_decoder if bench.smoke else gpu_jpeg_decoder(bench.device)


def decode_rate(bench: Bench, workers: int, decoder: str) -> float:
    """Clips/s of the DataLoader (and, for the GPU decoder, nvJPEG + resize + normalize)."""
    from embstore.extraction.dataset import VideoDataset, list_inputs, make_loader
    from embstore.extraction.gpu import decode_jpeg_items
    from embstore.extraction.preprocess import ClipSpec

    spec = ClipSpec(num_frames=16, frame_step=4, crop=bench.crop)
    dataset = VideoDataset(bench.inputs, list_inputs(bench.inputs), spec, [], decoder=decoder)
    loader = make_loader(
        dataset, batch_size=bench.args.batch_size, num_workers=workers, pin_memory=not bench.smoke
    )
    decode, clips, first = jpeg_decoder(bench), 0, None
    for batch in loader:
        if decoder == "gpu":
            payloads = [p for kind, p in batch["items"] if kind == "jpeg"]
            crops = torch.stack(decode_jpeg_items(payloads, spec.crop, decode))
        else:
            crops = batch["clips"].to(bench.device, non_blocking=True)
        spec.normalize(crops, device=bench.device)
        if first is None:
            sync(bench)
            first = time.perf_counter()
        else:
            clips += len(batch["paths"])
    sync(bench)
    return clips / (time.perf_counter() - first) if first and clips else float("nan")


def decoding_alone(bench: Bench, core: bool) -> None:
    bench.section("Decode + resize only (no encoder)" + ("" if core else ", more"))
    for workers in bench.args.decode_workers:
        what = f"decode + resize only, CPU decoder, DataLoader with {workers} workers"
        if (workers == bench.args.workers) == core and not bench.over_budget(what):
            bench.row(what, decode_rate(bench, workers, "cpu"), None)
    what = f"decode only, GPU decoder (nvJPEG + torch resize), {bench.args.workers} workers"
    if core and not bench.over_budget(what):
        note = "workers read bytes; normalize on the GPU"
        bench.row(what, decode_rate(bench, bench.args.workers, "gpu"), None, note)


# ------------------------------------------------------------------------ whole pipeline


def save_checkpoint(bench: Bench, name: str) -> Path:
    """A random-weight encoder saved as a Hugging Face folder (bf16: half the bytes to load)."""
    folder = bench.tmp / name
    if not folder.exists():
        build(bench, name, torch.bfloat16).save_pretrained(folder)
    return folder


class Clock:
    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.marks.append((time.perf_counter(), done))

    def rate(self) -> float:
        (t0, c0), (t1, c1) = self.marks[0], self.marks[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan")


def pipeline_rate(bench: Bench, name: str, **settings: Any) -> tuple[float, float]:
    """(steady, end-to-end) clips/s of ``extract()`` on the inputs."""
    from embstore.extraction import extract, gpu

    if bench.smoke and settings.get("decoder") == "gpu":  # nvJPEG's CPU stand-in
        gpu.gpu_jpeg_decoder = lambda device: pil_decoder  # type: ignore[assignment]
        gpu.choose_decoder = lambda requested, device: requested  # type: ignore[assignment]
        from embstore.extraction import pipeline

        pipeline.choose_decoder = gpu.choose_decoder  # type: ignore[assignment]
    store = bench.tmp / f"s{len(list(bench.tmp.glob('s*.store')))}.store"
    clock = Clock()
    options = {"num_workers": bench.args.workers, "batch_size": bench.args.batch_size}
    options.update(settings)
    if bench.smoke:
        options.update(batch_size=2, num_workers=2, compile=False)
    report = extract(
        bench.inputs,
        store=store,
        checkpoint=str(save_checkpoint(bench, name)),
        device=str(bench.device),
        num_frames=16,
        frame_step=4,
        progress=clock,
        **options,
    )
    return clock.rate(), report.clips / report.seconds


def pipelines(bench: Bench, alone: dict[str, float], core: bool) -> None:
    title = "extract(), the whole pipeline (background commits, batches in flight)"
    bench.section(title + ("" if core else ", more"))
    w, many = bench.args.workers, bench.args.inputs + 1
    runs: list[tuple[str, str, dict[str, Any], str | None, bool]] = [
        (
            f"extract() {w} workers, batch 32, bf16 autocast, CPU decoder",
            "vitl",
            {"batch_size": 32, "dtype": "bfloat16-autocast", "decoder": "cpu"},
            "L32ac",
            True,
        ),
        (
            f"extract() {w} workers, batch 64, bf16 autocast, CPU decoder",
            "vitl",
            {"batch_size": 64, "dtype": "bfloat16-autocast", "decoder": "cpu"},
            "L32ac",
            False,
        ),
        (
            f"extract() {w + 1} workers, batch 32, bf16 autocast, CPU decoder, commit_every 256",
            "vitl",
            {"num_workers": w + 1, "dtype": "bfloat16-autocast", "decoder": "cpu"},
            "L32ac",
            True,
        ),
        (
            f"same, {w + 1} workers, commit_every never",
            "vitl",
            {
                "num_workers": w + 1,
                "dtype": "bfloat16-autocast",
                "decoder": "cpu",
                "commit_every": many,
            },
            "L32ac",
            True,
        ),
        (
            "extract() batch 64, bf16 weights, CPU decoder",
            "vitl",
            {"batch_size": 64, "dtype": "bfloat16", "decoder": "cpu"},
            "L64bf",
            False,
        ),
        (
            "extract() batch 64, bf16 weights, GPU decoder (nvJPEG)",
            "vitl",
            {"batch_size": 64, "dtype": "bfloat16", "decoder": "gpu"},
            "L64bf",
            True,
        ),
        (
            "extract() batch 64, bf16 weights, GPU decoder + torch.compile",
            "vitl",
            {"batch_size": 64, "dtype": "bfloat16", "decoder": "gpu", "compile": True},
            "L64bfc",
            False,
        ),
        (
            "extract() ViT-g batch 64, bf16 weights, GPU decoder",
            "vitg",
            {"batch_size": 64, "dtype": "bfloat16", "decoder": "gpu"},
            "g64bf",
            True,
        ),
    ]
    for what, name, settings, versus, first in runs:
        if first != core or (settings.get("compile") and bench.args.no_compile):
            continue
        if bench.over_budget(what):
            continue
        steady, whole = pipeline_rate(bench, name, **settings)
        ratio = (
            f"{steady / alone[versus]:.2f} x encoder alone ({versus})" if versus in alone else ""
        )
        bench.row(what, steady, name, f"{ratio}; end to end {whole:.1f} clips/s")
    count = 1 if bench.smoke else torch.cuda.device_count()
    if core:
        return
    if count > 1 and not bench.over_budget("devices"):
        devices = tuple(range(count))
        steady, whole = pipeline_rate(bench, "vitl", devices=devices, decoder="gpu")
        bench.row(f"extract() devices={devices}", whole, "vitl", "end to end, all processes")
    else:
        bench.row("extract() devices=0,1,...", "n/a", None, f"{count} GPU on this machine")


# ------------------------------------------------------------------------ deviations


def deviations(bench: Bench) -> None:
    """GPU decoder vs CPU path (pixels, embedding) and each dtype vs float32 (embedding)."""
    import pydicom

    from embstore.extraction.dataset import VideoDataset, list_inputs
    from embstore.extraction.gpu import decode_jpeg_items, jpeg_frames
    from embstore.extraction.preprocess import ClipSpec

    bench.emit(["", "### Deviations from the CPU path and from float32", ""])
    spec = ClipSpec(num_frames=16, frame_step=4, crop=bench.crop)
    path = next(iter(sorted(bench.inputs.rglob("*.dcm"))))
    ds = pydicom.dcmread(path)
    frames = int(ds.NumberOfFrames)
    data, order = jpeg_frames(ds, frames, np.arange(16))
    decode = jpeg_decoder(bench)
    flat = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]
    gpu_frames = torch.stack(decode(flat)).permute(0, 2, 3, 1).cpu().numpy().astype(int)
    cpu_frames = ds.pixel_array[:16].astype(int)  # pydicom's own RGB
    lines = [_diff("raw frames, nvJPEG vs pydicom RGB (16 frames)", gpu_frames, cpu_frames)]
    # clips at four offsets of the cine, through each path
    starts = (0, 20, 40, 56)
    cpu_item = VideoDataset(bench.inputs, list_inputs(bench.inputs)[:1], spec, [])
    cpu_crops, gpu_crops = [], []
    for s in starts:
        wanted = s + np.arange(16) * 3
        cpu_item._frames_wanted = lambda n, w=wanted: w  # type: ignore[method-assign,misc]
        cpu_crops.append(cpu_item[0]["clips"])
        gpu_crops.append(decode_jpeg_items([jpeg_frames(ds, frames, wanted)], spec.crop, decode)[0])
    a, b = torch.stack(cpu_crops), torch.stack(gpu_crops).cpu()
    lines.append(_diff("256 px crops, GPU path vs CPU path", b.numpy(), a.numpy()))
    reference = _embed(bench, a, torch.float32, False)
    lines.append(
        _rel(
            "embedding, GPU-decoded vs CPU-decoded clips (float32 weights)",
            _embed(bench, b, torch.float32, False),
            reference,
        )
    )
    for label, dtype, autocast in (
        ("bfloat16 weights", torch.bfloat16, False),
        ("float16 weights", torch.float16, False),
        ("float32 weights + bf16 autocast", torch.float32, True),
    ):
        if bench.smoke and dtype == torch.float16:
            continue
        lines.append(
            _rel(f"embedding, {label} vs float32", _embed(bench, a, dtype, autocast), reference)
        )
    bench.emit(["| what | deviation |", "|---|---|", *lines])


def _diff(what: str, x: np.ndarray, y: np.ndarray) -> str:
    d = np.abs(x.astype(int) - y.astype(int))
    return f"| {what} | max {d.max()}, mean {d.mean():.3f}, {np.mean(d > 0):.2%} of values differ |"


def _rel(what: str, x: Any, y: Any) -> str:
    rel = (x - y).norm(dim=1) / y.norm(dim=1)
    return f"| {what} | relative difference mean {rel.mean():.2e}, max {rel.max():.2e} |"


_MODELS: dict[Any, Any] = {}


def _embed(bench: Bench, crops: Any, dtype: torch.dtype, autocast: bool) -> Any:
    """Mean-pooled ViT-L embeddings of uint8 crops (one fixed random model, cast per dtype)."""
    from embstore.extraction.preprocess import ClipSpec

    if "base" not in _MODELS:
        torch.manual_seed(0)
        _MODELS["base"] = build(bench, "vitl", torch.float32)
    model = _MODELS["base"] if dtype == torch.float32 else _copy(_MODELS["base"], dtype)
    spec = ClipSpec(num_frames=16, frame_step=4, crop=bench.crop)
    x = spec.normalize(crops.to(bench.device), device=bench.device).to(dtype)
    enabled = autocast and not bench.smoke
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled):
        out = model(pixel_values_videos=x, skip_predictor=True).last_hidden_state
    return out.float().mean(dim=1).cpu()


def _copy(model: Any, dtype: torch.dtype) -> Any:
    import copy

    return copy.deepcopy(model).to(dtype)


# ------------------------------------------------------------------------ main


NEEDED = ("icechunk", "zarr", "numcodecs", "pydicom", "dask", "jsonschema", "cv2", "PIL")


def preflight(smoke: bool) -> None:
    """One line naming what is missing (the docstring says how to carry it), before any work."""
    import importlib

    missing = []
    for name in (*NEEDED, *(() if smoke else ("torchvision.io",))):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if not smoke and not torch.cuda.is_available():
        missing.append("a CUDA device")
    if missing:
        sys.exit(f"gpu_extract: missing {', '.join(missing)} (see the docstring)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--decode-workers", default="8,14,16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dicom", help="the test DICOM (default: from pydicom-data)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    parser.add_argument("--budget-s", type=float, default=480, help="skip stages after this")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: check the script")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    args.decode_workers = [int(w) for w in args.decode_workers.split(",")]
    preflight(args.smoke)
    if args.smoke:
        args.inputs, args.workers, args.decode_workers, args.batch_size = 6, 2, [2], 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args, Path(tmp))
        command = "python bench/gpu_extract.py " + " ".join(sys.argv[1:])
        bench.emit(
            [
                "",
                f"## GPU extraction ({bench.name}, issue 19)",
                "",
                f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')}: torch "
                f"{torch.__version__}, {os.cpu_count()} cores, {args.inputs} links to the "
                f"120-frame 480x640 JPEG echo cine, 16 frames x {bench.crop} px, random "
                f"weights; MFU against {bench.peak / 1e12:.0f} TFLOP/s dense bf16. Goals: ViT-L "
                "pipeline >= 0.85 x the encoder alone, encoder >= 45 % MFU; ViT-g pipeline >= 0.85 "
                "x its encoder alone.",
            ]
        )
        make_inputs(bench, args.inputs)
        alone: dict[str, float] = {}
        encoders_alone(bench, alone, core=True)  # issue 19's table first, then the rest
        decoding_alone(bench, core=True)
        pipelines(bench, alone, core=True)
        deviations(bench)
        encoders_alone(bench, alone, core=False)
        decoding_alone(bench, core=False)
        pipelines(bench, alone, core=False)
        bench.emit(["", f"(whole run: {bench.elapsed():.0f} s)"])


if __name__ == "__main__":
    main()

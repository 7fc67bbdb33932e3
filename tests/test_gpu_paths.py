"""The GPU paths without a GPU: their choice and fallback, their wiring (with CPU stand-ins for
nvJPEG), dtypes, one process per device, and a DataLoader that survives what the parent did."""

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import types
import zlib
from io import BytesIO

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

import embstore
from embstore.errors import EmbstoreError
from embstore.extraction import ClipSpec, extract, gpu, pipeline
from embstore.extraction.dataset import VideoDataset, cap_workers, collate, list_inputs
from embstore.extraction.devices import device_shards, pick_device
from embstore.extraction.encoders import resolve_dtype
from embstore.store.views import provenance
from embstore.testing import make_dicom, make_tiny_vjepa2

JPEG = "color3d_jpeg_baseline.dcm"  # 120 frames 480x640 JPEG Baseline YBR_FULL_422


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_vjepa2(tmp_path_factory.mktemp("model"))


@pytest.fixture
def tree(tmp_path):
    """The real JPEG cine twice and an uncompressed cine (decoded on the CPU either way)."""
    for i in range(2):
        folder = tmp_path / "in" / "p10" / f"p1000000{i}" / "s1"
        folder.mkdir(parents=True)
        shutil.copy(get_testdata_file(JPEG), folder / f"{i}.dcm")
    folder = tmp_path / "in" / "p10" / "p10000002" / "s1"
    folder.mkdir(parents=True)
    make_dicom(folder / "2.dcm", frames=5, seed=2)
    return tmp_path / "in"


def _run(tree, store, tiny, **changes):
    settings = {
        "checkpoint": str(tiny["original"]),
        "model": str(tiny["config"]),
        "num_frames": 4,
        "frame_step": 2,
        "num_workers": 0,
        "device": "cpu",
        "layout": "mimic-echo",
        "batch_size": 3,
    }
    return extract(tree, store=store, **{**settings, **changes})


def _cuda_device():
    return torch.device("cuda")  # a device object needs no GPU


def test_without_cuda_the_cpu_decoder_is_chosen_and_gpu_is_refused():
    assert gpu.choose_decoder("auto", torch.device("cpu")) == "cpu"
    assert gpu.choose_decoder("cpu", _cuda_device()) == "cpu"
    with pytest.raises(EmbstoreError, match="CUDA"):
        gpu.choose_decoder("gpu", torch.device("cpu"))
    with pytest.raises(EmbstoreError, match="no CUDA"):
        pick_device("cuda", ()) if not torch.cuda.is_available() else pytest.skip("has CUDA")


def test_cuda_without_torchvision_falls_back_to_the_cpu_with_one_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    with caplog.at_level(logging.WARNING, logger="embstore.extraction.gpu"):
        assert gpu.choose_decoder("auto", _cuda_device()) == "cpu"
    assert len(caplog.records) == 1 and "torchvision" in caplog.records[0].getMessage()
    with pytest.raises(EmbstoreError, match="torchvision"):
        gpu.choose_decoder("gpu", _cuda_device())


def test_cuda_with_torchvision_takes_the_gpu_decoder(monkeypatch):
    io = types.ModuleType("torchvision.io")
    io.decode_jpeg = lambda *a, **k: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.io", io)
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # videos stay on the CPU
    assert gpu.choose_decoder("auto", _cuda_device()) == "gpu"


def _pil_decoder(data):
    """Stands in for batched nvJPEG on the CPU: bytes tensors -> (3, H, W) uint8."""
    from PIL import Image

    out = []
    for tensor in data:
        with Image.open(BytesIO(tensor.numpy().tobytes())) as image:
            out.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    return out


def test_gpu_decode_path_wiring_matches_the_cpu_path(tree, tmp_path, tiny, monkeypatch):
    """Workers hand over JPEG bytes; the main process decodes them in one batch and resizes in
    torch. With libjpeg standing in for nvJPEG, pixels are within 1 level of the CPU path and
    the embeddings agree closely; the uncompressed cine takes the CPU path in the same batch."""
    spec = ClipSpec(num_frames=4, frame_step=2, crop=32)
    dataset = VideoDataset(tree, list_inputs(tree), spec, [], decoder="gpu")
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert [kind for kind, _ in batch["items"]] == ["jpeg", "jpeg", "crops"]
    data, order = batch["items"][0][1]
    assert len(data) == 4 and all(d[:2] == b"\xff\xd8" for d in data)  # raw JPEG frames
    on_device = gpu.decode_jpeg_items([batch["items"][0][1]], 32, _pil_decoder)[0]
    cpu = VideoDataset(tree, list_inputs(tree), spec, [])[0]["clips"]
    assert on_device.shape == cpu.shape
    assert (on_device.int() - cpu.int()).abs().max() <= 1

    monkeypatch.setattr(pipeline, "choose_decoder", lambda requested, device: "gpu")
    monkeypatch.setattr(gpu, "gpu_jpeg_decoder", lambda device: _pil_decoder)
    _run(tree, tmp_path / "g.zarr", tiny)
    _run(tree, tmp_path / "c.zarr", tiny, decoder="cpu")
    g, c = embstore.open(tmp_path / "g.zarr"), embstore.open(tmp_path / "c.zarr")
    assert provenance(g)["extraction"]["decoder"].startswith("gpu")
    rel = np.linalg.norm(g.embedding.values - c.embedding.values, axis=1)
    assert (rel / np.linalg.norm(c.embedding.values, axis=1)).max() < 0.02
    np.testing.assert_array_equal(g.embedding.values[2], c.embedding.values[2])  # CPU-decoded


def test_a_store_keeps_one_decoder(tree, tmp_path, tiny, monkeypatch):
    _run(tree, tmp_path / "s.zarr", tiny, limit=1)
    monkeypatch.setattr(pipeline, "choose_decoder", lambda requested, device: "gpu")
    with pytest.raises(embstore.StoreError, match="decoder"):
        _run(tree, tmp_path / "s.zarr", tiny)


def test_dtypes_resolve_per_device_and_bfloat16_weights_stay_close(tree, tmp_path, tiny):
    cpu, cuda = torch.device("cpu"), _cuda_device()
    assert resolve_dtype("auto", cpu) == (torch.float32, False)
    assert resolve_dtype("auto", cuda) == (torch.bfloat16, False)  # weights, not autocast
    assert resolve_dtype("bfloat16-autocast", cuda) == (torch.float32, True)
    assert resolve_dtype("float16", cuda) == (torch.float16, False)
    _run(tree, tmp_path / "f.zarr", tiny, limit=1, decoder="cpu")
    _run(tree, tmp_path / "b.zarr", tiny, limit=1, decoder="cpu", dtype="bfloat16")
    f, b = embstore.open(tmp_path / "f.zarr"), embstore.open(tmp_path / "b.zarr")
    assert provenance(b)["extraction"]["dtype"] == "bfloat16"
    a, e = f.embedding.values[0], b.embedding.values[0]
    measured = np.linalg.norm(a - e) / np.linalg.norm(a)
    assert 0 < measured < 0.05
    deviation = provenance(b)["provenance"][-1]["dtype_deviation"]  # recorded by the run
    assert deviation["clips"] == 1
    assert deviation["relative_difference_max"] == pytest.approx(measured, rel=0.2)
    assert "dtype_deviation" not in provenance(f)["provenance"][-1]  # float32: nothing to say


def test_compile_wraps_the_encoder(tree, tmp_path, tiny, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    _run(tree, tmp_path / "s.zarr", tiny, limit=1, compile=True)
    assert len(compiled) == 1
    assert provenance(embstore.open(tmp_path / "s.zarr"))["extraction"]["compiled"] is True


def test_device_shards_cover_the_run_exactly_once():
    paths = [f"p{i}/s/{i}.dcm" for i in range(500)]

    def of(shard):
        return {p for p in paths if zlib.crc32(p.encode()) % shard[1] == shard[0]}

    for outer in (None, (1, 3)):
        parts = [of(s) for s in device_shards(outer, 4)]
        whole = set(paths) if outer is None else of(outer)
        assert set().union(*parts) == whole and sum(map(len, parts)) == len(whole)
    if not torch.cuda.is_available():
        with pytest.raises(EmbstoreError, match="0 CUDA"):
            pick_device(None, (0, 1))


def test_workers_are_capped_to_the_cpus_with_one_line(caplog, monkeypatch):
    from embstore.extraction import dataset

    monkeypatch.setattr(dataset, "available_cpus", lambda: 2)
    with caplog.at_level(logging.WARNING):
        assert cap_workers(4) == 2 and cap_workers(2) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "num_workers=4 capped to 2, the CPUs available"
    ]


def _script(body):
    return textwrap.dedent(body)


@pytest.mark.slow
def test_more_workers_than_cpus_prints_no_raw_dataloader_warning(tree, tmp_path, tiny):
    workers = len(os.sched_getaffinity(0)) + 2
    args = [sys.executable, "-c", "import cli; cli.main()", "extract", str(tree)]
    args += ["--store", str(tmp_path / "s.zarr"), "--checkpoint", str(tiny["original"])]
    args += ["--model", str(tiny["config"]), "--num-frames", "4", "--frame-step", "2"]
    args += ["--device", "cpu", "--num-workers", str(workers), "--limit", "1"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "capped to" in result.stderr and "UserWarning" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_a_clip_decoded_in_the_parent_does_not_break_forked_workers(tree, tmp_path, tiny):
    """OpenCV's thread pool, once used in the parent (8 threads, as on a 16-core node), hangs
    or crashes forked DataLoader workers: the loader must start them safely."""
    script = _script(
        f"""
        import sys
        import cv2
        from pathlib import Path
        from embstore.extraction import ClipSpec, extract
        from embstore.extraction.decode import read_frames
        cv2.setNumThreads(8)
        frames, _ = read_frames(Path({str(tree)!r}) / "p10/p10000000/s1/0.dcm")
        ClipSpec(crop=256).resize_frames(frames[:16])  # OpenCV's pool runs in the parent
        report = extract(
            {str(tree)!r}, store={str(tmp_path / "s.zarr")!r}, checkpoint={str(tiny["original"])!r},
            model={str(tiny["config"])!r}, num_frames=4, frame_step=2, device="cpu",
            num_workers=2, batch_size=1, layout="mimic-echo",
        )
        print("added", report.added)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "added 3" in result.stdout

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

import embstore
from embstore.dicom import read_dicom_frames, write_mp4
from embstore.errors import StoreError
from embstore.extract import extract, list_inputs, parse_shard, shard_of
from embstore.extractors import REGISTRY, VJEPA2Settings, load_vjepa2
from embstore.samples import make_dicom, make_tiny_vjepa2
from embstore.video import ClipSpec, preprocess, read_video
from embstore.views import provenance

SECRET = "Zyxwvut^Secretname"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_vjepa2(tmp_path_factory.mktemp("model"))


@pytest.fixture
def echo_tree(tmp_path):
    """MIMIC-style tree: synthetic cines of every colour model, two real ultrasound DICOMs
    nobody here wrote (pydicom-data's 120-frame JPEG Baseline YBR_FULL_422 cine, pydicom's
    YBR example), a still, a video with odd sizes, and a broken file."""
    root = tmp_path / "files" / "p10"
    for s, photometric in enumerate(["RGB", "YBR_FULL", "MONOCHROME2", "PALETTE COLOR"]):
        folder = root / f"p1000000{s}" / f"s9000000{s}"
        folder.mkdir(parents=True)
        name = f"9000000{s}_0001.dcm"
        make_dicom(
            folder / name, photometric=photometric, frames=3 + s, patient_name=SECRET, seed=s
        )
    real = root / "p10000008" / "s90000008"
    real.mkdir(parents=True)
    shutil.copy(get_testdata_file("color3d_jpeg_baseline.dcm"), real / "90000008_0001.dcm")
    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), real / "90000008_0002")  # no suffix
    folder = root / "p10000009" / "s90000009"
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "90000009_0001.dcm")
    video = np.random.default_rng(0).integers(0, 255, (9, 37, 51, 3), dtype=np.uint8)
    write_mp4(video, folder / "90000009_0002.mp4", fps=30)
    (folder / "90000009_0003.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"truncated")
    return tmp_path / "files"


def run(tree, store, tiny, **kwargs):
    args = {
        "checkpoint": tiny["original"],
        "model": str(tiny["config"]),
        "num_frames": 4,
        "frame_step": 1,
        "num_workers": 0,
        "device": "cpu",
        "layout": "mimic-echo",
        "batch_size": 2,
        **kwargs,
    }
    return extract(tree, store=store, **args)


def direct(model, frames, spec):
    with torch.inference_mode():
        clips = preprocess(frames, spec)
        return (
            model(pixel_values_videos=clips, skip_predictor=True)
            .last_hidden_state.mean(dim=1)
            .mean(dim=0)
            .numpy()
        )


def test_both_checkpoint_formats_give_the_embeddings_of_a_direct_forward(echo_tree, tmp_path, tiny):
    a = run(echo_tree, tmp_path / "a.zarr", tiny)
    run(echo_tree, tmp_path / "b.zarr", {**tiny, "original": tiny["hf"]}, model=None)
    assert (a.added, len(a.stills), len(a.bad)) == (7, 1, 1)
    da, db = embstore.open(tmp_path / "a.zarr"), embstore.open(tmp_path / "b.zarr")
    assert da.path.values.tolist() == db.path.values.tolist()
    np.testing.assert_allclose(da.embedding.values, db.embedding.values, rtol=1e-5, atol=1e-6)
    model = load_vjepa2(VJEPA2Settings(checkpoint=str(tiny["hf"])))
    spec = ClipSpec(num_frames=4, frame_step=1, crop=32)
    for i, rel in enumerate(da.path.values):
        file = echo_tree / rel
        frames = read_video(file)[0] if rel.endswith(".mp4") else read_dicom_frames(file)[0]
        np.testing.assert_allclose(
            da.embedding.values[i], direct(model, frames, spec), rtol=1e-4, atol=1e-5
        )
    assert da.subject.values[0] == "p10000000" and da.study.values[0] == "s90000000"


def test_preprocessing_on_the_device_matches_the_workers(echo_tree, tmp_path, tiny):
    run(echo_tree, tmp_path / "w.zarr", tiny, preprocess_on="workers", num_workers=1)
    run(echo_tree, tmp_path / "d.zarr", tiny, preprocess_on="device")
    w, d = embstore.open(tmp_path / "w.zarr"), embstore.open(tmp_path / "d.zarr")
    np.testing.assert_allclose(w.embedding.values, d.embedding.values, rtol=1e-5, atol=1e-6)


def test_checkpoint_key_encoder_is_a_different_model(echo_tree, tmp_path, tiny):
    run(echo_tree, tmp_path / "t.zarr", tiny, limit=1)
    run(echo_tree, tmp_path / "e.zarr", tiny, limit=1, checkpoint_key="encoder")
    t, e = embstore.open(tmp_path / "t.zarr"), embstore.open(tmp_path / "e.zarr")
    assert not np.allclose(t.embedding.values, e.embedding.values)
    assert provenance(t)["extraction"]["checkpoint_key"] == "target_encoder"


def test_everything_that_defines_the_numbers_is_recorded_and_enforced(echo_tree, tmp_path, tiny):
    run(echo_tree, tmp_path / "s.zarr", tiny, clips=2)
    meta = provenance(embstore.open(tmp_path / "s.zarr"))
    ex = meta["extraction"]
    assert ex["checkpoint_sha256"] == hashlib.sha256(tiny["original"].read_bytes()).hexdigest()
    assert ex["clip"] == {
        "num_frames": 4,
        "frame_step": 1,
        "clips": 2,
        "crop": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert (
        ex["architecture"]["hidden_size"] == 32
        and ex["dtype"] == "float32"
        and "torch" in ex["versions"]
    )
    entry = meta["provenance"][-1]
    assert entry["action"] == "extract" and entry["stills"] == 1 and entry["bad_count"] == 1
    assert "90000009_0003.dcm" in entry["bad"][0]
    with pytest.raises(StoreError, match="frame_step"):
        run(echo_tree, tmp_path / "s.zarr", tiny, clips=2, frame_step=2)


def test_no_header_bytes_reach_the_store_unless_allow_listed(echo_tree, tmp_path, tiny):
    store = tmp_path / "s.zarr"
    run(echo_tree, store, tiny, dicom_tags=["Manufacturer"])
    assert embstore.open(store).Manufacturer.values.tolist()[:4] == ["embstore-test"] * 4
    for secret in (SECRET, "Zyxwvut", "PID-123456", "19700101"):
        for file in store.rglob("*"):
            if file.is_file():
                assert secret.encode() not in file.read_bytes(), f"{secret} leaked into {file}"


def test_resume_after_a_partial_run_adds_only_the_rest(echo_tree, tmp_path, tiny):
    first = run(echo_tree, tmp_path / "s.zarr", tiny, limit=2)
    second = run(echo_tree, tmp_path / "s.zarr", tiny)
    assert (first.added, second.added, second.already_stored) == (2, 5, 2)
    paths = embstore.open(tmp_path / "s.zarr").path.values.tolist()
    assert len(paths) == len(set(paths)) == 7


def test_shard_split_is_deterministic_and_complete(echo_tree):
    paths = list_inputs(echo_tree)
    parts = [[p for p in paths if shard_of(p, 3) == i] for i in range(3)]
    assert sorted(sum(parts, [])) == paths and parse_shard("2/3") == (2, 3)
    assert "vjepa2" in REGISTRY


CLI = [sys.executable, "-c", "import cli; cli.main()"]


def _cli_args(tree, store, tiny, *extra):
    return [
        *CLI,
        "extract",
        str(tree),
        "--store",
        str(store),
        "--checkpoint",
        str(tiny["original"]),
        "--model",
        str(tiny["config"]),
        "--num-frames",
        "4",
        "--frame-step",
        "1",
        "--device",
        "cpu",
        "--num-workers",
        "1",
        "--layout",
        "mimic-echo",
        "--quiet",
        *extra,
    ]


@pytest.mark.slow
def test_three_concurrent_shards_store_every_path_exactly_once(echo_tree, tmp_path, tiny):
    for i in range(6):  # more inputs, so every shard has work
        folder = echo_tree / "p11" / f"p1100000{i}" / "s1"
        folder.mkdir(parents=True)
        make_dicom(folder / "x.dcm", frames=4, seed=10 + i)
    store = tmp_path / "s.zarr"
    procs = [
        subprocess.Popen(
            _cli_args(echo_tree, store, tiny, "--shard", f"{i}/3", "--commit-every", "1")
        )
        for i in range(3)
    ]
    codes = [p.wait(180) for p in procs]
    assert codes == [0, 0, 0]
    paths = embstore.open(store).path.values.tolist()
    assert len(paths) == len(set(paths)) == 13  # 12 cines, 1 video; no still, no broken file
    rerun = subprocess.run(
        _cli_args(echo_tree, store, tiny), capture_output=True, text=True, timeout=180
    )
    assert rerun.returncode == 0 and embstore.open(store).sizes["sample"] == 13


@pytest.mark.slow
def test_kill_minus_9_mid_extraction_then_rerun_completes(echo_tree, tmp_path, tiny):
    for i in range(10):
        folder = echo_tree / "p12" / f"p1200000{i}" / "s1"
        folder.mkdir(parents=True)
        make_dicom(folder / "x.dcm", frames=4, seed=20 + i)
    store = tmp_path / "s.zarr"
    proc = subprocess.Popen(
        _cli_args(echo_tree, store, tiny, "--commit-every", "1", "--batch-size", "1")
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if embstore.store.is_store(store) and embstore.store.read_state(store).rows >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    partial = embstore.open(store).sizes["sample"]
    assert 3 <= partial < 17
    subprocess.run(_cli_args(echo_tree, store, tiny), check=True, timeout=180)
    paths = embstore.open(store).path.values.tolist()
    assert len(paths) == len(set(paths)) == 17 and embstore.validate(store).ok

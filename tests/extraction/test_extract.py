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
from typer.testing import CliRunner

import embstore
from cli import app, parse_shard
from embstore.errors import BadInputError, EmbstoreError, StoreError
from embstore.extraction import ClipSpec, convert_dicom, extract
from embstore.extraction.convert import write_mp4
from embstore.extraction.dataset import list_inputs, shard_of
from embstore.extraction.decode import read_frames
from embstore.extraction.encoders import REGISTRY, VJEPA2Settings, load_vjepa2
from embstore.extraction.pipeline import pool_tokens
from embstore.store.views import provenance
from embstore.testing import MALFORMED, make_dicom, make_dicom_with_secret, make_tiny_vjepa2

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


def direct_tokens(model, file, spec):
    """Tokens ``(clips, L, D)`` of a forward pass on the whole decoded file, picked and
    preprocessed by hand."""
    frames = read_frames(file)[0]
    picked = frames[spec.indices(len(frames)).ravel()]
    clips = spec.normalize(torch.from_numpy(spec.resize_frames(picked)))
    with torch.inference_mode():
        return model(pixel_values_videos=clips, skip_predictor=True).last_hidden_state


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
        expected = direct_tokens(model, echo_tree / rel, spec).mean(dim=1).mean(dim=0).numpy()
        np.testing.assert_allclose(da.embedding.values[i], expected, rtol=1e-4, atol=1e-5)
    assert da.subject.values[0] == "p10000000" and da.study.values[0] == "s90000000"


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
    assert (ex["sampling"], ex["resize"], ex["pool"]) == ("upstream", "upstream", "mean")
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
    with pytest.raises(StoreError, match="sampling"):
        run(echo_tree, tmp_path / "s.zarr", tiny, clips=2, sampling="centered")


PHI = "ZQX_SECRET_42"


def test_no_header_byte_reaches_a_store_or_an_mp4_unless_allow_listed(tmp_path, tiny):
    """Every text element holds PHI; malformed pixel-module values hold it too, so decoders
    fail on it: neither stored rows, nor recorded errors, nor MP4s may carry it."""
    root = tmp_path / "in" / "p10" / "p10000001" / "s1"
    root.mkdir(parents=True)
    for name in ("ok", *MALFORMED):
        make_dicom_with_secret(root / f"{name}.dcm", PHI, malformed=None if name == "ok" else name)
    store = tmp_path / "s.zarr"
    tags = ["--dicom-tags", "Modality", "--dicom-tags", "Rows"]  # a repeatable option
    args = _cli_args(tmp_path / "in", store, tiny, *tags)[3:]
    result = CliRunner().invoke(app, [a for a in args if a != "--quiet"])
    assert result.exit_code == 0, result.output
    assert "bad (skipped)" in result.output and PHI not in result.output
    ds = embstore.open(store)
    assert ds.Modality.values.tolist() == ["US"] and ds.Rows.values.tolist() == ["16"]
    converted = convert_dicom(tmp_path / "in", tmp_path / "mp4", target_size=16)
    assert len(converted.converted) == 1 and len(converted.failed) == len(MALFORMED)
    assert all(PHI not in problem for _, problem in converted.failed)
    files = [f for f in [*store.rglob("*"), *(tmp_path / "mp4").rglob("*")] if f.is_file()]
    assert any(f.suffix == ".mp4" for f in files)
    for file in files:
        assert PHI.encode() not in file.read_bytes(), f"{PHI} leaked into {file}"


def test_tokens_pooled_to_a_grid_and_all_tokens_load_lazily(echo_tree, tmp_path, tiny):
    model = load_vjepa2(VJEPA2Settings(checkpoint=str(tiny["hf"])))
    spec = ClipSpec(num_frames=4, frame_step=1, clips=2, crop=32)
    for pool, tokens in (("grid:1,2,2", 4), ("none", 2 * 2 * 2)):
        store = tmp_path / f"{pool}.zarr"
        run(echo_tree, store, tiny, limit=3, pool=pool, clips=2)
        ds = embstore.open(store)
        assert ds.tokens.dims == ("sample", "token", "feature") and ds.tokens.chunks[0][0] == 1
        assert ds.tokens.shape == (3, tokens, 32) and ds.tokens.dtype == np.float16
        assert provenance(ds)["extraction"]["pool"] == pool
        for i, rel in enumerate(ds.path.values):
            out = direct_tokens(model, echo_tree / rel, spec)
            expected = pool_tokens(out, (2, 2, 2), pool).mean(dim=0).half().numpy()
            np.testing.assert_allclose(
                ds.tokens[i].values.astype(np.float32), expected, rtol=2e-3, atol=2e-3
            )
            np.testing.assert_allclose(
                ds.embedding.values[i], out.mean(dim=1).mean(dim=0), rtol=1e-4, atol=1e-5
            )


def test_token_size_is_projected_and_refused_above_max_size(echo_tree, tmp_path, tiny):
    with pytest.raises(EmbstoreError, match="max_size"):
        run(echo_tree, tmp_path / "s.zarr", tiny, pool="none", max_size=100)
    assert not (tmp_path / "s.zarr").exists()
    report = run(echo_tree, tmp_path / "s.zarr", tiny, pool="none", max_size=100, confirm=True)
    assert report.token_bytes == 9 * 8 * 32 * 2  # 9 inputs (a still and a bad file among them)


def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(echo_tree, tmp_path, tiny):
    embeddings = {f"p10/s{i}/{i}.mp4": torch.zeros(4) for i in range(1500)}
    torch.save(embeddings, tmp_path / "emb.pt")
    with pytest.raises(BadInputError) as caught:
        run(echo_tree, tmp_path / "s.zarr", {**tiny, "original": tmp_path / "emb.pt"})
    message = str(caught.value)
    assert "1500 keys" in message and "'p10/s0/0.mp4'" in message and len(message) < 300
    assert not (tmp_path / "s.zarr").exists()


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
    with pytest.raises(BadInputError, match="grid"):
        run(echo_tree, echo_tree.parent / "s.zarr", {"original": "x", "config": "x"}, pool="grid:2")


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
        if embstore.store.is_store(store) and embstore.open(store).sizes["sample"] >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    partial = embstore.open(store).sizes["sample"]
    assert 3 <= partial < 17
    subprocess.run(_cli_args(echo_tree, store, tiny), check=True, timeout=180)
    paths = embstore.open(store).path.values.tolist()
    assert len(paths) == len(set(paths)) == 17 and embstore.validate(store).ok


def test_a_store_made_before_the_rules_were_recorded_grows_only_with_the_earlier_rules(
    monkeypatch, tmp_path
):
    from embstore.extraction import pipeline

    class Fake:
        def describe(self):
            return {"family": "vjepa2", "model": "m"}

    old = {"family": "vjepa2", "model": "m", "clip": ClipSpec().geometry()}
    monkeypatch.setattr(pipeline, "_existing_record", lambda store: old)
    earlier = ClipSpec(sampling="centered", resize="antialias")
    assert pipeline.describe_run(Fake(), earlier, "mean", tmp_path) == old
    with pytest.raises(StoreError, match="sampling='centered', resize='antialias'"):
        pipeline.describe_run(Fake(), ClipSpec(), "mean", tmp_path)
    monkeypatch.setattr(pipeline, "_existing_record", lambda store: None)
    assert pipeline.describe_run(Fake(), ClipSpec(), "mean", tmp_path)["sampling"] == "upstream"


def test_a_file_name_that_breaks_the_key_policy_is_reported_and_skipped(echo_tree, tmp_path, tiny):
    folder = echo_tree / "p10" / "p10000007" / "s90000007"
    folder.mkdir(parents=True)
    make_dicom(folder / "bad\x01name.dcm", frames=3, seed=7)
    report = run(echo_tree, tmp_path / "s.zarr", tiny, limit=1)
    assert any("control character" in str(b) and "bad" in str(b) for b in report.bad)
    paths = embstore.open(tmp_path / "s.zarr").path.values.tolist()
    assert not any("\x01" in p for p in paths)

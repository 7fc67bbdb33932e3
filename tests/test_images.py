"""Image encoders: embeddings equal what transformers gives for the same image with the
model's own processor (tiny random DINOv3, DINOv2, CLIP and SigLIP models saved locally)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import embstore
from embstore.errors import BadInputError, StoreError
from embstore.extraction.images import DINOv3TorchPort, ImageEncoder, load_processor
from embstore.testing.images import make_frame, make_tiny_image_model

FAMILIES = ["dinov3", "dinov2", "clip", "siglip"]
CASES = [(f, "cls") for f in FAMILIES] + [(f, "mean") for f in FAMILIES] + [("clip", "projected")]
MODEL_CLASS = {
    "dinov3": "DINOv3ViTModel",
    "dinov2": "Dinov2Model",
    "clip": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
}
PREFIX = {"dinov3": 3, "dinov2": 1, "clip": 1, "siglip": 0}  # CLS + registers before patches


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: make_tiny_image_model(root / f, f, seed=i) for i, f in enumerate(FAMILIES)}


def _crops() -> list[Image.Image]:
    """Crops of several shapes (wide, tall, tiny, square)."""
    return [
        Image.fromarray(make_frame(h, w, seed=i))
        for i, (h, w) in enumerate([(40, 56), (70, 23), (9, 12), (32, 32)])
    ]


def _reference_pixels(folder: Path, image: Image.Image) -> torch.Tensor:
    """The model's processor through transformers; for DINOv3 without torchvision (its only
    backend), the processor's documented steps written out here independently."""
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
    except ImportError:
        settings = json.loads((folder / "preprocessor_config.json").read_text())
        x = torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
        size = (settings["size"]["height"], settings["size"]["width"])
        x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", antialias=True)
        mean = torch.tensor(settings["image_mean"]).view(1, 3, 1, 1)
        return (x - mean) / torch.tensor(settings["image_std"]).view(1, 3, 1, 1)
    return processor(images=image, return_tensors="pt")["pixel_values"]


@functools.cache
def _reference_model(folder: Path, name: str) -> torch.nn.Module:
    return getattr(transformers, name).from_pretrained(folder).eval()


def _reference(folder: Path, family: str, pooling: str, image: Image.Image) -> np.ndarray:
    name = "CLIPVisionModelWithProjection" if pooling == "projected" else MODEL_CLASS[family]
    model = _reference_model(folder, name)
    with torch.no_grad():
        out = model(pixel_values=_reference_pixels(folder, image))
    if pooling == "projected":
        return out.image_embeds[0].numpy()
    if pooling == "mean":
        return out.last_hidden_state[0, PREFIX[family] :].mean(0).numpy()
    return out.pooler_output[0].numpy()


@pytest.mark.parametrize(("family", "pooling"), CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_embedding_equals_transformers(models: dict[str, Path], family: str, pooling: str) -> None:
    encoder = ImageEncoder(models[family], pooling=pooling)
    crops = _crops()
    got = encoder.embed(encoder.preprocess(crops))  # one batch
    expected = np.stack([_reference(models[family], family, pooling, c) for c in crops])
    assert got.shape == (len(crops), encoder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    described = encoder.describe()
    assert described["family"] == family and described["pooling"] == pooling
    assert len(described["checkpoint_sha256"]) == 64
    assert described["processor"]["settings"]["image_mean"]


def test_dinov3_processor_without_torchvision_is_recorded(models: dict[str, Path]) -> None:
    processor, info = load_processor(models["dinov3"])
    if importlib.util.find_spec("torchvision") is None:
        assert isinstance(processor, DINOv3TorchPort)
        assert info["backend"] == "torch (embstore port)"
    assert info["class"] == "DINOv3ViTImageProcessor"
    assert info["settings"]["size"] == {"height": 32, "width": 32}


def test_dinov3_port_matches_torchvision_processor(models: dict[str, Path]) -> None:
    """Where torchvision is installed (GPU machines), the port equals transformers' own
    DINOv3 processor; CI has no torchvision, so this runs only there."""
    pytest.importorskip("torchvision")
    settings = json.loads((models["dinov3"] / "preprocessor_config.json").read_text())
    port = DINOv3TorchPort(settings)
    real = transformers.AutoImageProcessor.from_pretrained(models["dinov3"])
    for crop in _crops():
        expected = real(images=crop, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(port(images=[crop])["pixel_values"], expected)


def test_wrong_folders_are_refused(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(BadInputError, match="no config.json"):
        ImageEncoder(tmp_path)
    with pytest.raises(BadInputError, match="not clip"):
        ImageEncoder(models["dinov2"], family="clip")
    with pytest.raises(BadInputError, match="no projected"):
        ImageEncoder(models["siglip"], pooling="projected")
    with pytest.raises(BadInputError, match="pooling"):
        ImageEncoder(models["siglip"], pooling="max")


def test_folder_of_images_into_a_store(tmp_path: Path, models: dict[str, Path]) -> None:
    media = tmp_path / "images"
    for i, name in enumerate(["ball/00270001_12_a.png", "cup/00280001_9_b.jpg"]):
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_frame(24 + i * 8, 30, seed=i)).save(media / name, quality=95)
    (media / "notes.txt").write_text("not an image")
    config = embstore.ImageExtractConfig(
        checkpoint=models["siglip"],
        pattern=r"(?P<category>[^/]+)/(?P<subject>\d+)_(?P<age_mo>\d+)_",
    )
    report = embstore.extract_images(media, store=tmp_path / "s", config=config)
    assert report.added == 2 and not report.bad
    ds = embstore.open(tmp_path / "s")
    assert ds.path.values.tolist() == ["ball/00270001_12_a.png", "cup/00280001_9_b.jpg"]
    assert ds.age_mo.values.tolist() == [12, 9] and ds.subject.values[0] == "00270001"
    with Image.open(media / "cup/00280001_9_b.jpg") as image:
        expected = _reference(models["siglip"], "siglip", "cls", image.convert("RGB"))
    np.testing.assert_allclose(ds.embedding.values[1], expected, rtol=1e-5, atol=1e-5)
    record = embstore.provenance(ds)["extraction"]
    assert record["family"] == "siglip" and record["processor"]["class"]
    other = embstore.ImageExtractConfig(checkpoint=models["siglip"], pooling="mean")
    with pytest.raises(StoreError, match="other extraction settings"):
        embstore.extract_images(media, store=tmp_path / "s", config=other)


def test_tiny_store_gets_a_small_chunk(tmp_path: Path, models: dict[str, Path]) -> None:
    """A 4-image store once wrote a 16 MiB embedding chunk (the default for any store); its
    chunk now fits its rows as ingest's does (layout's floor: 256 rows), so it takes ~100 KiB."""
    media = tmp_path / "images"
    media.mkdir()
    for i in range(4):
        Image.fromarray(make_frame(24, 30, seed=i)).save(media / f"{i}.png")
    config = embstore.ImageExtractConfig(checkpoint=models["dinov2"])
    report = embstore.extract_images(media, store=tmp_path / "s", config=config)
    ds = embstore.open(tmp_path / "s")
    assert report.added == 4 and ds.embedding.encoding["chunks"][0] == 256
    on_disk = sum(f.stat().st_size for f in (tmp_path / "s").rglob("*") if f.is_file())
    assert on_disk < 256 * ds.sizes["feature"] * 4 + 512 * 1024  # 16 MiB before

"""Generated sample data in the real on-disk layouts (for the demo, tests and benchmarks).

Every builder writes real files (``.npy`` trees, ``torch.save`` dicts, DICOMs, tiny models,
small stores) under a directory it is given, from a seed, so the same call gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..store.location import StoreLike


def make_npy_tree(
    root: str | os.PathLike[str],
    *,
    n_subjects: int = 4,
    n_categories: int = 3,
    ages: range = range(6, 10),
    dim: int = 16,
    seed: int = 0,
    dtype: str = "float32",
    categories: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``<root>/<category>/<subject>_<age_mo>_month_level_avg.npy`` files; return them.

    Subjects are ``00270001``-style ids (leading zeros kept); every subject has a vector for
    every category and age. Values have a per-feature offset and scale, like real embeddings.
    Categories are ``category000``... unless ``categories`` names them (then ``n_categories``
    is ignored).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    offset = rng.normal(0.0, 1.0, dim)
    scale = rng.uniform(0.1, 0.7, dim)
    names = list(categories or [f"category{c:03d}" for c in range(n_categories)])
    files = []
    for name in names:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(n_subjects):
            for age in ages:
                vector = (offset + scale * rng.standard_normal(dim)).astype(dtype)
                file = folder / f"{(s + 27) * 10000 + 1:08d}_{age}_month_level_avg.npy"
                np.save(file, vector)
                files.append(file)
    return files


def make_store(
    store: StoreLike,
    tree: str | os.PathLike[str],
    *,
    batch_rows: int = 10,
    row_chunk: int = 8,
    write_tree: bool = True,
    **tree_options: Any,
) -> Path:
    """Write a babyview npy tree at ``tree`` (see :func:`make_npy_tree`) and ingest it into
    ``store`` in ``batch_rows``-row commits with ``row_chunk``-row chunks; return the store.

    With ``write_tree=False`` the tree already exists and is ingested as it is.

    The defaults give the tests' shared store: 48 rows in 8-row chunks, so everything spans
    chunks.
    """
    from .._ingest import ingest

    if write_tree:
        make_npy_tree(tree, **tree_options)
    ingest([tree], store=store, layout="babyview", batch_rows=batch_rows, row_chunk=row_chunk)
    return Path(os.fspath(store))


def make_defective_store(store: StoreLike) -> tuple[np.ndarray, list[str]]:
    """A 40 x 6 store with planted defects, for quality checks; returns its vectors and paths.

    Row 3 holds a NaN, row 7 an infinity, row 11 is all zeros, rows 20 and 33 duplicate row 2,
    and feature 4 is constant. Labels: ``subject`` (4) and ``age_mo`` (10 ages).
    """
    from ..store import StoreWriter

    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    x[:, 4] = 0.0
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    x[11] = 0.0
    x[20] = x[2]
    x[33] = x[2]
    paths = [f"c/s{i % 4}_{6 + i // 4}_month_level_avg.npy" for i in range(40)]
    labels: dict[str, list[Any]] = {
        "subject": [f"s{i % 4}" for i in range(40)],
        "age_mo": [6 + i // 4 for i in range(40)],
    }
    StoreWriter(store, feature_size=6, row_chunk=8).append(paths, x, labels)
    return x, paths


def make_pt_dict(
    file: str | os.PathLike[str],
    *,
    folder: str = "p10",
    n_subjects: int = 3,
    studies: int = 2,
    videos: int = 2,
    dim: int = 16,
    seed: int = 0,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """Write a ``{p<subject>/s<study>/<study>_<n>.mp4: tensor[dim]}`` dict with ``torch.save``.

    Returns the same vectors as numpy arrays, keyed like the file.
    """
    import torch

    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    base = int(folder.lstrip("p")) * 1_000_000
    for s in range(n_subjects):
        subject = f"p{base + 1000 * s + 37:08d}"
        for t in range(studies):
            study = f"{90000000 + 1000 * s + t}"
            for v in range(videos):
                data[f"{prefix}{subject}/s{study}/{study}_{v + 1:04d}.mp4"] = rng.standard_normal(
                    dim
                ).astype(np.float32)
    torch.save({k: torch.from_numpy(v.copy()) for k, v in data.items()}, file)
    return data


def make_dicom(
    file: str | os.PathLike[str],
    *,
    frames: int = 6,
    rows: int = 40,
    columns: int = 48,
    photometric: str = "RGB",
    patient_name: str = "Doe^Jane",
    frame_time_ms: float | None = 40.0,
    seed: int = 0,
) -> np.ndarray:
    """Write an uncompressed multi-frame DICOM (RGB, YBR_FULL, MONOCHROME1/2 or PALETTE COLOR).

    Returns the frames as the RGB uint8 ``(T, H, W, 3)`` a reader should get back
    (for PALETTE COLOR: the indices' colours under a grey-to-red ramp).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    rng = np.random.default_rng(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient_name, "PID-123456", "19700101"
    ds.Manufacturer = "embstore-test"
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
    if photometric in ("RGB", "YBR_FULL"):
        rgb = rng.integers(0, 256, (frames, rows, columns, 3), dtype=np.uint8)
        stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", "YBR_FULL")
        if photometric == "YBR_FULL":  # the decoder's round trip is what a reader really gets
            rgb = convert_color_space(stored, "YBR_FULL", "RGB")
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        pixels = stored
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = rng.integers(0, 256, (frames, rows, columns), dtype=np.uint8)
        ds.SamplesPerPixel = 1
        pixels = grey
        shown = 255 - grey if photometric == "MONOCHROME1" else grey
        rgb = np.repeat(shown[..., None], 3, axis=-1)
    elif photometric == "PALETTE COLOR":
        index = rng.integers(0, 256, (frames, rows, columns), dtype=np.uint8)
        ds.SamplesPerPixel = 1
        ramp = np.arange(256, dtype=np.uint16) * 257
        for colour, lut in (
            ("Red", ramp),
            ("Green", np.zeros(256, np.uint16)),
            ("Blue", ramp[::-1].copy()),
        ):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())
        pixels = index
        rgb = np.stack([index, np.zeros_like(index), 255 - index], axis=-1)
    else:
        raise ValueError(f"unsupported photometric interpretation {photometric}")
    ds.PhotometricInterpretation = photometric
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(file, enforce_file_format=True)
    return rgb


def make_tiny_vjepa2(
    directory: str | os.PathLike[str], *, hidden: int = 32, crop: int = 32, seed: int = 0
) -> dict[str, Path]:
    """A tiny random V-JEPA2 encoder saved in both real on-disk formats.

    Writes ``hf/`` (``save_pretrained``: the *target* encoder), ``config.json`` (a custom
    architecture for ``--model``) and ``original.pt`` holding ``encoder`` and
    ``target_encoder`` with ``module.backbone.`` prefixes and fused ``qkv`` weights, as the
    official checkpoints do. ``encoder`` differs from ``target_encoder``, so picking the wrong
    one shows.
    """
    import torch
    from transformers import VJEPA2Config, VJEPA2Model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = VJEPA2Config(
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2.0,
        crop_size=crop,
        frames_per_clip=4,
        pred_hidden_size=16,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=2,
    )
    torch.manual_seed(seed)
    target = VJEPA2Model(config).eval()
    online = VJEPA2Model(config).eval()
    target.save_pretrained(directory / "hf")
    config.to_json_file(directory / "config.json")
    checkpoint = {
        "encoder": _to_original(online),
        "target_encoder": _to_original(target),
        "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(2, 2)},
        "epoch": 1,
    }
    torch.save(checkpoint, directory / "original.pt")
    return {
        "hf": directory / "hf",
        "config": directory / "config.json",
        "original": directory / "original.pt",
    }


def _to_original(model: Any) -> dict[str, Any]:  # a transformers VJEPA2Model
    """The inverse of embstore's checkpoint conversion: HF encoder keys -> original keys."""
    import torch

    state = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    out: dict[str, Any] = {}
    fused: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in state.items():
        key = key.removeprefix("encoder.")
        if key.startswith("embeddings.patch_embeddings."):
            key = "patch_embed." + key.removeprefix("embeddings.patch_embeddings.")
        elif key.startswith("layernorm."):
            key = "norm." + key.removeprefix("layernorm.")
        elif key.startswith("layer."):
            key = "blocks." + key.removeprefix("layer.").replace(".attention.", ".attn.")
        for part in ("query", "key", "value"):
            if f".attn.{part}." in key:
                base, kind = key.split(f".attn.{part}.")
                fused.setdefault((base, kind), {})[part] = value
                break
        else:
            out["module.backbone." + key] = value.clone()
    for (base, kind), parts in fused.items():
        qkv = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
        out[f"module.backbone.{base}.attn.qkv.{kind}"] = qkv.clone()
    return out


#: Header elements :func:`make_dicom_with_secret` can break, each in its own file.
MALFORMED = ("PhotometricInterpretation", "BitsAllocated", "NumberOfFrames", "FrameTime")


def make_dicom_with_secret(
    file: str | os.PathLike[str], secret: str, *, malformed: str | None = None, frames: int = 4
) -> None:
    """A multi-frame DICOM with ``secret`` (<= 16 characters, upper case) in every text element:
    patient and study fields, a private tag, the file meta; with ``malformed``, that header
    element (see :data:`MALFORMED`) holds ``secret`` instead of a valid value, so decoding fails.
    """
    from pydicom import config, dcmread
    from pydicom.dataelem import DataElement
    from pydicom.tag import Tag

    make_dicom(file, frames=frames, rows=16, columns=16, patient_name=secret)
    ds = dcmread(file)
    for keyword in (
        "PatientID",
        "PatientComments",
        "InstitutionName",
        "StudyDescription",
        "ReferringPhysicianName",
        "OperatorsName",
        "SeriesDescription",
        "AccessionNumber",
        "StationName",
        "Manufacturer",
    ):
        setattr(ds, keyword, secret)
    block = ds.private_block(0x0099, "EMBSTORE TEST", create=True)
    block.add_new(0x01, "LO", secret)
    ds.file_meta.ImplementationVersionName = secret[:16]
    ds.file_meta.SourceApplicationEntityTitle = secret[:16]
    if malformed is not None:
        tag = Tag(malformed)
        ds[tag] = DataElement(tag, "LO", secret)  # the wrong VR carries the text as is
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds.save_as(file, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = previous


def make_keyed_store(folder: str | os.PathLike[str], keys: list[str], dim: int = 4) -> Path:
    """``<folder>/s.zarr`` holding ``keys`` as another tool might write them (no key policy
    applied), row ``i`` being ``arange(dim) + i * dim`` as float32; return the store."""
    from ..store import StoreWriter

    path = Path(folder) / "s.zarr"
    vectors = np.arange(len(keys) * dim, dtype="f4").reshape(len(keys), dim)
    StoreWriter(path, feature_size=dim).append(keys, vectors)
    return path


def make_schema1_store(path: str | os.PathLike[str], rows: int = 20, dim: int = 8) -> Any:
    """A store as embstore 0.1 wrote it: Zarr v3, consolidated metadata holding the committed
    shapes, and a later interrupted append that grew the arrays on disk only (5 rows).

    Returns the committed ``xarray.Dataset`` (``rows`` x ``dim``).
    """
    import xarray as xr
    import zarr

    path = Path(path)
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "embedding": (("sample", "feature"), rng.random((rows, dim), dtype="f4")),
            "normalized": (("sample", "feature"), rng.random((rows, dim), dtype="f4")),
            "normalized_mean": (("feature",), rng.random(dim)),
        },
        coords={
            "path": (
                "sample",
                np.array([f"c/{i:02d}_6_month_level_avg.npy" for i in range(rows)], object),
            ),
            "subject": ("sample", np.array([f"s{i % 3}" for i in range(rows)], object)),
            "age_mo": ("sample", np.full(rows, 6, "i4")),
            "nonfinite": ("sample", np.zeros(rows, bool)),
        },
    )
    ds.normalized.attrs["embstore"] = {"source": "embedding", "rows": rows, "rows_used": rows}
    ds.attrs["embstore"] = {
        "schema_version": 1,
        "rows": rows,
        "feature_size": dim,
        "created": "2026-01-01T00:00:00+00:00",
        "embstore_version": "0.1.0",
        "model": "demo",
        "missing": {"age_mo": -1, "string": ""},
        "provenance": [{"action": "ingest", "time": "2026-01-01", "embstore_version": "0.1.0"}],
    }
    ds.to_zarr(path, zarr_format=3, consolidated=True)
    zarr.open_array(str(path / "embedding"), mode="r+").resize((rows + 5, dim))  # uncommitted
    return ds


def make_doc_store(directory: str | os.PathLike[str]) -> Path:
    """The files the docstring examples name, under ``directory``; returns it.

    ``emb/``: a babyview tree (categories ``ball`` and ``cup``, subjects ``00270001``,
    ``00280001``, ``00290001``, ages 12 to 15 months, 8-d); ``bv.store``: that tree ingested
    (three 8-row commits); ``bv.zarr``: a schema-1 store (as embstore 0.1 wrote it);
    ``subset.nc``: ``bv.store`` exported as HDF5 (a file plain xarray opens). For the
    extraction examples (see :func:`_make_doc_media`): ``videos/`` with ``detections.csv``,
    ``dinov3/`` (a tiny image model), ``files/`` (MIMIC-echo DICOMs) and ``vjepa2-tiny/``.
    """
    from .._export import export
    from ..store.read import open_store

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    make_store(
        directory / "bv.store",
        directory / "emb",
        n_subjects=3,
        categories=["ball", "cup"],
        ages=range(12, 16),
        dim=8,
    )
    make_schema1_store(directory / "bv.zarr")
    export(directory / "bv.store", directory / "subset.nc", format="hdf5")
    rows = open_store(directory / "bv.store").sizes["sample"]
    assert rows == 24, f"the docs store has {rows} rows, the examples expect 24"
    _make_doc_media(directory)
    return directory


def _make_doc_media(directory: Path) -> None:
    """Inputs for the extraction examples, small enough to embed in about a second on a CPU.

    ``videos/00270001/00270001_12mo_0.mp4`` (2 frames) and ``detections.csv`` (4 boxes on it,
    categories ``ball`` and ``cup``); ``dinov3/``: a random 32-d DINOv3 with its processor;
    ``files/p10/p1000000{0,1}/s9000000{0,1}/9000000{0,1}_0001.dcm``: two 4-frame 32 x 32 RGB
    echo cines; ``vjepa2-tiny/``: a random 32-d V-JEPA2 (:func:`make_tiny_vjepa2`).
    """
    from .images import make_headcam_detections, make_tiny_image_model

    make_headcam_detections(
        directory,
        subjects=("00270001",),
        ages=(12,),
        categories=("ball", "cup"),
        frames=2,
        crops_per_frame=2,
    )
    make_tiny_image_model(directory / "dinov3", "dinov3")
    for s in range(2):
        folder = directory / "files" / "p10" / f"p1000000{s}" / f"s9000000{s}"
        folder.mkdir(parents=True, exist_ok=True)
        make_dicom(folder / f"9000000{s}_0001.dcm", frames=4, rows=32, columns=32, seed=s)
    make_tiny_vjepa2(directory / "vjepa2-tiny")

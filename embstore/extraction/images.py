"""Image encoders loaded from a local Hugging Face folder: DINOv3, DINOv2, CLIP and SigLIP.

Every encoder is the ``transformers`` model of the folder's ``config.json`` and the folder's
own image processor (``preprocessor_config.json``), so the embedding of an image equals what
``transformers`` gives for that image::

    inputs = processor(images=[image], return_tensors="pt")
    model(**inputs).pooler_output            # pooling="cls"

``pooling`` picks the vector: ``"cls"`` the model's pooled output (DINOv2/DINOv3: the
normalized CLS token; CLIP: the post-layernormed CLS token; SigLIP: its attention-pooling
head), ``"mean"`` the mean of the patch tokens of ``last_hidden_state`` (CLS and register
tokens left out), ``"projected"`` CLIP's projected ``image_embeds`` (a full CLIP folder).

Nothing is downloaded: the folder must hold the weights and both configs. DINOv3's processor
exists only for torchvision in ``transformers``; without torchvision, :class:`DINOv3TorchPort`
runs the same steps (rescale, antialiased resize, centre crop, normalize) with
``torch.nn.functional.interpolate``, which is what torchvision's tensor resize calls, and the
store's provenance says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from .encoders import sha256

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "projected")


@dataclass(frozen=True)
class ImageFamily:
    """A model family: the ``model_type`` values that name it and how it is loaded."""

    name: str
    model_types: tuple[str, ...]
    model_class: str  # transformers class for pooling "cls" / "mean"
    prefix_tokens: Callable[[Any], int]  # tokens before the patch tokens
    projected_class: str | None = None  # for pooling "projected"


#: The image model families, by name (what ``family=`` and ``--family`` accept).
IMAGE_REGISTRY: dict[str, ImageFamily] = {}


def register_image_family(family: ImageFamily) -> ImageFamily:
    """Add ``family`` to :data:`IMAGE_REGISTRY`."""
    IMAGE_REGISTRY[family.name] = family
    return family


register_image_family(
    ImageFamily(
        "dinov3",
        ("dinov3_vit",),
        "DINOv3ViTModel",
        lambda config: 1 + int(getattr(config, "num_register_tokens", 0)),
    )
)
register_image_family(ImageFamily("dinov2", ("dinov2",), "Dinov2Model", lambda config: 1))
register_image_family(
    ImageFamily(
        "clip",
        ("clip", "clip_vision_model"),
        "CLIPVisionModel",
        lambda config: 1,
        projected_class="CLIPVisionModelWithProjection",
    )
)
register_image_family(
    ImageFamily("siglip", ("siglip", "siglip_vision_model"), "SiglipVisionModel", lambda c: 0)
)


def family_of(model_type: str) -> ImageFamily:
    """The family whose ``model_types`` include ``model_type``."""
    for family in IMAGE_REGISTRY.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in IMAGE_REGISTRY.values() for t in f.model_types)
    raise BadInputError("checkpoint", f"model_type {model_type!r} is not one of {known}")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Keep transformers' notices (backend fallbacks, deprecations, progress bars) off the
    terminal while a model or processor loads; errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class DINOv3TorchPort:
    """``DINOv3ViTImageProcessor`` without torchvision: rescale, resize (antialiased, as
    torchvision's tensor resize: ``interpolate(..., align_corners=False, antialias=True)``),
    centre crop, normalize, in that order, from the same ``preprocessor_config.json``."""

    _MODES = {2: "bilinear", 3: "bicubic"}

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        resample = int(settings.get("resample", 2))
        if resample not in self._MODES:
            msg = f"resample {resample} is not supported without torchvision (bilinear, bicubic)"
            raise BadInputError("preprocessor_config.json", msg)
        self.mode = self._MODES[resample]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def __call__(self, images: Sequence[Any], return_tensors: str = "pt") -> dict[str, Any]:
        return {"pixel_values": self.preprocess(images)}

    def preprocess(self, images: Sequence[Any]) -> Any:
        import torch

        return torch.stack([self._one(image) for image in images])

    def _one(self, image: Any) -> Any:
        import torch
        import torch.nn.functional as F

        s = self.settings
        x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float()
        if s.get("do_rescale", True):
            x = x * float(s.get("rescale_factor", 1 / 255))
        if s.get("do_resize", True):
            size = _output_size(x.shape[-2:], s.get("size") or {})
            x = F.interpolate(
                x[None], size=size, mode=self.mode, align_corners=False, antialias=True
            )[0]
        crop = s.get("crop_size") or {}
        if s.get("do_center_crop") and crop:
            height, width = x.shape[-2:]
            top = int(round((height - crop["height"]) / 2.0))
            left = int(round((width - crop["width"]) / 2.0))
            x = x[:, top : top + crop["height"], left : left + crop["width"]]
        if s.get("do_normalize", True):
            mean = torch.tensor(s.get("image_mean", (0.485, 0.456, 0.406)))[:, None, None]
            std = torch.tensor(s.get("image_std", (0.229, 0.224, 0.225)))[:, None, None]
            x = (x - mean) / std
        return x.contiguous()


def _output_size(shape: Sequence[int], size: dict[str, int]) -> tuple[int, int]:
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    if size.get("shortest_edge"):
        height, width = int(shape[0]), int(shape[1])
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    raise BadInputError("preprocessor_config.json", f"unsupported size {size}")


def load_processor(folder: Path, backend: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The folder's image processor and what defines it (class, backend, settings)."""
    from transformers import AutoImageProcessor

    config_file = folder / "preprocessor_config.json"
    if not config_file.is_file():
        raise BadInputError(str(folder), "no preprocessor_config.json (the model's processor)")
    settings = json.loads(config_file.read_text(encoding="utf-8"))
    kwargs: dict[str, Any] = {"backend": backend} if backend else {}
    try:
        with quiet_transformers():
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, **kwargs)
    except ImportError:
        kind = str(settings.get("image_processor_type", ""))
        if not kind.startswith("DINOv3ViTImageProcessor"):
            raise
        port = DINOv3TorchPort(settings)
        info = {"class": "DINOv3ViTImageProcessor", "backend": "torch (embstore port)"}
        return port, {**info, "settings": _plain(port.to_dict())}
    info = {"class": type(processor).__name__, "backend": _backend_of(processor)}
    return processor, {**info, "settings": _plain(processor.to_dict())}


def _backend_of(processor: Any) -> str:
    names = [cls.__name__ for cls in type(processor).__mro__]
    return (
        "pil" if "PilBackend" in names else "torchvision" if "TorchvisionBackend" in names else "?"
    )


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe processor settings, private and device fields left out."""
    out = {}
    for key, value in settings.items():
        if key.startswith("_") or key in ("device", "processor_class"):
            continue
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        out[key] = value
    return out


class ImageEncoder:
    """A frozen image model and its processor, from a local Hugging Face folder.

    Parameters
    ----------
    checkpoint
        The folder (``config.json``, weights, ``preprocessor_config.json``).
    family
        ``dinov3``, ``dinov2``, ``clip`` or ``siglip``; by default read from ``config.json``.
    pooling
        ``cls`` (the pooled output), ``mean`` (mean of the patch tokens) or ``projected``
        (CLIP's ``image_embeds``).
    device, dtype
        Where the model runs; ``float32`` (default, exact) or ``bfloat16`` (CUDA autocast).
    processor_backend
        ``pil`` or ``torchvision`` (default: what transformers picks); recorded.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        family: str | None = None,
        pooling: str = "cls",
        device: str = "cpu",
        dtype: str = "float32",
        processor_backend: str | None = None,
    ) -> None:
        import torch
        import transformers

        folder = Path(checkpoint)
        if not (folder / "config.json").is_file():
            raise BadInputError(str(folder), "not a Hugging Face model folder (no config.json)")
        if pooling not in POOLINGS:
            raise BadInputError("pooling", f"{pooling!r} is not one of {POOLINGS}")
        if dtype not in ("float32", "bfloat16"):
            raise BadInputError("dtype", f"{dtype!r} is not float32 or bfloat16")
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        self.family = family_of(config.model_type)
        if family is not None and family != self.family.name:
            msg = f"the folder holds a {self.family.name} model ({config.model_type}), not {family}"
            raise BadInputError(str(folder), msg)
        if pooling == "projected" and self.family.projected_class is None:
            raise BadInputError("pooling", f"{self.family.name} has no projected embedding")
        name = self.family.projected_class if pooling == "projected" else self.family.model_class
        assert name is not None
        with quiet_transformers():
            model = getattr(transformers, name).from_pretrained(folder, local_files_only=True)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.checkpoint, self.pooling, self.dtype = folder, pooling, dtype
        self.processor, self.processor_info = load_processor(folder, processor_backend)
        vision = getattr(self.model.config, "vision_config", self.model.config)
        self.prefix = self.family.prefix_tokens(vision)
        self.dim = self._dim()
        self._sha = sha256(folder)

    def _dim(self) -> int:
        config = self.model.config
        if self.pooling == "projected":
            return int(config.projection_dim)
        return int(getattr(config, "vision_config", config).hidden_size)

    def preprocess(self, images: Sequence[Any]) -> Any:
        """PIL images -> the processor's ``pixel_values`` (float32, CPU; runs in workers)."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def embed(self, pixel_values: Any) -> np.ndarray:
        """``pixel_values`` -> ``(n, dim)`` float32 embeddings (numpy)."""
        import torch

        pixels = pixel_values.to(self.device)
        cuda = self.device.type == "cuda"
        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=cuda and self.dtype == "bfloat16"
        )
        with torch.inference_mode(), autocast:
            out = self.model(pixel_values=pixels)
            if self.pooling == "projected":
                vectors = out.image_embeds
            elif self.pooling == "mean":
                vectors = out.last_hidden_state[:, self.prefix :].mean(dim=1)
            else:
                vectors = out.pooler_output
        return vectors.float().cpu().numpy()

    @property
    def name(self) -> str:
        """``<family>/<folder name>``: the model name a new store records."""
        return f"{self.family.name}/{self.checkpoint.name}"

    def describe(self) -> dict[str, Any]:
        """Everything that defines the numbers, for the store's ``extraction`` record."""
        import torch
        import transformers

        config = self.model.config
        vision = getattr(config, "vision_config", config)
        keys = ("model_type", "hidden_size", "num_hidden_layers", "patch_size", "image_size")
        return {
            "family": self.family.name,
            "model": self.name,
            "model_class": type(self.model).__name__,
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": self._sha,
            "architecture": {k: getattr(vision, k, None) for k in keys},
            "pooling": self.pooling,
            "processor": self.processor_info,
            "dtype": self.dtype if self.device.type == "cuda" else "float32",
            "device": self.device.type,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }


__all__ = [
    "IMAGE_REGISTRY",
    "POOLINGS",
    "DINOv3TorchPort",
    "ImageEncoder",
    "ImageFamily",
    "family_of",
    "load_processor",
    "register_image_family",
]

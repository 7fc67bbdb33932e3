"""Embedding models behind one interface, and V-JEPA2 as the first of them.

An extractor has a ``name``, a config dataclass, a ``dim`` and ``embed(clips) -> (n, dim)``;
:data:`REGISTRY` maps model family names to factories, so a second family plugs in without
touching the pipeline (:mod:`embstore.extract`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import BadInputError

#: The original V-JEPA2 encoders (facebookresearch/vjepa2), as VJEPA2Config arguments.
VJEPA2_PRESETS: dict[str, dict[str, Any]] = {
    "vitl": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "mlp_ratio": 4.0,
        "crop_size": 256,
    },
    "vith": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "mlp_ratio": 4.0,
        "crop_size": 256,
    },
    "vitg": {
        "hidden_size": 1408,
        "num_hidden_layers": 40,
        "num_attention_heads": 22,
        "mlp_ratio": 48 / 11,
        "crop_size": 256,
    },
    "vitg-384": {
        "hidden_size": 1408,
        "num_hidden_layers": 40,
        "num_attention_heads": 22,
        "mlp_ratio": 48 / 11,
        "crop_size": 384,
    },
}


class Extractor(Protocol):
    """What the pipeline needs of a model."""

    name: str
    dim: int
    crop: int

    def embed(self, clips: Any) -> Any:
        """``(n, frames, 3, crop, crop)`` float tensor -> ``(n, dim)`` embeddings."""

    def describe(self) -> dict[str, Any]:
        """Everything that defines the numbers, for the store's attrs."""


REGISTRY: dict[str, Callable[..., Extractor]] = {}


def register(name: str) -> Callable[[Callable[..., Extractor]], Callable[..., Extractor]]:
    def decorate(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        REGISTRY[name] = factory
        return factory

    return decorate


def sha256(path: Path) -> str:
    """Checksum of a file, or of every file in a folder (sorted by name)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- V-JEPA2


_RENAMES = [
    (re.compile(r"^patch_embed\."), "encoder.embeddings.patch_embeddings."),
    (re.compile(r"^blocks\.(\d+)\.attn\."), r"encoder.layer.\1.attention."),
    (re.compile(r"^blocks\.(\d+)\."), r"encoder.layer.\1."),
    (re.compile(r"^norm\."), "encoder.layernorm."),
]


def convert_original_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Map an original V-JEPA2 encoder state dict to ``transformers``' ``VJEPA2Model`` keys.

    Strips ``module.`` / ``backbone.`` prefixes, renames blocks / patch embedding / final norm,
    and splits each fused ``qkv`` projection into ``query``, ``key`` and ``value`` by thirds.
    """
    converted: dict[str, Any] = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        for pattern, replacement in _RENAMES:
            new = pattern.sub(replacement, key)
            if new != key:
                key = new
                break
        if ".attention.qkv." in key:
            base, kind = key.split(".attention.qkv.")
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                converted[f"{base}.attention.{name}.{kind}"] = part.contiguous()
        else:
            converted[key] = value
    return converted


@dataclass
class VJEPA2Settings:
    """How a V-JEPA2 encoder is built and loaded."""

    checkpoint: str
    model: str | None = None  # preset name, a config.json path, or None for an HF folder
    checkpoint_key: str = "target_encoder"
    device: str = "cpu"
    config: dict[str, Any] = field(default_factory=dict)


def _vjepa2_config(model: str | None, checkpoint: Path) -> Any:
    from transformers import VJEPA2Config

    if model is None:
        if not (checkpoint / "config.json").is_file():
            raise BadInputError(
                str(checkpoint), "--model is needed unless --checkpoint is a Hugging Face folder"
            )
        return VJEPA2Config.from_pretrained(checkpoint, local_files_only=True)
    if model in VJEPA2_PRESETS:
        return VJEPA2Config(**VJEPA2_PRESETS[model])
    if Path(model).is_file():
        return VJEPA2Config.from_json_file(model)
    choices = ", ".join(VJEPA2_PRESETS)
    raise BadInputError("--model", f"{model!r} is neither one of {choices} nor a config JSON file")


def load_vjepa2(settings: VJEPA2Settings) -> Any:
    """A ``VJEPA2Model`` in eval mode from an original checkpoint or a local HF folder."""
    import torch
    from transformers import VJEPA2Model

    checkpoint = Path(settings.checkpoint)
    if not checkpoint.exists():
        raise BadInputError(str(checkpoint), "checkpoint does not exist")
    config = _vjepa2_config(settings.model, checkpoint)
    if checkpoint.is_dir():
        model = VJEPA2Model.from_pretrained(checkpoint, config=config, local_files_only=True)
        return model.eval()
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusals and corrupt files alike
        raise BadInputError(str(checkpoint), f"cannot load checkpoint safely ({exc})") from exc
    if settings.checkpoint_key not in saved:
        have = ", ".join(k for k in saved if isinstance(k, str))
        raise BadInputError(
            str(checkpoint), f"no {settings.checkpoint_key!r} in checkpoint (has: {have})"
        )
    model = VJEPA2Model(config)
    state = {
        k.removeprefix("encoder."): v
        for k, v in convert_original_state_dict(saved[settings.checkpoint_key]).items()
    }
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        msg = (
            f"checkpoint does not fit the {settings.model} encoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
        raise BadInputError(str(checkpoint), msg)
    return model.eval()


class VJEPA2Extractor:
    """Frozen V-JEPA2 encoder; clip embedding = mean over tokens of the last hidden state."""

    name = "vjepa2"

    def __init__(self, settings: VJEPA2Settings) -> None:
        import torch

        self.settings = settings
        self.device = torch.device(settings.device)
        self.model = load_vjepa2(settings).to(self.device)
        self.dim = int(self.model.config.hidden_size)
        self.crop = int(self.model.config.crop_size)
        self.num_frames = int(self.model.config.frames_per_clip)
        self._sha = sha256(Path(settings.checkpoint))

    def embed(self, clips: Any) -> Any:
        import torch

        clips = clips.to(self.device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with torch.inference_mode(), autocast:
            tokens = self.model(pixel_values_videos=clips, skip_predictor=True).last_hidden_state
        return tokens.float().mean(dim=1)

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        config = self.model.config.to_dict()
        return {
            "family": self.name,
            "model": self.settings.model or Path(self.settings.checkpoint).name,
            "checkpoint": str(self.settings.checkpoint),
            "checkpoint_sha256": self._sha,
            "checkpoint_key": None
            if Path(self.settings.checkpoint).is_dir()
            else self.settings.checkpoint_key,
            "architecture": {
                k: config[k]
                for k in (
                    "hidden_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "mlp_ratio",
                    "patch_size",
                    "tubelet_size",
                    "crop_size",
                )
            },
            "pooling": "mean over tokens of last_hidden_state; mean over clips",
            "dtype": "bfloat16 autocast" if self.device.type == "cuda" else "float32",
            "device": self.device.type,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }


@register("vjepa2")
def make_vjepa2(**kwargs: Any) -> VJEPA2Extractor:
    return VJEPA2Extractor(VJEPA2Settings(**kwargs))


__all__ = [
    "REGISTRY",
    "VJEPA2_PRESETS",
    "Extractor",
    "VJEPA2Extractor",
    "convert_original_state_dict",
    "register",
]

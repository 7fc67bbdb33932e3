"""Embedding models behind one interface, and V-JEPA2 as the first of them.

An extractor (the :class:`Extractor` protocol) has a ``name``, a ``dim``, its preprocessing
(:meth:`Extractor.clip_spec`) and ``tokens(clips) -> (n, tokens, dim)``; the pipeline pools the
tokens (:mod:`embstore.extraction.pipeline`). :data:`REGISTRY` maps family names to factories
(``register("name")``), so another family plugs in without touching the pipeline, and the CLI
takes its ``--family`` choices from it. A factory is called with keywords from the run's
:class:`~embstore.extraction.config.ExtractConfig`: ``checkpoint``, ``model``,
``checkpoint_key``, ``device``, ``dtype``, ``compile`` and the ``family_options``; it may ignore
those it does not use. A new family registers itself where it is defined
(``@register("name")``); import its module here, at the bottom, so the registry (and the CLI)
sees it. A checkpoint is checked
against the model it is meant for before any model is built, so a wrong file is refused in
seconds, in one line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._fs import file_digest
from ..errors import BadInputError

if TYPE_CHECKING:  # numpy stays unloaded until a model is built (the CLI reads REGISTRY)
    from .preprocess import ClipSpec

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
    """What the pipeline needs of a model: tokens for ready clips, and its preprocessing."""

    name: str
    dim: int
    crop: int
    device: Any

    def clip_spec(self, **settings: Any) -> ClipSpec:
        """The model's preprocessing (:class:`ClipSpec`) for these clip settings."""

    def token_grid(self, num_frames: int) -> tuple[int, int, int]:
        """``(T, H, W)`` of the token grid a clip of ``num_frames`` frames becomes."""

    def tokens(self, clips: Any) -> Any:
        """``(n, frames, 3, crop, crop)`` float tensor -> ``(n, T*H*W, dim)`` float32 tokens."""

    def describe(self) -> dict[str, Any]:
        """Everything that defines the numbers, for the store's attrs."""


REGISTRY: dict[str, Callable[..., Extractor]] = {}


def register(name: str) -> Callable[[Callable[..., Extractor]], Callable[..., Extractor]]:
    def decorate(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        REGISTRY[name] = factory
        return factory

    return decorate


def sha256(path: Path) -> str:
    """Checksum of a file, or of a folder: of its files' checksums, sorted by name."""
    if not path.is_dir():
        return file_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()


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
    """How a V-JEPA2 encoder is built and loaded (``dtype``: see
    :data:`embstore.extraction.config.DTYPES`)."""

    checkpoint: str
    model: str | None = None  # preset name, a config.json path, or None for an HF folder
    checkpoint_key: str = "target_encoder"
    device: str = "cpu"
    config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"
    compile: bool = False


def _vjepa2_config(model: str | None, checkpoint: Path) -> Any:
    from transformers import VJEPA2Config

    if model is None:
        if not (checkpoint / "config.json").is_file():
            raise BadInputError(
                str(checkpoint), "model is needed unless checkpoint is a Hugging Face folder"
            )
        return VJEPA2Config.from_pretrained(checkpoint, local_files_only=True)
    if model in VJEPA2_PRESETS:
        return VJEPA2Config(**VJEPA2_PRESETS[model])
    if Path(model).is_file():
        return VJEPA2Config.from_json_file(model)
    choices = ", ".join(VJEPA2_PRESETS)
    raise BadInputError("model", f"{model!r} is neither one of {choices} nor a config JSON file")


def _example_keys(mapping: dict[Any, Any]) -> str:
    keys = [repr(k)[:60] for k in list(mapping)[:3]]
    return f"{len(mapping)} keys, e.g. {', '.join(keys)}"


def read_encoder_state(settings: VJEPA2Settings) -> dict[str, Any]:
    """The encoder weights of an original checkpoint, converted to ``VJEPA2Model`` keys.

    Memory-maps the file (no full read) and checks its shape before any model is built:
    a file that is not a V-JEPA2 checkpoint (say, a ``.pt`` of embeddings) is refused in one
    line with its key count and a few example keys.
    """
    import torch

    checkpoint = Path(settings.checkpoint)
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files from torch < 1.6 (not zip) cannot be memory-mapped
        saved = _load_plain(checkpoint)
    except Exception as exc:  # noqa: BLE001 - pickle refusals and corrupt files alike
        msg = f"cannot load checkpoint safely ({type(exc).__name__})"
        raise BadInputError(str(checkpoint), msg) from None
    if not isinstance(saved, dict):
        msg = f"not a checkpoint: holds a {type(saved).__name__}, not a dict of weights"
        raise BadInputError(str(checkpoint), msg)
    key = settings.checkpoint_key
    state = saved.get(key)
    if not isinstance(state, dict):
        msg = f"not a V-JEPA2 checkpoint: no {key!r} weights among its {_example_keys(saved)}"
        raise BadInputError(str(checkpoint), msg)
    if not any(str(k).endswith("patch_embed.proj.weight") for k in state):
        msg = (
            f"{key!r} is not a V-JEPA2 encoder (no patch_embed.proj.weight; {_example_keys(state)})"
        )
        raise BadInputError(str(checkpoint), msg)
    return {k.removeprefix("encoder."): v for k, v in convert_original_state_dict(state).items()}


def check_fits(state: dict[str, Any], config: Any, checkpoint: Path, model: str | None) -> None:
    """Refuse, in one line, encoder weights whose shapes do not fit ``config`` (e.g. a ViT-L
    checkpoint with ``model="vith"``); the model is built on the meta device (no memory)."""
    import torch
    from transformers import VJEPA2Model

    with torch.device("meta"):
        expected = VJEPA2Model(config).encoder.state_dict()
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    wrong = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    missing = [k for k in expected if k not in state]
    if not wrong and not missing:
        return
    have = _describe_weights(state)
    want = f"{config.hidden_size}-d, {config.num_hidden_layers} layers"
    detail = (
        f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the model needs {shapes[wrong[0]]}"
        if wrong
        else f"{len(missing)} weights missing, e.g. {missing[0]}"
    )
    msg = f"the checkpoint holds a {have} encoder, model={model!r} is {want} ({detail})"
    raise BadInputError(str(checkpoint), msg)


def _describe_weights(state: dict[str, Any]) -> str:
    proj = state.get("embeddings.patch_embeddings.proj.weight")
    layers = {int(m.group(1)) for k in state if (m := re.match(r"layer\.(\d+)\.", k))}
    width = f"{proj.shape[0]}-d, " if proj is not None else ""
    return f"{width}{len(layers)}-layer"


def _load_plain(checkpoint: Path) -> Any:
    import torch

    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle refusals and corrupt files alike
        msg = f"cannot load checkpoint safely ({type(exc).__name__})"
        raise BadInputError(str(checkpoint), msg) from None


def load_vjepa2(settings: VJEPA2Settings) -> Any:
    """A ``VJEPA2Model`` in eval mode from an original checkpoint or a local HF folder.

    An original checkpoint is checked before transformers is even imported (a wrong file
    fails in well under a second)."""
    checkpoint = Path(settings.checkpoint)
    if not checkpoint.exists():
        raise BadInputError(str(checkpoint), "checkpoint does not exist")
    state = None if checkpoint.is_dir() else read_encoder_state(settings)
    from transformers import VJEPA2Model

    if state is None:
        config = _vjepa2_config(settings.model, checkpoint)
        model = VJEPA2Model.from_pretrained(checkpoint, config=config, local_files_only=True)
        return model.eval()
    config = _vjepa2_config(settings.model, checkpoint)
    check_fits(state, config, checkpoint, settings.model)
    model = VJEPA2Model(config)
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        msg = (
            f"checkpoint does not fit the {settings.model} encoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
        raise BadInputError(str(checkpoint), msg)
    return model.eval()


def resolve_dtype(dtype: str, device: Any) -> tuple[Any, bool]:
    """``(weights' torch dtype, autocast?)`` for a :data:`~.config.DTYPES` name on ``device``:
    ``auto`` is bfloat16 weights on CUDA, float32 elsewhere."""
    import torch

    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "bfloat16-autocast":
        return torch.float32, device.type == "cuda"
    return getattr(torch, dtype), False


class VJEPA2Extractor:
    """Frozen V-JEPA2 encoder: the last hidden state's tokens; preprocessing as upstream's
    frozen evaluation (:mod:`embstore.extraction.preprocess`).

    On CUDA the weights are cast to ``settings.dtype`` (bfloat16 by default: no autocast, so no
    per-call casts), attention runs through PyTorch's SDPA (flash / memory-efficient kernels),
    and ``settings.compile`` wraps the model in ``torch.compile``.
    """

    name = "vjepa2"

    def __init__(self, settings: VJEPA2Settings) -> None:
        import torch

        self.settings = settings
        self.device = torch.device(settings.device)
        self.dtype, self.autocast = resolve_dtype(settings.dtype, self.device)
        model = load_vjepa2(settings)
        if model.config._attn_implementation != "sdpa":  # eager attention is ~2x slower
            model.set_attn_implementation("sdpa")
        self.model = model.to(self.device, dtype=self.dtype)
        self._forward = torch.compile(self.model) if settings.compile else self.model
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.crop = int(config.crop_size)
        self.num_frames = int(config.frames_per_clip)
        self._patch, self._tubelet = int(config.patch_size), int(config.tubelet_size)
        self._sha = sha256(Path(settings.checkpoint))

    def clip_spec(self, **settings: Any) -> ClipSpec:
        from .preprocess import ClipSpec

        return ClipSpec(crop=self.crop, **settings)

    def token_grid(self, num_frames: int) -> tuple[int, int, int]:
        side = self.crop // self._patch
        return (num_frames // self._tubelet, side, side)

    def tokens(self, clips: Any) -> Any:
        import torch

        clips = clips.to(self.device, dtype=self.dtype, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast)
        with torch.inference_mode(), autocast:
            out = self._forward(pixel_values_videos=clips, skip_predictor=True).last_hidden_state
        return out.float()

    def dtype_deviation(self, clips: Any, limit: int = 4) -> dict[str, Any] | None:
        """How far this run's dtype moves the pooled embedding from float32 weights, on up to
        ``limit`` of ``clips`` (relative difference); None when it runs in float32."""
        import copy

        import torch

        if self.dtype == torch.float32 and not self.autocast:
            return None
        x = clips[:limit]
        got = _pooled(self.model, x.to(self.device, self.dtype), self.autocast)  # not compiled
        reference = copy.deepcopy(self.model).float()
        expected = _pooled(reference, x.to(self.device, torch.float32), False)
        del reference
        rel = (got - expected).norm(dim=1) / expected.norm(dim=1)
        return {
            "clips": len(x),
            "relative_difference_mean": float(rel.mean()),
            "relative_difference_max": float(rel.max()),
        }

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        config = self.model.config.to_dict()
        keys = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "mlp_ratio",
            "patch_size",
            "tubelet_size",
            "crop_size",
        )
        is_folder = Path(self.settings.checkpoint).is_dir()
        dtype = str(self.dtype).removeprefix("torch.")
        return {
            "family": self.name,
            "model": self.settings.model or Path(self.settings.checkpoint).name,
            "checkpoint": str(self.settings.checkpoint),
            "checkpoint_sha256": self._sha,
            "checkpoint_key": None if is_folder else self.settings.checkpoint_key,
            "architecture": {k: config[k] for k in keys},
            "pooling": "mean over tokens of last_hidden_state; mean over clips",
            "dtype": "bfloat16 autocast" if self.autocast else dtype,
            "attention": self.model.config._attn_implementation,
            "compiled": bool(self.settings.compile),
            "device": self.device.type,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }


def _pooled(model: Any, clips: Any, autocast: bool) -> Any:
    import torch

    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model(pixel_values_videos=clips, skip_predictor=True).last_hidden_state
    return out.float().mean(dim=1)


@register("vjepa2")
def make_vjepa2(
    *,
    checkpoint: str,
    model: str | None = None,
    checkpoint_key: str = "target_encoder",
    device: str = "cpu",
    dtype: str = "auto",
    compile: bool = False,  # noqa: A002 - the setting's name
    **_: Any,
) -> VJEPA2Extractor:
    """A V-JEPA2 extractor from an :class:`~embstore.extraction.config.ExtractConfig`'s fields
    (the ones it does not use are ignored)."""
    settings = VJEPA2Settings(
        checkpoint=checkpoint,
        model=model,
        checkpoint_key=checkpoint_key,
        device=device,
        dtype=dtype,
        compile=compile,
    )
    return VJEPA2Extractor(settings)


__all__ = [
    "REGISTRY",
    "VJEPA2_PRESETS",
    "Extractor",
    "VJEPA2Extractor",
    "convert_original_state_dict",
    "check_fits",
    "read_encoder_state",
    "register",
    "resolve_dtype",
]

"""The latent-codec interface: what generation, the latent cache, probes and benchmarks know of a codec.

A codec maps audio to a latent sequence and back. :class:`LatentCodec` is the protocol every codec
implements (the DashengTokenizer, the ``transformers`` codec adapters, or a user's own); nothing
outside the codec's own package names a concrete class. :func:`load_codec` resolves a folder or a
Hugging Face repo id to the right class through the registry, read from ``config.json``: diffusers'
``_class_name`` (codecs saved by this suite) or transformers' ``model_type`` (official files).
:func:`register_codec` adds a kind in this process; an installed package adds one for every
process with an entry point in the group ``dashflow.codecs`` (name: the ``_class_name`` or
``model_type`` value, value: ``"module:Class"``). Entries are imported on first use, so this
module imports no model code. A saved pipeline names its codec component
``["dashflow.codecs", <class name>]``; the class resolves through the same registry.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from dashflow.errors import DashflowError
from dashflow.hub import resolve_folder
from dashflow.manifests import read_json

ENTRY_POINT_GROUP = "dashflow.codecs"
# config.json key -> value -> "module:Class"
_REGISTRY: dict[str, dict[str, str]] = {
    "_class_name": {
        "DashengTokenizer": "dashflow.tokenizer.model:DashengTokenizer",
        "TransformersCodec": "dashflow.tokenizer.transformers_codecs:TransformersCodec",
        "LoSATok": "dashflow.tokenizer.losatok:LoSATok",
        "ProjectedCodec": "dashflow.tokenizer.projected:ProjectedCodec",
    },
    "model_type": {
        "dashengtokenizer": "dashflow.tokenizer.model:DashengTokenizer",
        "encodec": "dashflow.tokenizer.transformers_codecs:TransformersCodec",
        "dac": "dashflow.tokenizer.transformers_codecs:TransformersCodec",
        "mimi": "dashflow.tokenizer.transformers_codecs:TransformersCodec",
    },
}


@dataclass
class LatentEncoding:
    """What ``encode`` returns: latents [B, T, D] (zero past each clip) and mask [B, T] bool
    (True for frames inside each clip). Codecs may subclass it to expose more parts (e.g. the
    DashengTokenizer's ``semantic`` and ``acoustic`` terms)."""

    latents: Any
    mask: Any


@runtime_checkable
class LatentCodec(Protocol):
    """A frozen audio codec as the rest of the suite sees it: an ``nn.Module`` with a
    ``from_pretrained(folder, torch_dtype=None, device=None)`` class method and these members.

    sample_rate: Hz of the audio it takes and gives; latent_dim: D; samples_per_latent: audio
    samples per latent frame (latent rate = sample_rate / samples_per_latent); min_samples: the
    shortest clip ``encode`` accepts.
    """

    sample_rate: int
    latent_dim: int
    samples_per_latent: int
    min_samples: int
    device: Any  # torch.device of the weights
    dtype: Any  # torch.dtype of the weights

    def encode(self, wav, lengths=None) -> LatentEncoding:
        """wav [B, S] float at ``sample_rate``, lengths [B] valid samples (None: all) -> LatentEncoding."""

    def decode(self, latents):
        """latents [B, T, D] -> wav [B, T * samples_per_latent]."""

    def latent_length(self, num_samples: int) -> int:
        """Latent frames ``encode`` gives for a clip of ``num_samples`` samples."""

    def weights_hash(self) -> str:
        """A hash of the weights (keys the latent and feature caches)."""


def latent_rate(codec: LatentCodec) -> float:
    """Latent frames per second."""
    return codec.sample_rate / codec.samples_per_latent


def register_codec(key: str, value: str, target: str) -> None:
    """Make ``load_codec`` open folders whose ``config.json`` has ``key == value`` (``key``:
    ``"_class_name"`` or ``"model_type"``) with ``target`` (``"module:Class"``, a class with
    ``from_pretrained(folder, torch_dtype=..., device=...)``)."""
    if key not in _REGISTRY:
        raise DashflowError(f"codec registry key must be one of {', '.join(_REGISTRY)}, got {key!r}")
    _REGISTRY[key][value] = target


def _plugins() -> dict[str, str]:
    """Codec kinds installed packages declare: entry-point name -> ``"module:Class"``."""
    return {entry.name: entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)}


def codec_class(name: str) -> type:
    """The registered or installed codec class called ``name`` (by class name); AttributeError if none."""
    targets = {t for kinds in _REGISTRY.values() for t in kinds.values()} | set(_plugins().values())
    for target in sorted(targets):
        if target.rsplit(":", 1)[1] == name:
            return _import(target)
    raise AttributeError(name)


def __getattr__(name: str) -> type:
    """Pipelines record their codec as ``["dashflow.codecs", <class name>]`` in ``model_index.json``;
    diffusers' loader then reads the class, and ``ModelMixin`` to know how to load it, from here."""
    if name == "ModelMixin":
        from diffusers import ModelMixin

        return ModelMixin
    return codec_class(name)


def _import(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def codec_target(config: dict) -> str:
    """The ``"module:Class"`` that opens a folder with this ``config.json`` content."""
    plugins = _plugins()
    for key, kinds in _REGISTRY.items():
        value = config.get(key)
        if isinstance(value, str) and value in kinds:
            return kinds[value]
        if isinstance(value, str) and value in plugins:
            return plugins[value]
    known = sorted({v for kinds in _REGISTRY.values() for v in kinds} | set(plugins))
    raise DashflowError(f"unknown codec kind (config.json has _class_name={config.get('_class_name')!r}, "
                        f"model_type={config.get('model_type')!r}); known kinds: {', '.join(known)}")


def load_codec(name_or_path: str | os.PathLike, torch_dtype=None, device=None, **hub_kwargs) -> LatentCodec:
    """Open a codec folder (or hub repo id) with the class its ``config.json`` names; eval mode,
    frozen. ``torch_dtype`` default float32, ``device`` default the CPU."""
    folder = resolve_folder(name_or_path, "codec", **hub_kwargs)
    if not (folder / "config.json").is_file():
        raise DashflowError(f"{folder}: not a codec folder (no config.json)")
    config = read_json(folder / "config.json")
    try:
        target = codec_target(config)
    except DashflowError as exc:
        raise DashflowError(f"{folder}: {exc}") from None
    codec = _import(target).from_pretrained(folder, torch_dtype=torch_dtype, device=device)
    return codec.requires_grad_(False).eval()


def reconstruct(model: LatentCodec, wav):
    """wav [S] at the codec's rate -> reconstruction [S] (float32, CPU).

    The clip is zero-padded to whole latent frames (and to the codec's shortest input), so its
    tail is encoded too.
    """
    import torch
    import torch.nn.functional as F

    size = wav.shape[-1]
    step = model.samples_per_latent
    target = max(-(-size // step) * step, -(-model.min_samples // step) * step)
    batch = F.pad(wav.float(), (0, target - size))[None].to(model.device, model.dtype)
    with torch.inference_mode():
        recon = model.decode(model.encode(batch).latents)
    return F.pad(recon.float(), (0, max(0, size - recon.shape[-1])))[0, :size].cpu()

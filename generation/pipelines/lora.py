"""LoRA adapters of the DiT (through peft): the adapter file, its checks, and the pipeline methods
diffusers users know (``load_lora_weights``, ``set_adapters``, ``fuse_lora`` / ``unfuse_lora``,
``unload_lora_weights``).

An adapter file is safetensors: the peft state dict of one adapter (``lora_A`` / ``lora_B`` of
each adapted linear layer, keyed by module path) and, in the metadata under ``dashflow_lora``,
the LoRA settings (rank, alpha, dropout, target modules) and the weights hash of the base model
it was trained on. Loading refuses a file without that metadata, one made for another base (the
hash, or a shape, differs: both are named) and weights that are not finite.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dashflow.errors import DashflowError, first_line
from dashflow.outputs import atomic_path

METADATA_KEY = "dashflow_lora"
# the DiT's attention (self and cross) and feed-forward projections
DEFAULT_TARGETS = r"backbone\..*\.(attn|cross_attn)\.(to_q|to_k|to_v|proj)|backbone\..*\.mlp\.net\.(0\.proj|2)"


@dataclass
class LoraSettings:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Any = DEFAULT_TARGETS  # a regex over module paths, or a list of module-name suffixes
    extra: dict[str, Any] = field(default_factory=dict)  # other peft LoraConfig fields

    def peft_config(self):
        from peft import LoraConfig

        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          **self.extra)


def check_settings(settings: LoraSettings) -> None:
    if settings.rank < 1 or not math.isfinite(settings.alpha) or settings.alpha <= 0 or not 0 <= settings.dropout < 1:
        raise DashflowError(f"LoRA needs rank >= 1, alpha > 0 and dropout in [0, 1), got rank {settings.rank}, "
                            f"alpha {settings.alpha}, dropout {settings.dropout}")


def base_hash(model: torch.nn.Module) -> str:
    """The weights hash of ``model`` without adapters: taken before the first adapter is added
    and kept on the model (fusing changes the weights, not the base they were trained on)."""
    if not hasattr(model, "_lora_base_hash"):
        model._lora_base_hash = model.weights_hash()
    return model._lora_base_hash


def add_lora(model: torch.nn.Module, settings: LoraSettings, adapter_name: str = "default") -> None:
    """Inject a fresh LoRA adapter into ``model`` (diffusers' PeftAdapterMixin ``add_adapter``);
    one DashflowError line when the target modules match nothing."""
    check_settings(settings)
    base_hash(model)
    try:
        with warnings.catch_warnings():  # peft warns at every adapter after the first: stacking is meant here
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            model.add_adapter(settings.peft_config(), adapter_name=adapter_name)
    except ValueError as exc:
        raise DashflowError(f"LoRA target modules {settings.target_modules!r}: {first_line(exc)}") from None


def save_lora(model: torch.nn.Module, path: str | os.PathLike, settings: LoraSettings,
              adapter_name: str = "default") -> Path:
    """Write adapter ``adapter_name`` of ``model`` (weights + settings + base hash), atomically."""
    from peft.utils import get_peft_model_state_dict

    state = {key: value.detach().cpu().contiguous()
             for key, value in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
    metadata = {METADATA_KEY: json.dumps({"base_weights_hash": base_hash(model), "settings": asdict(settings)})}
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """An adapter file's tensors and metadata (``base_weights_hash``, ``settings``); one
    DashflowError line when it is unreadable, carries no dashflow metadata or is not finite."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise DashflowError(f"{path}: not a readable LoRA file ({first_line(exc)})") from None
    if raw is None:
        raise DashflowError(f"{path}: no {METADATA_KEY} metadata (base model hash and LoRA settings); "
                            "files written by recipes/finetune.py carry it")
    try:
        metadata = json.loads(raw)
        LoraSettings(**metadata["settings"])
        metadata["base_weights_hash"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DashflowError(f"{path}: damaged {METADATA_KEY} metadata ({first_line(exc)})") from None
    if not tensors or not all(torch.isfinite(t).all() for t in tensors.values()):
        raise DashflowError(f"{path}: the adapter weights are empty or not finite")
    return tensors, metadata


def load_lora(model: torch.nn.Module, path: str | os.PathLike, adapter_name: str) -> dict:
    """Add the adapter of ``path`` to ``model`` as ``adapter_name``; returns its metadata."""
    from peft.utils import set_peft_model_state_dict

    tensors, metadata = read_lora(path)
    expected = base_hash(model)
    if metadata["base_weights_hash"] != expected:
        raise DashflowError(f"{path}: made for base weights {metadata['base_weights_hash']}, this model's are "
                            f"{expected}")
    if adapter_name in getattr(model, "peft_config", {}):
        raise DashflowError(f"an adapter called {adapter_name!r} is already loaded; pass another adapter_name")
    add_lora(model, LoraSettings(**metadata["settings"]), adapter_name)
    try:
        result = set_peft_model_state_dict(model, tensors, adapter_name=adapter_name)
    except RuntimeError as exc:  # shapes that do not fit this model
        model.delete_adapters(adapter_name)
        raise DashflowError(f"{path}: does not fit this model (base {expected}): {first_line(exc)}") from None
    if result.unexpected_keys:
        model.delete_adapters(adapter_name)
        raise DashflowError(f"{path}: {len(result.unexpected_keys)} tensors match no layer of this model "
                            f"(base {expected}), e.g. {result.unexpected_keys[0]}")
    return metadata


class LoraPipelineMixin:
    """The diffusers LoRA methods on a pipeline whose trained component is the DiT."""

    def _adapted(self) -> torch.nn.Module:
        return getattr(self, self.trained_component)

    def load_lora_weights(self, path: str | os.PathLike, adapter_name: str | None = None) -> str:
        """Load an adapter file (see the module docstring) as ``adapter_name`` (default: the file's
        stem); every loaded adapter is then active at weight 1. Returns the adapter's name."""
        model = self._adapted()
        name = adapter_name or Path(path).stem
        load_lora(model, path, name)
        model.set_adapters(list(model.peft_config), [1.0] * len(model.peft_config))
        return name

    def set_adapters(self, adapter_names: str | Sequence[str], adapter_weights: float | Sequence[float] | None = None):
        """Activate ``adapter_names`` with ``adapter_weights`` (one each, or one for all; default 1)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = [1.0] * len(names) if adapter_weights is None else (
            [float(adapter_weights)] * len(names) if isinstance(adapter_weights, (int, float)) else
            [float(w) for w in adapter_weights])
        if len(weights) != len(names) or not all(math.isfinite(w) for w in weights):
            raise DashflowError(f"adapter weights must be finite numbers, one per adapter: got {weights} for {names}")
        model = self._adapted()
        unknown = [name for name in names if name not in getattr(model, "peft_config", {})]
        if unknown:
            raise DashflowError(f"no adapter called {unknown[0]!r} is loaded (loaded: "
                                f"{', '.join(getattr(model, 'peft_config', {})) or 'none'})")
        model.set_adapters(names, weights)

    def fuse_lora(self, lora_scale: float = 1.0) -> None:
        """Merge the active adapters into the DiT's weights (faster sampling). The adapted layers'
        own weights are kept aside, so ``unfuse_lora`` restores them exactly (peft's unmerge
        subtracts, off by float rounding)."""
        model = self._adapted()
        if not hasattr(model, "_lora_unfused"):
            model._lora_unfused = {name: module.base_layer.weight.detach().clone()
                                   for name, module in model.named_modules() if hasattr(module, "base_layer")}
        model.fuse_lora(lora_scale)

    def unfuse_lora(self) -> None:
        model = self._adapted()
        model.unfuse_lora()
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, weight in getattr(model, "_lora_unfused", {}).items():
                modules[name].base_layer.weight.copy_(weight)
        model.__dict__.pop("_lora_unfused", None)

    def unload_lora_weights(self) -> None:
        """Remove every adapter: the DiT is the base model again, weight for weight."""
        model = self._adapted()
        if getattr(model, "peft_config", None):
            model.unload_lora()

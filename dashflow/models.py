"""``SafetensorsModelMixin``: diffusers ``ModelMixin`` models saved as the official Hugging Face
repos are (``config.json`` + ``model.safetensors``), loaded strictly through :mod:`dashflow.weights`.

diffusers' own methods write ``diffusion_pytorch_model.safetensors`` and only warn about
unexpected keys. This mixin reads single or sharded weights without first materialising random
ones, records the weights hash the files carry, and turns every failure into one DashflowError.
A subclass may let recomputable buffers be absent (``optional_buffers``), drop keys that have no
module (``ignored_prefixes``), keep float buffers in float32 whatever ``torch_dtype`` says
(``fp32_buffers``), and read its config its own way (``read_config``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import ModelMixin

from dashflow.errors import DashflowError, first_line
from dashflow.hub import resolve_folder
from dashflow.weights import (
    CONFIG_NAME,
    attach_weights_source,
    load_strict,
    load_weights,
    module_hash,
    save_weights,
    weights_hash,
)

logger = logging.getLogger(__name__)

# keys that transformers writes into config.json; they carry no architecture
_TRANSFORMERS_KEYS = ("architectures", "auto_map", "model_type", "torch_dtype", "dtype",
                      "transformers_version")
# what DiffusionPipeline.from_pretrained hands every component; only defaults are supported
_PIPELINE_DEFAULTS = {"device_map": None, "max_memory": None, "offload_folder": None,
                      "offload_state_dict": None, "variant": None, "use_safetensors": None,
                      "use_flashpack": False, "low_cpu_mem_usage": True, "disable_mmap": False,
                      "quantization_config": None}


class SafetensorsModelMixin(ModelMixin):
    """``save_pretrained`` / ``from_pretrained`` with ``config.json`` + ``model.safetensors``."""

    folder_kind: ClassVar[str] = "model"  # what error messages call the folder
    optional_buffers: ClassVar[bool] = False
    ignored_prefixes: ClassVar[tuple[str, ...]] = ()
    fp32_buffers: ClassVar[bool] = False

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True,
                        **_diffusers_kwargs) -> None:
        """Write ``config.json`` and ``model.safetensors`` (its weights hash recorded) into
        ``save_directory``, each atomically."""
        if not is_main_process:
            return
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_config(folder)
        self._dashflow_weights_hash = save_weights(self.state_dict(), folder)

    def weights_hash(self) -> str:
        """The weights hash (:mod:`dashflow.weights`): recorded at save time, never recomputed per call."""
        return module_hash(self)

    @classmethod
    def read_config(cls, path: Path) -> dict[str, Any]:
        """The constructor arguments stored in ``config.json`` at ``path``."""
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DashflowError(f"{path}: not valid JSON ({first_line(exc)})") from None
        if not isinstance(config, dict):
            raise DashflowError(f"{path}: config.json must hold a JSON object")
        for key in _TRANSFORMERS_KEYS:
            config.pop(key, None)
        return config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *,
                        subfolder: str | None = None, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **kwargs):
        """Load a local folder (or hub repo id) strictly: no missing, unexpected or mis-shaped keys.

        Accepts the hub arguments ``revision``, ``cache_dir``, ``token``, ``local_files_only``
        and DiffusionPipeline's loader arguments at their defaults. Returns the model in eval
        mode, in ``torch_dtype`` (default float32), on ``device`` (default the CPU).
        """
        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "token", "local_files_only")
                      if k in kwargs}
        for key, value in kwargs.items():
            if key not in _PIPELINE_DEFAULTS or value != _PIPELINE_DEFAULTS[key]:
                raise DashflowError(f"{cls.__name__}.from_pretrained: unsupported argument {key}={value!r}")
        folder = resolve_folder(pretrained_model_name_or_path, cls.folder_kind, subfolder=subfolder, **hub_kwargs)
        config_file = folder / CONFIG_NAME
        if not config_file.is_file():
            raise DashflowError(f"{config_file}: {cls.folder_kind} {CONFIG_NAME} not found")
        config = cls.read_config(config_file)
        try:
            with torch.device("meta"):
                model = cls.from_config(config)
        except (TypeError, ValueError) as exc:
            raise DashflowError(f"{config_file}: {first_line(exc)}") from None
        state, files, recorded = load_weights(folder)
        ignored = sorted(k for k in state if cls.ignored_prefixes and k.startswith(cls.ignored_prefixes))
        if ignored:
            logger.warning("%s: ignoring %d keys without a module here: %s", folder, len(ignored), ", ".join(ignored))
            state = {k: v for k, v in state.items() if k not in ignored}
            recorded = weights_hash(state.items())  # of what is kept, not of the files
        dtype = torch_dtype or torch.float32
        params = {name for name, _ in model.named_parameters()}
        for key, value in state.items():
            if value.is_floating_point():
                state[key] = value.float() if cls.fp32_buffers and key not in params else value.to(dtype)
        load_strict(model, state, files[0] if len(files) == 1 else folder, optional_buffers=cls.optional_buffers, assign=True)
        attach_weights_source(model, files, recorded)
        if device is not None:
            model.to(device)
        return model.eval()

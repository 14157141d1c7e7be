"""``config.json`` + ``model.safetensors`` checkpoints for diffusers ``ModelMixin`` models.

diffusers' own methods write ``diffusion_pytorch_model.safetensors`` and only warn about
unexpected keys. This mixin writes the file names of the official Hugging Face repos, reads
single or sharded (``model.safetensors.index.json``) weights, loads strictly without first
materialising random weights, and turns every failure into one ``DashflowError`` line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import ModelMixin
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dashflow.audio import atomic_path
from dashflow.errors import DashflowError, first_line
from dashflow.hub import resolve_folder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# keys that transformers writes into config.json; they carry no architecture
_TRANSFORMERS_KEYS = ("architectures", "auto_map", "model_type", "torch_dtype", "dtype",
                      "transformers_version")
# what DiffusionPipeline.from_pretrained hands every component; only defaults are supported
_PIPELINE_DEFAULTS = {"device_map": None, "max_memory": None, "offload_folder": None,
                      "offload_state_dict": None, "variant": None, "use_safetensors": None,
                      "use_flashpack": False, "low_cpu_mem_usage": True, "disable_mmap": False,
                      "quantization_config": None}






def _read_state_dict(folder: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    index = folder / WEIGHTS_INDEX_NAME
    try:
        if (folder / WEIGHTS_NAME).is_file():
            return load_file(folder / WEIGHTS_NAME, device=str(device))
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(folder / shard, device=str(device)))
            return state
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise DashflowError(f"{folder}: unreadable weights ({first_line(exc)})") from None
    raise DashflowError(f"{folder}: no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME})")


def _check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = model.state_dict()
    for key, tensor in expected.items():  # empty tensors (dummy_param) may be left out of files
        if tensor.numel() == 0 and key not in state:
            state[key] = torch.empty(tensor.shape, dtype=tensor.dtype)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = [f"{len(found)} {what} (first: {found[0]})" for what, found in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches, file vs model", shapes)) if found]
    if problems:
        raise DashflowError(f"{folder}: checkpoint does not match {type(model).__name__} built from "
                            f"its config.json: {'; '.join(problems)}")


class SafetensorsModelMixin(ModelMixin):
    """``save_pretrained`` / ``from_pretrained`` with ``config.json`` + ``model.safetensors``."""

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically) into ``save_directory``."""
        if not is_main_process:
            return
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_config(folder)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *,
                        subfolder: str | None = None, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu", **kwargs):
        """Load a local folder (or hub repo id) strictly: no missing, unexpected or mis-shaped keys.

        Accepts the hub arguments ``revision``, ``cache_dir``, ``token``, ``local_files_only``
        and DiffusionPipeline's loader arguments at their defaults. Returns the model in eval
        mode, in ``torch_dtype`` (default float32), on ``device``.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "token", "local_files_only")
                      if k in kwargs}
        for key, value in kwargs.items():
            if key not in _PIPELINE_DEFAULTS or value != _PIPELINE_DEFAULTS[key]:
                raise DashflowError(f"{cls.__name__}.from_pretrained: unsupported argument {key}={value!r}")
        folder = resolve_folder(pretrained_model_name_or_path, "model", subfolder=subfolder, **hub_kwargs)
        config_file = folder / CONFIG_NAME
        if not config_file.is_file():
            raise DashflowError(f"{folder}: no {CONFIG_NAME}")
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DashflowError(f"{config_file}: not valid JSON ({first_line(exc)})") from None
        for key in _TRANSFORMERS_KEYS:
            config.pop(key, None)
        try:
            with torch.device("meta"):
                model = cls.from_config(config)
        except (TypeError, ValueError) as exc:
            raise DashflowError(f"{config_file}: {first_line(exc)}") from None
        state = _read_state_dict(folder, device)
        _check_keys(model, state, folder)
        dtype = torch_dtype or torch.float32
        model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                              strict=True, assign=True)
        return model.eval()

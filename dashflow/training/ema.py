"""The EMA of a model's parameters (``diffusers.training_utils.EMAModel``), written into and read
from every checkpoint as safetensors: one file, or one per process under FSDP (shards)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path
from dashflow.training.config import EMAConfig

EMA_NAME = "ema.safetensors"


def attach_ema(accelerator: Accelerator, model: torch.nn.Module, cfg: EMAConfig) -> EMAModel | None:
    """An EMA of the (prepared) model's parameters, written into / read from every checkpoint as
    safetensors (one file, or one per process under FSDP, whose parameters are shards)."""
    if not cfg.enabled:
        return None
    core = accelerator.unwrap_model(model)
    names = [name for name, _ in core.named_parameters()]
    ema = EMAModel(core.parameters(), decay=cfg.decay, update_after_step=cfg.update_after_step, foreach=True)
    sharded = accelerator.distributed_type == DistributedType.FSDP

    def path(folder: str) -> Path:
        return Path(folder) / (f"ema_{accelerator.process_index}.safetensors" if sharded else EMA_NAME)

    def save_hook(models, weights, folder: str) -> None:
        if sharded or accelerator.is_main_process:
            save_ema(ema, names, path(folder))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(lambda models, folder: load_ema(ema, names, path(folder)))
    return ema


def save_ema(ema: EMAModel, names: list[str], path: Path) -> None:
    """Shadow weights by parameter name + the EMA counters (JSON metadata), atomically."""
    state = {key: value for key, value in ema.state_dict().items() if key != "shadow_params"}
    tensors = {name: p.detach().cpu().contiguous() for name, p in zip(names, ema.shadow_params)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ema_state": json.dumps(state)})


def load_ema(ema: EMAModel, names: list[str], path: Path) -> None:
    """Restore what :func:`save_ema` wrote; DashflowError when missing or not this model's."""
    if not path.is_file():
        raise DashflowError(f"{path}: checkpoint has no EMA weights (resume with ema.enabled=false, "
                            "or start fresh with train.resume='')")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            state = json.loads(handle.metadata()["ema_state"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise DashflowError(f"{path}: unreadable EMA file ({exc})") from None
    if sorted(tensors) != sorted(names):
        raise DashflowError(f"{path}: EMA weights do not match the model's parameters")
    device = ema.shadow_params[0].device
    ema.load_state_dict({**state, "shadow_params": [tensors[name].to(device) for name in names]})



"""The end of a run: its trained weights (raw and EMA) saved as pipelines.

The frozen components (tokenizer, text encoder, normaliser) are the same in every exported
pipeline: the second pipeline hard-links their files from the first instead of writing them again
(a copy where links are impossible), so they cost disk and memory once. diffusers' loader opens
each pipeline folder on its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.training_utils import EMAModel


def gather_weights(accelerator: Accelerator, model: torch.nn.Module,
                   ema: EMAModel | None = None) -> dict[str, torch.Tensor]:
    """Full CPU state dict of the model (its EMA weights when ``ema`` is given) on the main
    process ({} elsewhere). Call on every process (FSDP gathers shards)."""
    params = list(accelerator.unwrap_model(model).parameters())
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        state = accelerator.get_state_dict(model)
        # a copy only where the EMA swap would change the tensors under it
        state = ({key: value.detach().to("cpu", copy=ema is not None) for key, value in state.items()}
                 if accelerator.is_main_process else {})
    finally:
        if ema is not None:
            ema.restore(params)
    return state


def model_from_weights(model_class: type[ModelMixin], config: dict, state: dict[str, torch.Tensor],
                       device: torch.device | str = "cpu") -> ModelMixin:
    """A standalone eval-mode ``model_class`` of ``config`` holding the tensors of ``state``
    themselves (built on the meta device: no random init, no copy)."""
    with torch.device("meta"):
        model = model_class.from_config(config)
    model.load_state_dict(state, assign=True)
    return model.to(device).eval()


def export_pipelines(accelerator: Accelerator, model: torch.nn.Module, ema: EMAModel | None,
                     build: Callable[[ModelMixin], DiffusionPipeline], folder: str | Path) -> list[Path]:
    """Save the trained model as pipelines (``build`` wraps a standalone model in one): raw
    weights to ``<folder>/raw``, EMA weights (when kept) to ``<folder>/ema``, the second sharing
    the first's frozen component files. Call on every process. Returns the folders."""
    core = accelerator.unwrap_model(model)
    config, model_class = dict(core.config), type(core)
    written: list[Path] = []
    for kind, average in (("raw", None), ("ema", ema)):
        if kind == "ema" and ema is None:
            continue
        weights = gather_weights(accelerator, model, average)
        target = Path(folder) / kind
        if accelerator.is_main_process:
            trained = model_from_weights(model_class, config, weights)
            del weights
            save_pipeline(build(trained), trained, target, shared=written[0] if written else None)
        written.append(target)
    accelerator.wait_for_everyone()
    return written


def save_pipeline(pipeline: DiffusionPipeline, trained: ModelMixin, folder: Path, shared: Path | None) -> None:
    """``pipeline.save_pretrained(folder)``; with ``shared`` (a pipeline folder saved from the
    same frozen components), only the ``trained`` component is written and the others' files are
    hard-linked from ``shared``."""
    if shared is None:
        pipeline.save_pretrained(folder)
        return
    name = next(key for key, component in pipeline.components.items() if component is trained)
    shutil.rmtree(folder, ignore_errors=True)
    for source in sorted(shared.rglob("*")):
        relative = source.relative_to(shared)
        if source.is_file() and relative.parts[0] != name:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system, or no hard links there
                shutil.copy2(source, target)
    trained.save_pretrained(folder / name)

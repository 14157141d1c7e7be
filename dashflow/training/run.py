"""The frame of a recipe's run, written once: the seeded Accelerator, the model prepared with its
AdamW, schedule and EMA and resumed, one optimizer step over the micro-batches of a global
batch, due checkpoints, and the export at the end.

    accelerator = start_accelerator(cfg.train, accumulation)
    model = ...                                         # the recipe's own model (and frozen parts)
    run = prepare_run(accelerator, model, cfg.optim, cfg.train, cfg, cfg.ema)
    for step in run.steps():
        losses, stats = run.step(next(batches), loss_of, LOGGED)   # loss_of(micro, position) -> dict
        log.step(step, losses, **stats)
        run.checkpoint(step)
    run.export_pipelines(build, folder)                 # or run.save_final(): save_pretrained

Micro-batch ``position`` is its index in the global batch (``process_index x accumulation +
index``), which recipes key their randomness by, so N processes with accumulation A compute what
one process with N x A does, and a resumed run what an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.training_utils import EMAModel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from dashflow.errors import DashflowError
from dashflow.training.accelerator import build_accelerator, is_due
from dashflow.training.checkpoints import resume_training, save_checkpoint
from dashflow.training.config import EMAConfig, OptimConfig, TrainConfig
from dashflow.training.ema import attach_ema
from dashflow.training.export import export_pipelines
from dashflow.training.optim import adamw, lr_schedule, optimizer_step


def start_accelerator(train: TrainConfig, accumulation: int = 1) -> Accelerator:
    """The run's Accelerator (:func:`build_accelerator`), with every process seeded alike so that
    models built next start from the same weights."""
    accelerator = build_accelerator(train.output_dir, train.mixed_precision, gradient_accumulation_steps=accumulation)
    set_seed(train.seed)
    return accelerator


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """Cut a batch (tensors and lists along dim 0) into ``parts`` equal micro-batches, in order."""
    size = len(next(iter(batch.values())))
    if size % parts:
        raise DashflowError(f"a batch of {size} clips does not split into {parts} micro-batches")
    step = size // parts
    return [{key: value[i:i + step] for key, value in batch.items()} for i in range(0, size, step)]


@dataclass
class TrainingRun:
    """A prepared run: ``model`` / ``optimizer`` / ``scheduler`` wrapped by ``accelerator``, the
    EMA (or None) and the step a resume continues after."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: Optimizer
    scheduler: LambdaLR
    ema: EMAModel | None
    start_step: int
    train: TrainConfig
    optim: OptimConfig
    config: Any

    def steps(self) -> range:
        return range(self.start_step + 1, self.train.max_steps + 1)

    def step(self, batch: dict[str, Any], loss_of: Callable[[dict[str, Any], int], Mapping[str, torch.Tensor]],
             logged: Sequence[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One optimizer step over ``batch`` (this process's share of the global batch), split into
        the accumulation's micro-batches: ``loss_of(micro, position)["loss"]`` is backpropagated for
        each. Returns the ``logged`` losses averaged over the micro-batches (device scalars) and
        ``{"grad_norm", "lr"}``."""
        accelerator, accumulation = self.accelerator, self.accelerator.gradient_accumulation_steps
        totals = torch.zeros(len(logged), device=accelerator.device)
        for index, micro in enumerate(split_batch(batch, accumulation)):
            with accelerator.accumulate(self.model):
                losses = loss_of(micro, accelerator.process_index * accumulation + index)
                accelerator.backward(losses["loss"])
            totals += torch.stack([losses[key].detach().float() for key in logged]) / accumulation
        grad_norm, lr = optimizer_step(accelerator, self.model, self.optimizer, self.scheduler, self.optim.grad_clip,
                                       self.ema)
        return dict(zip(logged, totals)), {"grad_norm": grad_norm, "lr": lr}

    def checkpoint(self, step: int) -> None:
        """Save a checkpoint when ``step`` is due (``train.checkpoint_every``, and the last step)."""
        if is_due(step, self.train.checkpoint_every, self.train.max_steps):
            save_checkpoint(self.accelerator, self.train.output_dir, step, self.config, self.train.keep_checkpoints)

    def export_pipelines(self, build: Callable[[ModelMixin], DiffusionPipeline], folder: str | Path) -> list[Path]:
        """The raw and EMA weights as pipelines under ``folder`` (:func:`export_pipelines`); ends the run."""
        written = export_pipelines(self.accelerator, self.model, self.ema, build, folder)
        for path in written:
            self.accelerator.print(f"saved {path}")
        self.accelerator.end_training()
        return written

    def save_final(self) -> Path:
        """``save_pretrained`` of the trained model to ``<output_dir>/final``; ends the run."""
        folder = Path(self.train.output_dir) / "final"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(folder)
            self.accelerator.print(f"saved {folder}")
        self.accelerator.end_training()
        return folder


def prepare_run(accelerator: Accelerator, model: torch.nn.Module, optim: OptimConfig, train: TrainConfig,
                config: Any, ema: EMAConfig | None = None) -> TrainingRun:
    """AdamW and the LR schedule for ``model``, all three prepared by ``accelerator``, the EMA
    (with ``ema``), then the resume ``train.resume`` asks for (weights, optimizer, schedule, EMA,
    RNG; the data position is the step). ``config`` is saved into every checkpoint."""
    optimizer = adamw(model.parameters(), optim)
    scheduler = lr_schedule(optimizer, optim, train.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    average = attach_ema(accelerator, model, ema) if ema is not None else None
    start_step = resume_training(accelerator, train.output_dir, train.resume)
    return TrainingRun(accelerator, model, optimizer, scheduler, average, start_step, train, optim, config)

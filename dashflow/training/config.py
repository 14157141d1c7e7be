"""The config sections every recipe shares (``train``, ``optim``, ``ema``) and their checks.

A recipe's schema nests these (``Config.train: TrainConfig``); a recipe needing more fields or
other defaults subclasses them (the tokenizer's GAN adds a discriminator LR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dashflow.errors import DashflowError

SCHEDULES = ("constant_with_warmup", "cosine")


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    max_steps: int = 300_000
    seed: int = 0
    mixed_precision: str = "auto"    # auto = bf16 on CUDA, none on CPU
    log_every: int = 50
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2        # 0 keeps all
    resume: str = "latest"           # latest | "" (fresh) | a step_* folder


@dataclass
class OptimConfig:
    lr: float = 5e-5                 # AdamW peak LR
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    schedule: str = "constant_with_warmup"  # constant_with_warmup | cosine
    warmup_steps: int = 10000
    final_lr_ratio: float = 0.1      # cosine only: the LR at max_steps, relative to the peak
    grad_clip: float = 1.0
    gradient_accumulation_steps: int = 1


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.9999            # ceiling; diffusers ramps it as (1 + n) / (10 + n) before
    update_after_step: int = 0


def check_training(train: TrainConfig, optim: OptimConfig, sizes: Mapping[str, float] = {}) -> None:
    """One DashflowError line for ``train`` / ``optim`` settings no run can use, or any of the
    recipe's own ``sizes`` (by dotted name) that is not positive."""
    positive = {"train.max_steps": train.max_steps, "train.log_every": train.log_every,
                "train.checkpoint_every": train.checkpoint_every,
                "optim.gradient_accumulation_steps": optim.gradient_accumulation_steps, **sizes}
    bad = [f"{name}={value}" for name, value in positive.items() if value <= 0]
    if bad:
        raise DashflowError(f"{', '.join(bad)}: must be positive")
    if optim.schedule not in SCHEDULES:
        raise DashflowError(f"optim.schedule={optim.schedule!r}: use {' or '.join(SCHEDULES)}")

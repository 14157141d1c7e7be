"""LR schedules that resume exactly, AdamW, and one optimizer step (clip, step, schedule, zero, EMA)."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from dashflow.training.config import OptimConfig

logger = logging.getLogger(__name__)


class CosineWithWarmup:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine from 1 to ``final_ratio``
    at ``total_steps`` (held there after). A plain object, so schedulers save it as numbers."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.1):
        self.total_steps, self.warmup_steps, self.final_ratio = total_steps, warmup_steps, final_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ConfiguredLambdaLR(LambdaLR):
    """A LambdaLR whose checkpoint restores only its position (the step).

    The peak LRs and the :class:`CosineWithWarmup` settings stay those of the config it was built
    from: an unchanged config resumes exactly, and a run resumed with a new ``max_steps`` or
    learning rate follows the new schedule from the step it reached (said in one warning line)
    instead of silently keeping the checkpoint's.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        configured = self.state_dict()
        changed = [f"{key} {state_dict.get(key)} -> {configured[key]}" for key in ("base_lrs", "lr_lambdas")
                   if state_dict.get(key) != configured[key]]
        super().load_state_dict({**state_dict, "base_lrs": configured["base_lrs"],
                                 "lr_lambdas": configured["lr_lambdas"]})
        lrs = [base * schedule(self.last_epoch) for base, schedule in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs
        if changed:
            logger.warning("resuming with the configured LR schedule, not the checkpoint's: %s", "; ".join(changed))


def cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                    final_ratio: float = 0.1) -> ConfiguredLambdaLR:
    """Cosine decay to ``final_ratio`` of the peak LR over ``total_steps``, after warm-up."""
    return ConfiguredLambdaLR(optimizer, CosineWithWarmup(total_steps, warmup_steps, final_ratio))


def lr_schedule(optimizer: Optimizer, cfg: OptimConfig, total_steps: int) -> ConfiguredLambdaLR:
    """Linear warm-up, then constant (``constant_with_warmup``) or cosine to ``final_lr_ratio``."""
    final = 1.0 if cfg.schedule == "constant_with_warmup" else cfg.final_lr_ratio
    return cosine_schedule(optimizer, total_steps, cfg.warmup_steps, final)


def adamw(parameters, cfg: OptimConfig, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over the ``parameters`` that need gradients, at ``lr`` (default ``cfg.lr``)."""
    trainable = [p for p in parameters if p.requires_grad]
    return torch.optim.AdamW(trainable, cfg.lr if lr is None else lr, betas=tuple(cfg.betas),
                             weight_decay=cfg.weight_decay)


def optimizer_step(accelerator: Accelerator, model: torch.nn.Module, optimizer: Optimizer,
                   scheduler: LambdaLR, grad_clip: float, ema: EMAModel | None = None,
                   ) -> tuple[torch.Tensor, float]:
    """Clip ``model``'s gradients, step ``optimizer`` and ``scheduler``, zero the gradients and
    update the EMA (if any). Returns (gradient norm before clipping, on the device; the LR this
    update used)."""
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.step(accelerator.unwrap_model(model).parameters())
    return grad_norm, lr

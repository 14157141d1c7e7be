"""The sampling schedule of the Euler flow sampler (UniFlow-Audio's ``inference_cli.py`` and the
Dasheng-AudioGen remote code's ``scheduler.py``): sway sigmas and the scheduler that steps them.
The loop itself is :meth:`dashflow.generation.sampling.cfm.FlowMatching.sample`.

``diffusers.FlowMatchEulerDiscreteScheduler`` takes the custom sigmas and appends a final 0, so
a sway schedule of N steps (N + 1 sigmas) would make N + 1 model calls, as the official loop
does. The last sway sigma is ``1 - (1 + cos(pi / 2))``, exactly 0 in float32, so the last call's
velocity is multiplied by 0 - 0: ``skip_final_step`` (default) leaves that call out, with
bit-identical results (``benchmarks/results/sampler_final_step.json``).

Timesteps: the official sampler hands the backbone a 0-dim float timestep, which the
reference backbone expands and casts to ``long`` (truncating ``1000 * sigma``; training only
ever sees integer timesteps). ``truncate_timesteps=True`` (default) reproduces that; ``False``
feeds the exact ``1000 * sigma``. The Euler update always uses the exact sigmas, in fp32.
"""

from __future__ import annotations

import inspect
import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin
from torch import Tensor

from dashflow.errors import DashflowError

NOOP_SIGMA = 1e-6  # a final sigma this close to 0 makes the last Euler step a no-op


def sway_sigmas(num_steps: int, sway_coef: float | None = -1.0) -> Tensor:
    """Sigmas [N + 1] (fp32, as the reference): ``t_i = i / N``, ``t += s (cos(pi t / 2) - 1 + t)``,
    ``sigma = 1 - t``; s = -1 gives ``cos(pi i / (2N))``. ``s`` 0 or None: ``linspace(1, 1/N, N)``."""
    if num_steps < 1:
        raise DashflowError(f"num_steps must be >= 1, not {num_steps}")
    if not sway_coef:
        return torch.linspace(1.0, 1.0 / num_steps, num_steps)
    t = torch.linspace(0, 1, num_steps + 1)
    t = t + sway_coef * (torch.cos(math.pi / 2.0 * t) - 1.0 + t)
    return 1.0 - t


def make_scheduler(sigmas: Tensor, scheduler: SchedulerMixin | None = None,
                   device: torch.device | str = "cpu") -> SchedulerMixin:
    """A fresh copy of ``scheduler`` (default: FlowMatchEulerDiscreteScheduler, 1000 train steps)
    set to ``sigmas`` (+ the final 0 it appends), so its own settings (e.g. ``shift`` != 1:
    ``s sigma / (1 + (s - 1) sigma)``) apply. A scheduler that takes no custom sigmas (e.g. the
    Heun one) spaces ``len(sigmas)`` steps its own way."""
    template = scheduler if scheduler is not None else FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    fresh = type(template).from_config(template.config)
    if "sigmas" in inspect.signature(fresh.set_timesteps).parameters:
        fresh.set_timesteps(sigmas=sigmas.cpu().numpy(), device=device)
    else:
        fresh.set_timesteps(len(sigmas), device=device)
    return fresh

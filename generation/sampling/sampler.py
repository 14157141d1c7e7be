"""Euler flow sampler with sway sigmas and classifier-free guidance (UniFlow-Audio's
``inference_cli.py`` and the Dasheng-AudioGen remote code's ``scheduler.py``).

``diffusers.FlowMatchEulerDiscreteScheduler`` takes the custom sigmas and appends a final 0, so
a sway schedule of N steps (N + 1 sigmas) would make N + 1 model calls, as the official loop
does. The last sway sigma is ``1 - (1 + cos(pi / 2))``, exactly 0 in float32, so the last call's
velocity is multiplied by 0 - 0: ``skip_final_step`` (default) leaves that call out, with
bit-identical results (``benchmarks/results/sampler_final_step.json``).
Guidance (scale > 1) runs ``[uncond; cond]`` as one batch; uncond zeroes the context and the
time-aligned context and keeps the masks.

Timesteps: the official sampler hands the backbone a 0-dim float timestep, which the
reference backbone expands and casts to ``long`` (truncating ``1000 * sigma``; training only
ever sees integer timesteps). ``truncate_timesteps=True`` (default) reproduces that; ``False``
feeds the exact ``1000 * sigma``. The Euler update always uses the exact sigmas, in fp32.
"""

from __future__ import annotations

import inspect
import math

import torch
from dashflow.generation.model.audiogen import AudioGenModel, Conditioning
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

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


@torch.no_grad()
def sample(model: AudioGenModel, cond: Conditioning, *, num_steps: int = 25, guidance_scale: float = 5.0,
           sway_coef: float | None = -1.0, scheduler: SchedulerMixin | None = None,
           generator: torch.Generator | None = None,
           noise: Tensor | None = None, skip_final_step: bool = True, truncate_timesteps: bool = True,
           normalizer=None, progress: bool = False) -> Tensor:
    """Integrate from noise to latents [B, C, T] (``T = cond.latent_mask.shape[1]``).

    guidance_scale 1 runs the conditional pass only (5.0 for TTA/TTM, 1.0 for SE); noise
    ``randn[B, C, T]`` from ``generator`` unless ``noise`` is given; frames past an item's
    length are computed but masked out of attention (trim them with ``cond.latent_mask``).
    ``scheduler`` (a pipeline's component; default FlowMatchEulerDiscreteScheduler) is copied and
    set to the sway sigmas, and steps the latents. ``skip_final_step`` (default) leaves out the
    last call when its step is a no-op (|sigma| < 1e-6: the sway schedule's last sigma is 0);
    False makes the official N + 1 calls.
    ``normalizer`` (a LatentNormalizer) maps the result back to tokenizer latents.
    """
    if guidance_scale < 1:
        raise DashflowError(f"guidance_scale must be >= 1 (1 = no guidance), not {guidance_scale}")
    b, t = cond.latent_mask.shape
    device, dtype = model.device, model.dtype
    shape = (b, model.config.latent_dim, t)
    if noise is None:
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    elif tuple(noise.shape) != shape:
        raise DashflowError(f"noise shape {tuple(noise.shape)} != {shape}")
    latents = noise.to(device=device, dtype=torch.float32)
    guided = guidance_scale > 1
    batch_cond = cond.null().cat(cond) if guided else cond
    scheduler = make_scheduler(sway_sigmas(num_steps, sway_coef), scheduler, device)
    timesteps = scheduler.timesteps
    if skip_final_step and abs(float(scheduler.sigmas[-2])) < NOOP_SIGMA:
        timesteps = timesteps[:-1]
    prepared = model.prepare(batch_cond)  # what every step shares: computed once
    for step_t in tqdm(timesteps, delay=1.0, disable=not progress, desc="sampling", leave=False):
        x_in = torch.cat([latents, latents]) if guided else latents
        t_in = torch.trunc(step_t) if truncate_timesteps else step_t
        v = model.velocity(x_in.to(dtype), t_in.expand(x_in.shape[0]), batch_cond, prepared).float()
        if guided:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + guidance_scale * (v_cond - v_uncond)
        latents = scheduler.step(v, step_t, latents).prev_sample
    return latents if normalizer is None else normalizer.denormalize(latents)

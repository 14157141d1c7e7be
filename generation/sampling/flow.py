"""The pieces of the flow-matching objective of UniFlow-Audio / Dasheng-AudioGen (UniFlow-Audio's
``models/flow_matching.py``, github.com/wsntxxn/UniFlow-Audio): its settings, the noise levels,
the path, the masked loss and the latent normaliser. :class:`~dashflow.generation.sampling.cfm.FlowMatching`
puts them together with the sampler.

Default (the reference): ``u ~ logit-normal(0, 1)``, ``idx = floor(1000 u)``,
``sigma = 1 - idx / 1000`` (never 0), network time ``1000 * sigma``,
``x_sigma = (1 - sigma) x0 + sigma eps``, target ``eps - x0``; masked MSE in fp32 (per item:
sum over valid frames x channels / count, then the batch mean) + 0.1 local + 0.1 global
duration loss; classifier-free-guidance dropout 0.2 per item (context and time-aligned
context zeroed after the adapter, masks kept).

Options, all off by default and all explicit in ``FlowMatchingConfig``: uniform ``u``, a
constant time shift, the RAE dimension-dependent shift ``s = sqrt(C * frames / base)``
(RAE, github.com/bytetriper/RAE), and per-channel latent normalisation
(``LatentNormalizer``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from dashflow.errors import DashflowError
from dashflow.models import SafetensorsModelMixin


@dataclass
class FlowMatchingConfig:
    """Training objective settings (defaults = the reference)."""

    num_train_timesteps: int = 1000
    timestep_sampling: str = "logit_normal"  # "logit_normal" | "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    time_shift: float = 1.0  # sigma' = s sigma / (1 + (s - 1) sigma); 1 = none (reference)
    dimension_shift_base: int | None = None  # RAE: s = sqrt(C * valid_frames / base) per item
    cfg_dropout: float = 0.2
    local_duration_weight: float = 0.1
    global_duration_weight: float = 0.1
    normalize_latents: bool = False  # requires a fitted LatentNormalizer



def check_config(config: FlowMatchingConfig) -> None:
    """Reject invalid settings (works on the dataclass and on its OmegaConf form)."""
    if config.timestep_sampling not in ("logit_normal", "uniform"):
        raise DashflowError(f"timestep_sampling={config.timestep_sampling!r}: use logit_normal or uniform")
    if config.time_shift <= 0 or not 0 <= config.cfg_dropout <= 1 or config.num_train_timesteps < 1:
        raise DashflowError("need time_shift > 0, 0 <= cfg_dropout <= 1, num_train_timesteps >= 1")
    if config.dimension_shift_base is not None and config.dimension_shift_base <= 0:
        raise DashflowError("dimension_shift_base must be positive")


def shift_sigmas(sigmas: Tensor, shift: float | Tensor) -> Tensor:
    """Time shift ``s sigma / (1 + (s - 1) sigma)`` (identity for s = 1; diffusers' ``shift``)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def dimension_shift(channels: int, frames: int | Tensor, base: int = 4096) -> float | Tensor:
    """RAE's dimension-dependent shift ``sqrt(C * T / base)`` (8.84 for 1280 x 250, base 4096)."""
    if isinstance(frames, Tensor):
        return torch.sqrt(channels * frames.float() / base)
    return math.sqrt(channels * frames / base)


def sample_noise_levels(batch_size: int, config: FlowMatchingConfig, *, channels: int,
                        frames: Tensor, generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Per-item noise levels: sigmas [B] in {1.0, 0.999, ..., 0.001} (then shifted) and the
    network timesteps ``N * sigma`` [B]. ``frames`` [B] valid lengths (for the RAE shift)."""
    n = config.num_train_timesteps
    if config.timestep_sampling == "logit_normal":
        u = torch.sigmoid(torch.randn(batch_size, generator=generator) * config.logit_std
                          + config.logit_mean)
    else:
        u = torch.rand(batch_size, generator=generator)
    idx = (u * n).long().clamp(max=n - 1)
    sigmas = (n - idx).float() / n
    if config.dimension_shift_base is not None:
        sigmas = shift_sigmas(sigmas, dimension_shift(channels, frames.cpu(), config.dimension_shift_base))
    elif config.time_shift != 1:
        sigmas = shift_sigmas(sigmas, config.time_shift)
    return sigmas.to(device), (sigmas * n).to(device)


def interpolate(x0: Tensor, noise: Tensor, sigmas: Tensor | float) -> Tensor:
    """The flow path ``x_sigma = (1 - sigma) x0 + sigma noise`` (sigma = 1 is pure noise): the one
    place training noises clean latents and sampling noises init or known latents."""
    return (1 - sigmas) * x0 + sigmas * noise


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """fp32 MSE of [B, C, T] tensors over valid frames ``mask`` [B, T]: per-item sum over
    valid T x C divided by its count, then the batch mean."""
    m = mask.to(torch.float32)[:, None, :]
    err = (pred.float() - target.float()).pow(2) * m
    count = m.sum(dim=(1, 2)) * pred.shape[1]
    return (err.sum(dim=(1, 2)) / count.clamp(min=1)).mean()


class LatentNormalizer(SafetensorsModelMixin, ConfigMixin):
    """Per-channel latent normalisation ``z = (x - mean) / std``, ``std = sqrt(var + eps)``
    (RAE). Off by default: the official model uses raw latents."""

    @register_to_config
    def __init__(self, channels: int = 1280, eps: float = 1e-6):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @classmethod
    @torch.no_grad()
    def fit(cls, batches: Iterable[Tensor | tuple[Tensor, Tensor]], eps: float = 1e-6) -> LatentNormalizer:
        """Statistics over valid frames of latents [B, C, T] (or ``(latents, mask [B, T])`` pairs)."""
        count, total, squares = 0.0, None, None
        for item in batches:
            x, mask = item if isinstance(item, (tuple, list)) else (item, None)
            x = x.double()
            m = torch.ones(x.shape[0], x.shape[2], dtype=torch.float64, device=x.device) \
                if mask is None else mask.to(torch.float64)
            xm = x * m[:, None, :]
            count += float(m.sum())
            total = xm.sum(dim=(0, 2)) + (0 if total is None else total)
            squares = (xm * x).sum(dim=(0, 2)) + (0 if squares is None else squares)
        if total is None or count < 2:
            raise DashflowError("LatentNormalizer.fit needs at least two valid latent frames")
        mean = total / count
        var = (squares / count - mean ** 2).clamp(min=0)
        norm = cls(channels=mean.numel(), eps=eps)
        norm.mean.copy_(mean.float())
        norm.std.copy_(torch.sqrt(var + eps).float())
        return norm

    def normalize(self, x: Tensor) -> Tensor:
        """[B, C, T] -> normalised [B, C, T]."""
        return (x - self.mean[:, None].to(x)) / self.std[:, None].to(x)

    def denormalize(self, z: Tensor) -> Tensor:
        """Inverse of ``normalize``."""
        return z * self.std[:, None].to(z) + self.mean[:, None].to(z)

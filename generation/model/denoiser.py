"""``LatentDenoiser``: the seed paper's speech-enhancement model (its "Model A").

A lightweight Transformer maps noisy tokenizer latents to clean ones, trained with MSE and
decoded by the frozen tokenizer (protocol of "Efficient Speech Enhancement via Embeddings from
Pre-trained Generative Audioencoders"; the released xiaomi-research/dasheng-denoiser stacks 3
Dasheng blocks with 8 heads and MLP ratio 2.0, github.com/xiaomi-research/dasheng-denoiser). The blocks are
the tokenizer's own pre-norm Dasheng blocks. No positional embedding is added: the latents
already carry the semantic encoder's. Our choices: a final LayerNorm + Linear head whose
output is added to the input (zero-initialised, so an untrained model is the identity and
training starts from the noisy latents), and input / output projections only when
``embed_dim`` differs from ``latent_dim``.

Presets: ``paper`` (1280-d, 3 blocks, 8 heads, 41,006,080 parameters), ``tiny`` (tests).
"""

from __future__ import annotations

import torch
from dashflow.tokenizer.semantic import Block
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dashflow.errors import DashflowError
from dashflow.models import SafetensorsModelMixin

PRESETS: dict[str, dict] = {
    "paper": {},
    "tiny": {"latent_dim": 16, "embed_dim": 32, "num_heads": 2},
}


class LatentDenoiser(SafetensorsModelMixin, ConfigMixin):
    """Noisy latents [B, T, latent_dim] -> enhanced latents [B, T, latent_dim]."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, latent_dim: int = 1280, embed_dim: int = 1280, depth: int = 3, num_heads: int = 8,
                 mlp_ratio: float = 2.0, sample_rate: int = 16000, downsampling_ratio: int = 640):
        super().__init__()
        if embed_dim % num_heads:
            raise DashflowError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.proj_in = nn.Linear(latent_dim, embed_dim) if embed_dim != latent_dim else nn.Identity()
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, latent_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LatentDenoiser:
        """Build a preset (``paper``, ``tiny``) with config overrides."""
        if name not in PRESETS:
            raise DashflowError(f"unknown denoiser preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (25.0 for 16 kHz / 640)."""
        return self.config.sample_rate / self.config.downsampling_ratio

    def forward(self, noisy: Tensor, mask: Tensor | None = None) -> Tensor:
        """noisy [B, T, C] latents, mask [B, T] (True = valid frame; padding is not attended to)
        -> enhanced [B, T, C]; padded frames are returned unchanged."""
        if noisy.shape[-1] != self.config.latent_dim:
            raise DashflowError(f"the denoiser takes {self.config.latent_dim}-d latents, got {noisy.shape[-1]}-d")
        x = self.proj_in(noisy)
        key_mask = None if mask is None else mask.bool()
        for block in self.blocks:
            x = block(x, key_mask)
        out = noisy + self.head(self.norm(x))
        return out if mask is None else torch.where(mask.bool()[..., None], out, noisy)

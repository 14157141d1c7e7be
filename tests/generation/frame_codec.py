"""A tiny codec written only against :mod:`dashflow.codecs` (the tests' second latent space).

Each 40 ms frame of 16 kHz audio becomes ``dim`` sine and cosine amplitudes at fixed frequencies
(a one-frame Fourier analysis); ``decode`` resynthesises the frames. It is installed for other
processes through an entry point in the ``dashflow.codecs`` group (see the tests that use it).
"""

from __future__ import annotations

import hashlib
import math

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from dashflow.codecs import LatentEncoding

HOP = 640


class FrameCodec(ModelMixin, ConfigMixin):
    """encode: wav [B, S] -> latents [B, ceil(S / 640), 2 * bands]; decode: the inverse synthesis."""

    config_name = "config.json"
    sample_rate, samples_per_latent, min_samples = 16000, HOP, 1

    @register_to_config
    def __init__(self, bands: int = 4, lowest_hz: float = 100.0):
        super().__init__()
        t = torch.arange(HOP) / self.sample_rate
        freqs = lowest_hz * 2.0 ** torch.arange(bands)  # octave-spaced
        phases = 2 * math.pi * freqs[:, None] * t[None]
        self.register_buffer("basis", torch.cat([phases.sin(), phases.cos()]))  # [2 bands, HOP]
        self.gain = torch.nn.Parameter(torch.ones(()))

    @property
    def latent_dim(self) -> int:
        return self.basis.shape[0]

    @classmethod
    def from_pretrained(cls, path, torch_dtype=None, device=None, **kwargs):
        model = super().from_pretrained(path, torch_dtype=torch_dtype, **kwargs)
        return model.to(device) if device is not None else model

    def latent_length(self, num_samples: int) -> int:
        return -(-num_samples // HOP)

    def weights_hash(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> LatentEncoding:
        frames = self.latent_length(wav.shape[-1])
        padded = torch.nn.functional.pad(wav, (0, frames * HOP - wav.shape[-1]))
        latents = self.gain * padded.reshape(wav.shape[0], frames, HOP) @ self.basis.T * (2 / HOP)
        valid = torch.full((wav.shape[0],), frames) if lengths is None else -(-lengths.cpu() // HOP)
        mask = (torch.arange(frames)[None] < valid[:, None]).to(wav.device)
        return LatentEncoding(latents * mask[..., None], mask)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents @ self.basis).flatten(1) / self.gain

"""Vocos decoder of the DashengTokenizer: ConvNeXt backbone + ISTFT Fourier head.

As in vocos: a backbone turns features [B, C, T] into hidden states [B, T, H]; a Fourier head
turns hidden states into a waveform [B, T * hop].
Module names (``backbone.convnext.{i}.pwconv1``, ``head.istft.window``, ...) match the
official checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from dashflow.spectral import register_recomputable_buffer
from torch import Tensor, nn


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv k7 -> LN -> Linear -> GELU -> Linear -> layer scale."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, T] -> [B, C, T]."""
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    """Conv1d embed (k7) -> LN -> ``num_layers`` ConvNeXt blocks -> final LN.

    Layer scale starts at 1/num_layers; Conv1d/Linear weights trunc-normal(0.02), zero bias.
    Supports diffusers gradient checkpointing (per ConvNeXt block).
    """

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, 1.0 / num_layers) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.gradient_checkpointing = False
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, T] -> [B, T, H]."""
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = self._gradient_checkpointing_func(block, x)
            else:
                x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFT(nn.Module):
    """Inverse STFT with 'same' padding: T frames -> exactly T * hop samples.

    Overlap-add of Hann-windowed inverse FFTs, trimmed by (n_fft - hop) / 2 at each end and
    divided by the overlap-added squared window. :meth:`stft` is the matching analysis.
    """

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        if (n_fft - hop_length) % 2:
            raise ValueError(f"n_fft - hop ({n_fft} - {hop_length}) must be even for 'same' padding")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.pad = (n_fft - hop_length) // 2
        register_recomputable_buffer(self, "window", lambda: torch.hann_window(n_fft))

    def _overlap_add(self, frames: Tensor) -> Tensor:
        """frames [B, n_fft, T] -> [B, T * hop] (sum of frames placed every hop, trimmed)."""
        n_frames = frames.shape[-1]
        total = (n_frames - 1) * self.hop_length + self.n_fft
        out = F.fold(frames, output_size=(1, total), kernel_size=(1, self.n_fft),
                     stride=(1, self.hop_length))
        return out[:, 0, 0, self.pad:total - self.pad]

    def forward(self, spec: Tensor) -> Tensor:
        """spec complex [B, n_fft//2 + 1, T] -> wav [B, T * hop]."""
        window = self.window.to(spec.real.dtype)
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1) * window[None, :, None]
        wav = self._overlap_add(frames)
        envelope = self._overlap_add(window.square()[None, :, None].expand(1, -1, spec.shape[-1]))
        return wav / envelope.clamp(min=1e-11)

    def stft(self, wav: Tensor) -> Tensor:
        """wav [B, T * hop] -> complex spec [B, n_fft//2 + 1, T] (zero 'same' padding)."""
        padded = F.pad(wav, (self.pad, self.pad))
        return torch.stft(padded, self.n_fft, self.hop_length, window=self.window.to(wav.dtype),
                          center=False, return_complex=True)


class ISTFTHead(nn.Module):
    """Linear to (log-magnitude, phase) per bin -> complex STFT -> ISTFT; float32, autocast off.

    Magnitude is ``exp`` clipped at 100.
    """

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, H] -> wav [B, T * hop]."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = F.linear(x.float(), self.out.weight.float(), self.out.bias.float())
            log_mag, phase = coeffs.transpose(1, 2).chunk(2, dim=1)
            spec = torch.polar(torch.exp(log_mag).clamp(max=100.0), phase)
            return self.istft(spec)


class VocosDecoder(nn.Module):
    """Backbone + Fourier head: features [B, C, T] -> wav [B, T * hop]."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int,
                 n_fft: int, hop_length: int):
        super().__init__()
        self.backbone = VocosBackbone(input_channels, dim, intermediate_dim, num_layers)
        self.head = ISTFTHead(dim, n_fft, hop_length)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, T] -> wav [B, T * hop]."""
        return self.head(self.backbone(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)

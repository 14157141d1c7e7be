"""GAN discriminators for tokenizer training (waveform in, logits and feature maps out).

- :class:`MultiPeriodDiscriminator`: HiFi-GAN / Vocos MPD, periods (2, 3, 5, 7, 11).
- :class:`MultiFrequencyDiscriminator`: our "Multi-Frequency Discriminator" (the seed paper's
  name, architecture unpublished), built like X-Codec 2.0's ``SpecDiscriminator``: one 2-D
  CNN per STFT resolution over linear magnitudes, 8 resolutions from 78 to 2296 points.
- :class:`TokenizerDiscriminator`: both, as one diffusers model with ``paper``/``tiny`` presets.

Every sub-discriminator returns ``(logits [B, N], feature maps [list of tensors])``; a family
returns ``(list of logits, list of feature-map lists)``, one entry per sub-discriminator.
STFTs run in fp32 with autocast off; convolutions follow the ambient autocast (bf16 on GPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from dashflow.spectral import Spectrogram
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

FamilyOutput = tuple[list[torch.Tensor], list[list[torch.Tensor]]]

MFD_FFT_SIZES = (78, 126, 206, 334, 542, 876, 1418, 2296)
MFD_HOP_SIZES = (39, 63, 103, 167, 271, 438, 709, 1148)
MPD_PERIODS = (2, 3, 5, 7, 11)


def _normed_conv(in_ch: int, out_ch: int, kernel, stride=1, padding=0) -> nn.Conv2d:
    """Weight-normed Conv2d with N(0, 0.02) weights and zero bias (initialised before norming)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    nn.init.zeros_(conv.bias)
    return weight_norm(conv)


class PeriodDiscriminator(nn.Module):
    """One MPD branch: the waveform folded into ``[B, 1, S/p, p]``, (5,1) convs over time.

    ``channels`` (Vocos: 32, 128, 512, 1024, 1024) with stride 3 except the last (stride 1),
    then a (3,1) ``conv_post`` to one logit channel; LeakyReLU 0.1.
    """

    def __init__(self, period: int, channels: Sequence[int] = (32, 128, 512, 1024, 1024)):
        super().__init__()
        self.period = period
        widths = [1, *channels]
        strides = [3] * (len(channels) - 1) + [1]
        self.convs = nn.ModuleList(
            _normed_conv(widths[i], widths[i + 1], (5, 1), (strides[i], 1), (2, 0))
            for i in range(len(channels)))
        self.conv_post = _normed_conv(channels[-1], 1, (3, 1), 1, (1, 0))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav [B, S] -> (logits [B, N], feature maps)."""
        remainder = wav.shape[-1] % self.period
        if remainder:
            wav = F.pad(wav.unsqueeze(1), (0, self.period - remainder), mode="reflect").squeeze(1)
        x = wav.reshape(wav.shape[0], 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN multi-period discriminator: one :class:`PeriodDiscriminator` per period."""

    def __init__(self, periods: Sequence[int] = MPD_PERIODS,
                 channels: Sequence[int] = (32, 128, 512, 1024, 1024)):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, wav: torch.Tensor) -> FamilyOutput:
        """wav [B, S] -> ([logits [B, N_p]] per period, [feature maps] per period)."""
        outputs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


class SpectralDiscriminator(nn.Module):
    """A 2-D CNN on one STFT resolution's linear magnitude ``[B, 1, F, T]``.

    ``sqrt(clamp(re^2 + im^2, 1e-7, 1e3))`` of a Hann-windowed, centred STFT with
    ``win = n_fft``. Layers: ``channels[:-1]`` as (5,5) stride-2 convs (32, 64, 128, 256),
    one (3,3) conv to ``channels[-1]`` (512), each with LeakyReLU 0.2, then a (3,3) conv to
    one logit channel.
    """

    def __init__(self, n_fft: int, hop_length: int,
                 channels: Sequence[int] = (32, 64, 128, 256, 512)):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, hop_length, power=2.0)
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            _normed_conv(widths[i], widths[i + 1], 5, 2, 2) for i in range(len(channels) - 1))
        self.convs.append(_normed_conv(channels[-2], channels[-1], 3, 1, 1))
        self.conv_post = _normed_conv(channels[-1], 1, 3, 1, 1)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, S] -> linear magnitude [B, 1, n_fft/2+1, frames], fp32."""
        with torch.autocast(wav.device.type, enabled=False):
            power = self.spectrogram(wav.float())
            return power.clamp(1e-7, 1e3).sqrt().unsqueeze(1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav [B, S] -> (logits [B, N], feature maps)."""
        x = self.magnitude(wav)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class MultiFrequencyDiscriminator(nn.Module):
    """One :class:`SpectralDiscriminator` per ``(n_fft, hop)`` resolution (X-Codec 2.0's 8)."""

    def __init__(self, fft_sizes: Sequence[int] = MFD_FFT_SIZES,
                 hop_sizes: Sequence[int] = MFD_HOP_SIZES,
                 channels: Sequence[int] = (32, 64, 128, 256, 512)):
        super().__init__()
        if len(fft_sizes) != len(hop_sizes):
            raise ValueError(f"{len(fft_sizes)} FFT sizes but {len(hop_sizes)} hop sizes")
        self.discriminators = nn.ModuleList(
            SpectralDiscriminator(n, h, channels) for n, h in zip(fft_sizes, hop_sizes))

    def forward(self, wav: torch.Tensor) -> FamilyOutput:
        """wav [B, S] -> ([logits [B, N_r]] per resolution, [feature maps] per resolution)."""
        outputs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


DISCRIMINATOR_PRESETS: dict[str, dict] = {
    "paper": {},
    "tiny": dict(mpd_periods=(2, 3, 5), mpd_channels=(8, 16, 32, 32, 32),
                 mfd_fft_sizes=(126, 334, 876), mfd_hop_sizes=(63, 167, 438),
                 mfd_channels=(8, 16, 16, 32, 32)),
}


class TokenizerDiscriminator(ModelMixin, ConfigMixin):
    """MPD (``mpd``) + multi-frequency discriminator (``mfd``) applied to the same waveform.

    ``forward(wav [B, S])`` returns ``{"mpd": FamilyOutput, "mfd": FamilyOutput}``.
    """

    @register_to_config
    def __init__(self, mpd_periods: Sequence[int] = MPD_PERIODS,
                 mpd_channels: Sequence[int] = (32, 128, 512, 1024, 1024),
                 mfd_fft_sizes: Sequence[int] = MFD_FFT_SIZES,
                 mfd_hop_sizes: Sequence[int] = MFD_HOP_SIZES,
                 mfd_channels: Sequence[int] = (32, 64, 128, 256, 512)):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(mpd_periods, mpd_channels)
        self.mfd = MultiFrequencyDiscriminator(mfd_fft_sizes, mfd_hop_sizes, mfd_channels)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TokenizerDiscriminator:
        """``paper`` (the layouts above, ~60 M parameters) or ``tiny`` (tests, demo)."""
        if name not in DISCRIMINATOR_PRESETS:
            raise ValueError(f"unknown discriminator preset {name!r}; "
                             f"choose from {', '.join(DISCRIMINATOR_PRESETS)}")
        return cls(**{**DISCRIMINATOR_PRESETS[name], **overrides})

    def forward(self, wav: torch.Tensor) -> dict[str, FamilyOutput]:
        """wav [B, S] -> {"mpd": (logits, feature maps), "mfd": (logits, feature maps)}."""
        return {"mpd": self.mpd(wav), "mfd": self.mfd(wav)}

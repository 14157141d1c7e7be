"""Multi-scale Mel and STFT distances of the DAC toolkit (``dac/nn/loss.py``), here at 16 kHz.

Per scale (hop = window / 4, periodic Hann, centred reflect padding, as audiotools does):
``log_weight * L1(log10(clamp(X, eps)^pow)) + mag_weight * L1(X)`` with X the magnitude STFT or
its Slaney mel projection; the scales are summed. Lower is better. Which configuration produced a
published "Mel-16k" number is not documented, so the preset is always recorded:

- ``dac``: the loss classes' defaults, which DAC's ``scripts/evaluate.py`` gets when no config is
  bound: Mel windows [2048, 512] with [150, 80] mels, pow 2, mag and log weights 1.
- ``dac-base``: the training loss of DAC's ``conf/base.yml``: 7 windows 32...2048 with
  5...320 mels, pow 1, mag weight 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from dashflow.errors import DashflowError
from dashflow.spectral import mel_filterbank, stft_magnitude


@dataclass(frozen=True)
class SpectralDistance:
    window_lengths: tuple[int, ...]
    n_mels: tuple[int, ...] | None = None  # None: compare STFT magnitudes instead of mels
    pow: float = 2.0
    clamp_eps: float = 1e-5
    mag_weight: float = 1.0
    log_weight: float = 1.0

    def describe(self) -> dict:
        return asdict(self)


MEL_PRESETS = {
    "dac": SpectralDistance((2048, 512), (150, 80)),
    "dac-base": SpectralDistance((32, 64, 128, 256, 512, 1024, 2048), (5, 10, 20, 40, 80, 160, 320),
                                 pow=1.0, mag_weight=0.0),
}
STFT_DISTANCE = SpectralDistance((2048, 512))


def spectral_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int,
                      spec: SpectralDistance) -> float:
    """Distance of two equally long mono signals [S] under ``spec`` (float)."""
    if estimate.shape != reference.shape:
        raise DashflowError(f"spectral distance needs equal lengths, got {estimate.shape} and {reference.shape}")
    if estimate.shape[0] <= max(spec.window_lengths) // 2:
        raise DashflowError(f"{estimate.shape[0]} samples is too short for a {max(spec.window_lengths)}-point STFT")
    pair = torch.from_numpy(np.stack([estimate, reference]).astype(np.float32))
    total = 0.0
    for i, window in enumerate(spec.window_lengths):
        mag = stft_magnitude(pair, window, window // 4)  # [2, F, T]
        if spec.n_mels is not None:
            mel = mel_filterbank(sample_rate, window, spec.n_mels[i]).T  # [n_mels, F]
            mag = mel @ mag
        log = mag.clamp(min=spec.clamp_eps).pow(spec.pow).log10()
        total += spec.log_weight * (log[0] - log[1]).abs().mean().item()
        total += spec.mag_weight * (mag[0] - mag[1]).abs().mean().item()
    return total


def mel_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int = 16000,
                 preset: str = "dac") -> float:
    """Multi-scale Mel distance ("Mel-16k" at 16 kHz) of estimate [S] against reference [S]."""
    if preset not in MEL_PRESETS:
        raise DashflowError(f"unknown mel preset {preset!r}; use one of {', '.join(MEL_PRESETS)}")
    return spectral_distance(estimate, reference, sample_rate, MEL_PRESETS[preset])


def stft_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int = 16000) -> float:
    """Multi-scale STFT distance ("STFT-16k") of estimate [S] against reference [S]."""
    return spectral_distance(estimate, reference, sample_rate, STFT_DISTANCE)

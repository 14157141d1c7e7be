"""Spectral front ends of the DashengTokenizer, built on the shared :mod:`dashflow.spectral`.

Module and buffer names reproduce torchaudio's ``MelSpectrogram`` layout
(``spectrogram.window``, ``mel_scale.fb``) so the official state-dict keys line up. Every
buffer is recomputable: when a checkpoint lacks it, a load hook supplies a fresh copy, so
official files load strictly with or without their front-end buffers.

Both front ends reflect-pad each clip at its *own* end (``lengths``), so a clip padded into
a batch gives exactly the frames it gives alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dashflow.spectral import SAMPLE_RATE, AmplitudeToDB, MelSpectrogram, frame_counts

__all__ = ["SAMPLE_RATE", "AcousticFrontEnd", "DashengFrontEnd", "frame_counts"]


class DashengFrontEnd(nn.Sequential):
    """Dasheng's log-mel: 64-bin power mel (n_fft 512, hop 160, 0-8 kHz) -> dB, top_db 120.

    Children ``0`` (MelSpectrogram) and ``1`` (AmplitudeToDB) give the official key names.
    Always runs in float32 with autocast off.
    """

    def __init__(self, n_mels: int = 64, n_fft: int = 512, hop_length: int = 160,
                 f_max: float = 8000.0, top_db: float = 120.0):
        super().__init__(MelSpectrogram(n_fft, hop_length, n_mels, power=2.0, f_max=f_max),
                         AmplitudeToDB(top_db))
        self.n_mels, self.hop_length = n_mels, hop_length

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wav [B, S], lengths [B] -> log-mel [B, n_mels, S//hop + 1] (float32, dB)."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel = self[0](wav.float(), lengths)
            frames = None if lengths is None else frame_counts(lengths, self.hop_length)
            return self[1](mel, frames)


class AcousticFrontEnd(nn.Module):
    """Vocos-style log-mel of the acoustic branch: ``ln(clip(|mel|, 1e-7))``.

    128-bin HTK magnitude mel, n_fft 1024, centred reflect; float32 with autocast off.
    """

    def __init__(self, n_mels: int = 128, hop_length: int = 160, n_fft: int = 1024):
        super().__init__()
        self.n_fft = n_fft
        self.mel_spec = MelSpectrogram(n_fft, hop_length, n_mels, power=1.0)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wav [B, S], lengths [B] -> log-mel [B, n_mels, S//hop + 1] (float32)."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return torch.log(self.mel_spec(wav.float(), lengths).clamp(min=1e-7))

"""Spectral front-end pieces shared by the metrics: librosa-compatible mel filters, STFT magnitude.

No torchaudio: the STFT is ``torch.stft`` and the filterbank is computed here (and checked
against ``librosa.filters.mel`` in the tests).
"""

from __future__ import annotations

import numpy as np
import torch


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters [n_mels, n_fft // 2 + 1] (float32).

    Equal to ``librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmin=..., fmax=...)``.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(np.array([fmin]))[0],
                                          _hz_to_mel_slaney(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def stft_magnitude(wav: torch.Tensor, window_length: int, hop_length: int) -> torch.Tensor:
    """|STFT| with a periodic Hann window, centred with reflect padding: wav [B, S] -> [B, F, T].

    This is descript-audiotools' ``AudioSignal.stft`` with ``match_stride=False``.
    """
    window = torch.hann_window(window_length, periodic=True, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(wav, n_fft=window_length, hop_length=hop_length, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    return spec.abs()


def log_mel_image(wav: np.ndarray, sample_rate: int, n_mels: int = 80,
                  window_length: int = 1024, hop_length: int = 256) -> np.ndarray:
    """A dB-scaled mel spectrogram [n_mels, T] for plots (80 dB dynamic range)."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
    if x.shape[-1] <= window_length // 2:
        x = torch.nn.functional.pad(x, (0, window_length // 2 + 1 - x.shape[-1]))
    mag = stft_magnitude(x, window_length, hop_length)[0].numpy()
    mel = mel_filterbank(sample_rate, window_length, n_mels) @ (mag ** 2)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - 80.0)

"""The one mel / STFT front end of the suite, written on ``torch.stft`` (no torchaudio): Slaney and
HTK mel filters, centred STFT magnitudes, torchaudio-compatible ``MelSpectrogram`` /
``AmplitudeToDB`` modules and a magnitude mel. The tokenizer's front ends and losses and the
evaluation metrics all build on these, so each formula is written once.

Every clip is reflect-padded at its *own* end (``lengths``), so a clip padded into a batch gives
exactly the frames it gives alone. Module buffers are recomputable (a checkpoint may omit them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLE_RATE = 16000


def register_recomputable_buffer(module: nn.Module, name: str, factory: Callable[[], Tensor]) -> None:
    """Register persistent buffer ``name`` = ``factory()`` that a checkpoint may omit.

    A load pre-hook inserts ``factory()`` for a missing key, so ``load_state_dict(strict=True)``
    (also with ``assign=True`` on a meta-device model) accepts files without the buffer. The
    value is copied into its own storage (``torch.hann_window(n)`` is a view of n + 1 values,
    which safetensors refuses to save or load into). The value is always computed on the CPU,
    also inside a ``torch.device("meta")`` context such as a low-memory checkpoint load.
    """
    def compute() -> Tensor:
        with torch.device("cpu"):
            return factory().clone()

    module.register_buffer(name, compute())

    def fill_missing(_module, state_dict, prefix, *_args) -> None:
        if prefix + name not in state_dict:
            state_dict[prefix + name] = compute()

    module.register_load_state_dict_pre_hook(fill_missing)


def _hz_to_mel(hz: torch.Tensor, scale: str) -> torch.Tensor:
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    linear = hz / (200.0 / 3)  # Slaney: linear below 1 kHz, logarithmic above
    log_part = 15.0 + torch.log(hz.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: torch.Tensor, scale: str) -> torch.Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    log_part = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mel - 15.0))
    return torch.where(mel >= 15.0, log_part, mel * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, scale: str = "slaney",
                   norm: str | None = "slaney") -> torch.Tensor:
    """Triangular mel filters [n_fft/2+1, n_mels] (float64 maths, float32 out).

    ``scale`` "slaney" or "htk"; ``norm`` "slaney" (unit area, librosa's default) or None.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(_hz_to_mel(torch.tensor(f_min, dtype=torch.float64), scale),
                               _hz_to_mel(torch.tensor(f_max, dtype=torch.float64), scale),
                               n_mels + 2, dtype=torch.float64)
    edges = _mel_to_hz(edges_mel, scale)
    widths = edges.diff()                                   # [n_mels + 1]
    slopes = edges[None, :] - freqs[:, None]                # [F, n_mels + 2]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    elif norm is not None:
        raise ValueError(f"unknown mel norm {norm!r} (use 'slaney' or None)")
    return filters.float()


def centre_pad(wav: Tensor, pad: int, lengths: Tensor | None = None) -> Tensor:
    """Reflect-pad every clip by ``pad`` samples at both of its own ends.

    Args:
        wav: [B, S]; clip ``b`` occupies ``wav[b, :lengths[b]]`` (all of it if ``lengths`` is None).
        lengths: [B] valid samples per clip, each > ``pad``.
    Returns:
        [B, S + 2*pad]; beyond a clip's right padding the row is zero.
    """
    if lengths is None:
        return F.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    size = wav.shape[-1]
    pos = torch.arange(-pad, size + pad, device=wav.device)[None, :]  # [1, S+2p]
    last = lengths.to(wav.device)[:, None] - 1  # [B, 1]
    idx = pos.abs()
    idx = torch.where(idx > last, 2 * last - idx, idx)
    inside = pos <= last + pad
    padded = torch.gather(wav, 1, idx.clamp(0, size - 1).expand(wav.shape[0], -1))
    return padded * inside


def stft_magnitude(wav: Tensor, window_length: int, hop_length: int) -> Tensor:
    """|STFT| with a periodic Hann window, centred with reflect padding: wav [B, S] -> [B, F, T].

    This is descript-audiotools' ``AudioSignal.stft`` with ``match_stride=False``.
    """
    window = torch.hann_window(window_length, periodic=True, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(wav, n_fft=window_length, hop_length=hop_length, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    return spec.abs()


class Spectrogram(nn.Module):
    """``|STFT|**power`` with a periodic Hann window (win = n_fft) and centred reflect padding."""

    def __init__(self, n_fft: int, hop_length: int, power: float):
        super().__init__()
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
        register_recomputable_buffer(self, "window", lambda: torch.hann_window(n_fft))

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wav [B, S] -> spec [B, n_fft//2 + 1, S//hop + 1]."""
        padded = centre_pad(wav, self.n_fft // 2, lengths)
        spec = torch.stft(padded, self.n_fft, self.hop_length, window=self.window.to(padded.dtype),
                          center=False, return_complex=True)
        return spec.abs().pow(self.power)


class MelScale(nn.Module):
    """Project a linear-frequency spectrogram onto HTK mel filters (buffer ``fb``)."""

    def __init__(self, n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float):
        super().__init__()
        register_recomputable_buffer(
            self, "fb", lambda: mel_filterbank(sample_rate, 2 * (n_freqs - 1), n_mels, f_min, f_max,
                                               scale="htk", norm=None))

    def forward(self, spec: Tensor) -> Tensor:
        """spec [B, n_freqs, T] -> mel [B, n_mels, T]."""
        return torch.einsum("bft,fm->bmt", spec, self.fb.to(spec.dtype))


class MelSpectrogram(nn.Module):
    """torchaudio-compatible MelSpectrogram (centred, reflect, HTK, no filter norm)."""

    def __init__(self, n_fft: int, hop_length: int, n_mels: int, power: float,
                 sample_rate: int = SAMPLE_RATE, f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        self.hop_length = hop_length
        self.spectrogram = Spectrogram(n_fft, hop_length, power)
        self.mel_scale = MelScale(n_fft // 2 + 1, n_mels, sample_rate, f_min,
                                  f_max if f_max is not None else sample_rate / 2)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wav [B, S] -> mel [B, n_mels, S//hop + 1]."""
        return self.mel_scale(self.spectrogram(wav, lengths))


class AmplitudeToDB(nn.Module):
    """Power to decibels, floored ``top_db`` below each clip's own peak (not the batch's)."""

    def __init__(self, top_db: float = 120.0, amin: float = 1e-10):
        super().__init__()
        self.top_db, self.amin = top_db, amin

    def forward(self, power: Tensor, frames: Tensor | None = None) -> Tensor:
        """power [B, M, T], frames [B] valid frames per clip -> dB [B, M, T]."""
        db = 10.0 * torch.log10(power.clamp(min=self.amin))
        if frames is None:
            peak = db.amax(dim=(-2, -1))
        else:
            valid = torch.arange(db.shape[-1], device=db.device)[None, :] < frames.to(db.device)[:, None]
            peak = db.masked_fill(~valid[:, None, :], -math.inf).amax(dim=(-2, -1))
        return torch.maximum(db, (peak - self.top_db)[:, None, None])


def frame_counts(lengths: Tensor, hop_length: int) -> Tensor:
    """Frames of a centred STFT: lengths [B] samples -> [B] frames (S//hop + 1)."""
    return torch.div(lengths, hop_length, rounding_mode="floor") + 1



class MelMagnitude(nn.Module):
    """Magnitude (power 1) mel spectrogram: wav [B, S] -> mel [B, n_mels, S // hop + 1].

    Hann window of ``n_fft``, centred with reflect padding (:class:`Spectrogram`), Slaney or HTK filters; fp32 with autocast off.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 256,
                 n_mels: int = 100, scale: str = "slaney", norm: str | None = "slaney"):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, hop_length, power=1.0)
        self.register_buffer("filters", mel_filterbank(sample_rate, n_fft, n_mels, scale=scale,
                                                       norm=norm), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wav.device.type, enabled=False):
            return torch.einsum("bft,fm->bmt", self.spectrogram(wav.float()), self.filters)

"""Audio I/O with one-line errors: soundfile to read and write, soxr to resample.

Every loaded clip is mono float32 at the requested rate. Corrupt, empty, non-finite or
oversized files raise :class:`DashflowError` naming the file; writes are atomic. Decoders' own
notes (mpg123's "Illegal Audio-MPEG-Header ...") are kept off the terminal by :func:`quiet_stderr`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from dashflow.errors import DashflowError, first_line, quiet_stderr
from dashflow.outputs import atomic_path, audio_format

SAMPLE_RATE = 16000
# one hour at 48 kHz; anything longer is almost certainly a mistake and would exhaust memory
MAX_SECONDS = 3600.0


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``wav`` [S] or [S, C] with soxr (VHQ); identity when the rates match."""
    if orig_sr == target_sr:
        return wav
    return soxr.resample(wav, orig_sr, target_sr, quality="VHQ").astype(np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
               max_seconds: float = MAX_SECONDS) -> torch.Tensor:
    """Read ``path`` as mono float32 at ``sample_rate``: returns wav [S].

    Channels are averaged, other rates resampled. Raises DashflowError for unreadable,
    empty, over-long or non-finite audio.
    """
    path = Path(path)
    try:
        with quiet_stderr():
            info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for missing/corrupt files
        raise DashflowError(f"{path}: cannot read audio ({first_line(exc)})") from None
    if info.frames == 0 or info.samplerate <= 0:
        raise DashflowError(f"{path}: audio file is empty")
    if info.frames / info.samplerate > max_seconds:
        raise DashflowError(f"{path}: {info.frames / info.samplerate:.0f} s is longer than the "
                            f"{max_seconds:.0f} s limit")
    try:
        with quiet_stderr():
            wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DashflowError(f"{path}: cannot decode audio ({first_line(exc)})") from None
    if wav.shape[0] == 0:
        raise DashflowError(f"{path}: audio file is empty")
    if not np.isfinite(wav).all():
        raise DashflowError(f"{path}: audio contains NaN or infinite samples")
    mono = wav.mean(axis=1)
    return torch.from_numpy(np.ascontiguousarray(resample(mono, sr, sample_rate)))


def save_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray,
               sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono ``wav`` [S] atomically (temp file + rename) in the format its suffix names:
    16-bit PCM ``.wav`` / ``.flac``, or Ogg Vorbis. Samples are clipped to [-1, 1]; NaN or
    infinite samples raise DashflowError instead of being written."""
    path = Path(path)
    audio_type = audio_format(path)
    data = wav.detach().float().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    data = data.reshape(-1)
    if not np.isfinite(data).all():
        raise DashflowError(f"{path}: not written, the audio has NaN or infinite samples")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(data, -1.0, 1.0), sample_rate, format=audio_type,
                 subtype="VORBIS" if audio_type == "OGG" else "PCM_16")
    return path



"""Input audio that steers a text-conditioned call, and what it asks of the sampler.

- ``init_audio`` + ``strength`` (audio-to-audio): the clip's latents noised to ``strength`` are
  the starting point; the output has the clip's length.
- ``inpaint_audio`` + ``inpaint_regions`` (time ranges in seconds): the latent frames touching a
  region are regenerated, the others re-imposed at every step.
- ``continue_audio``: the clip (cut to whole latent frames) is kept and ``audio_length_in_s`` more
  seconds follow it (inpainting with the known part first; windowed when longer than a window).

Inpainting and continuation return the input's own samples outside the regenerated time, with a
0.1 s raised-cosine crossfade on the kept side of each edge, so the kept audio is the input, not
the codec's reconstruction of it. A clip is a mono float waveform [S] at the pipeline's rate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from itertools import pairwise
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dashflow.codecs import LatentCodec
from dashflow.errors import DashflowError

MODES = {"init_audio": "audio_to_audio", "inpaint_audio": "inpaint", "continue_audio": "continue"}
SILENT_PEAK = 1e-3  # -60 dBFS: a clip whose peak is below this has nothing to steer from
FADE_SECONDS = 0.1  # crossfade between kept input samples and generated ones


def check_clip(audio, name: str, sample_rate: int, max_seconds: float, min_samples: int) -> Tensor:
    """``audio`` (tensor or array [S], or [1, S]) as float32 CPU [S]; one DashflowError line when it
    is no finite mono waveform, is silent, or is shorter than the codec takes / longer than ``max_seconds``."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(audio)
    if not isinstance(audio, Tensor) or not audio.is_floating_point() or audio.dim() not in (1, 2) \
            or (audio.dim() == 2 and audio.shape[0] != 1):
        shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
        raise DashflowError(f"{name} must be a mono float waveform [S] at {sample_rate} Hz, got {shape}")
    wav = audio.detach().reshape(-1).float().cpu()
    if not bool(torch.isfinite(wav).all()):
        raise DashflowError(f"{name} has NaN or infinite samples")
    seconds = wav.numel() / sample_rate
    if seconds > max_seconds:
        raise DashflowError(f"{name} is {seconds:.1f} s long, over the {max_seconds:g} s limit")
    if wav.numel() < min_samples:
        raise DashflowError(f"{name} is {seconds:.3f} s long; the codec needs at least {min_samples} samples")
    if float(wav.abs().max()) < SILENT_PEAK:
        raise DashflowError(f"{name} is silent (peak below -60 dBFS): there is nothing to steer from")
    return wav


def check_regions(regions, seconds: float) -> list[tuple[float, float]]:
    """``inpaint_regions`` as sorted (start, end) seconds; one DashflowError line for a region that
    is not two numbers, is empty, lies outside the clip (0 to ``seconds``) or overlaps another."""
    if regions is None or len(regions) == 0:
        raise DashflowError("inpaint_regions is empty: give (start, end) seconds to regenerate")
    parsed = []
    for region in regions:
        if not isinstance(region, Sequence) or len(region) != 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in region):
            raise DashflowError(f"inpaint region {region!r} must be (start, end) in seconds")
        start, end = float(region[0]), float(region[1])
        if end <= start:
            raise DashflowError(f"inpaint region {start:g}:{end:g} s is empty (end must come after start)")
        if start < 0 or end > seconds + 1e-6:
            raise DashflowError(f"inpaint region {start:g}:{end:g} s lies outside the clip (0:{seconds:.3f} s)")
        parsed.append((start, end))
    parsed.sort()
    for (a0, a1), (b0, b1) in pairwise(parsed):
        if b0 < a1:
            raise DashflowError(f"inpaint regions {a0:g}:{a1:g} s and {b0:g}:{b1:g} s overlap")
    return parsed


def audio_sha256(wav: Tensor) -> str:
    """sha256 of a clip's float32 samples (what the settings record about input audio)."""
    return hashlib.sha256(wav.numpy().astype("<f4").tobytes()).hexdigest()


def crossfade_weights(length: int, regions: list[tuple[int, int]], fade: int) -> Tensor:
    """[length] weights of the input's samples: 0 inside the ``regions`` (sample ranges), 1 elsewhere,
    rising / falling over ``fade`` samples on the kept side of every edge (raised cosine)."""
    weights = torch.ones(length)
    ramp = torch.sin(0.5 * math.pi * (torch.arange(fade, dtype=torch.float64) + 0.5) / fade).pow(2).float()
    for start, end in regions:
        weights[start:end] = 0
        before = weights[max(0, start - fade):start]
        before.copy_(torch.minimum(before, ramp.flip(0)[fade - before.numel():]))
        after = weights[end:end + fade]
        after.copy_(torch.minimum(after, ramp[:after.numel()]))
    return weights


@dataclass
class Steering:
    """One call's input clip (``wav`` [S]) and what to do with it; see the module doc."""

    mode: str
    wav: Tensor
    strength: float = 1.0
    regions: list[tuple[float, float]] = field(default_factory=list)  # inpaint: seconds
    added_frames: int = 0  # continue: latent frames after the clip
    kept: int = 0  # continue: the clip's frames kept (set by ``plan``)

    def encode(self, codec: LatentCodec) -> Tensor:
        """The clip's tokenizer latents [1, C, T] (float32), the clip zero-padded to whole latent
        frames first so that they cover every sample (T = ceil(S / samples_per_latent))."""
        hop = codec.samples_per_latent
        wav = torch.nn.functional.pad(self.wav, (0, -self.wav.numel() % hop))
        encoding = codec.encode(wav[None].to(codec.device, codec.dtype))
        frames = int(encoding.mask[0].sum())
        return encoding.latents[:, :frames].transpose(1, 2).float()

    def plan(self, codec: LatentCodec) -> tuple[Tensor, Tensor | None, int]:
        """(init latents [1, C, T], keep weights [1, T] or None, T) for the sampler: T is the
        output's latent frames (the clip's, or the kept frames + ``added_frames`` when continuing)."""
        latents = self.encode(codec)
        frames, hop = latents.shape[2], codec.samples_per_latent
        if self.mode == "audio_to_audio":
            return latents, None, frames
        if self.mode == "inpaint":
            starts = torch.arange(frames) * hop
            keep = torch.ones(1, frames)
            for start, end in self.regions:
                keep[0, (starts + hop > start * codec.sample_rate) & (starts < end * codec.sample_rate)] = 0
            return latents, keep, frames
        self.kept = min(frames, self.wav.numel() // hop)  # whole frames of input samples only
        total = self.kept + self.added_frames
        init = torch.nn.functional.pad(latents[:, :, :self.kept], (0, self.added_frames))
        keep = (torch.arange(total) < self.kept).float()[None]
        return init, keep, total

    def output_samples(self, frames: int, hop: int) -> int:
        """Samples of the output made from ``frames`` latent frames: the clip's own length for
        audio-to-audio and inpainting, whole frames when continuing."""
        return frames * hop if self.mode == "continue" else min(self.wav.numel(), frames * hop)

    def paste(self, audio: Tensor, lengths: list[int], sample_rate: int, hop: int) -> Tensor:
        """Generated audio [B, N] with the input's samples put back outside the regenerated time
        (inpaint, continue; crossfaded, see :func:`crossfade_weights`), zero past ``lengths`` [B]."""
        n = audio.shape[1]
        if self.mode != "audio_to_audio":
            original = torch.nn.functional.pad(self.wav, (0, max(0, n - self.wav.numel())))[:n]
            if self.mode == "inpaint":
                regions = [(round(a * sample_rate), round(b * sample_rate)) for a, b in self.regions]
            else:
                regions = [(self.kept * hop, n)]
            weights = crossfade_weights(n, regions, round(FADE_SECONDS * sample_rate))
            audio = weights * original + (1 - weights) * audio
        return audio * (torch.arange(n)[None] < torch.tensor(lengths)[:, None])

    def settings(self, sample_rate: int, hop: int) -> dict:
        """What the call's settings record about the clip."""
        record = {"mode": self.mode, "audio_seconds": self.wav.numel() / sample_rate,
                  "audio_sha256": audio_sha256(self.wav)}
        if self.mode == "audio_to_audio":
            record["strength"] = self.strength
        elif self.mode == "inpaint":
            record["regions"] = [list(region) for region in self.regions]
        else:
            record["added_seconds"] = self.added_frames * hop / sample_rate
        return record

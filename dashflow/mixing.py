"""Noisy speech for speech enhancement: SNR mixing, synthetic reverberation, SE loaders.

A clean crop ``[S]`` whose first ``length`` samples are valid becomes ``(noisy [S], target [S])``:
a random segment of a random noise file (read partially; looped when shorter than the clip) is
scaled to a random SNR over the valid samples, optionally after the speech is convolved with a
synthetic room response. Every draw comes from ``np.random.default_rng([seed, epoch,
crc32(key), MIX_STREAM])``, so a mix is a pure function of ``(seed, epoch, key)``: loaders resume
exactly at any step and give the same batches with any number of workers.
:func:`build_se_loader` batches mixed (or paired) crops; :func:`write_mixed_set` freezes one mix
per clip into a fixed test set.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from scipy.signal import fftconvolve
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dashflow.audio import SAMPLE_RATE, load_audio, resample, save_audio
from dashflow.data import (
    AudioClipDataset,
    ResumableBatchSampler,
    build_clip_loader,
    collate_clips,
    expand_shards,
)
from dashflow.errors import DashflowError, first_line
from dashflow.manifests import read_manifest, write_manifest

MIX_STREAM = 1              # separates mixing draws from the crop draws of dashflow.data
MAX_RT60 = 3.0              # seconds; longer responses are almost certainly a typo
DRR_DB = (-3.0, 10.0)       # direct-to-reverberant ratio range of synthetic_rir
SILENCE_POWER = 1e-10       # mean power below -100 dBFS counts as digital silence
SPEECH_POWER = 10 ** -2.5   # -25 dBFS: the level a silent crop's noise is scaled against
PEAK = 0.99                 # mixes that would clip are scaled down to this peak


@dataclass
class MixingConfig:
    """On-the-fly mixing settings (an OmegaConf structured config)."""

    snr_db: list[float] = field(default_factory=lambda: [-5.0, 20.0])  # uniform SNR range, dB
    reverb_prob: float = 0.0    # probability of simulated reverberation per example
    rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])      # seconds, uniform
    dereverb: bool = True       # target = dry clean (True) or the reverberant clean (False)


def check_mixing(config: MixingConfig) -> None:
    """Raise DashflowError (one line) when a mixing setting is out of range."""
    snr, rt60 = [float(v) for v in config.snr_db], [float(v) for v in config.rt60]
    if len(snr) != 2 or not all(map(math.isfinite, snr)) or snr[0] > snr[1]:
        raise DashflowError(f"mixing.snr_db must be [low, high] dB with low <= high, got {snr}")
    if not 0.0 <= float(config.reverb_prob) <= 1.0:
        raise DashflowError(f"mixing.reverb_prob must lie in [0, 1], got {config.reverb_prob}")
    if len(rt60) != 2 or not 0.0 < rt60[0] <= rt60[1] <= MAX_RT60:
        raise DashflowError(f"mixing.rt60 must be [low, high] seconds with 0 < low <= high <= "
                            f"{MAX_RT60}, got {rt60}")


def _noise_gain(speech_power: float, noise_power: float, snr_db: float) -> float:
    """Factor putting noise of ``noise_power`` at ``snr_db`` below ``speech_power``."""
    return math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))


def mix_at_snr(clean: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """``clean`` [S] + ``noise`` [S] scaled so 10·log10(P_clean / P_noise) = ``snr_db`` -> [S].

    Powers are means over all S samples. The SNR is undefined for all-zero ``clean`` or
    ``noise``: both raise DashflowError.
    """
    if clean.dim() != 1 or clean.shape != noise.shape:
        raise DashflowError(f"mix_at_snr takes two [S] signals of one length, got "
                            f"{tuple(clean.shape)} and {tuple(noise.shape)}")
    clean_power, noise_power = (float(x.double().square().mean()) for x in (clean, noise))
    if clean_power == 0.0 or noise_power == 0.0:
        raise DashflowError(f"cannot mix at {snr_db} dB SNR: the "
                            f"{'clean' if clean_power == 0.0 else 'noise'} signal is silent")
    return (clean.double() + _noise_gain(clean_power, noise_power, snr_db) * noise.double()).to(
        clean.dtype)


def synthetic_rir(rt60: float, sample_rate: int, generator: np.random.Generator) -> np.ndarray:
    """Room impulse response [L], L = rt60 · sample_rate: a unit direct path at sample 0 and,
    after a 1-5 ms gap, Gaussian noise under an envelope falling 60 dB in ``rt60`` seconds,
    scaled to a direct-to-reverberant ratio drawn uniformly from ``DRR_DB``."""
    length = max(round(rt60 * sample_rate), 2)
    onset = min(int(generator.integers(sample_rate // 1000, sample_rate // 200 + 1)), length - 1)
    time = np.arange(length) / sample_rate
    tail = generator.standard_normal(length) * np.exp(-3.0 * math.log(10.0) * time / rt60)
    tail[:max(onset, 1)] = 0.0
    drr_db = generator.uniform(*DRR_DB)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.square(tail).sum()), 1e-20))
    tail[0] = 1.0
    return tail.astype(np.float32)


@dataclass(frozen=True)
class Mix:
    """One mixed example: ``noisy`` and ``target`` [S], and what was drawn to make it."""

    noisy: Tensor
    target: Tensor
    snr_db: float
    noise_id: str
    rt60: float | None


@dataclass(frozen=True)
class _NoiseFile:
    audio_id: str
    path: str
    frames: int
    sample_rate: int


def _open_noise(record: dict) -> _NoiseFile:
    path = str(record["audio"])
    try:
        info = sf.info(path)
    except Exception as exc:  # soundfile raises several types for missing or corrupt files
        raise DashflowError(f"{path}: cannot read noise ({first_line(exc)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise DashflowError(f"{path}: noise file is empty")
    return _NoiseFile(str(record.get("audio_id", path)), path, info.frames, info.samplerate)




class NoiseMixer:
    """Mix clean crops with noise files at random SNRs, with optional reverberation.

    ``noise_records``: manifest records (``audio`` paths, ``audio_id``); their headers are
    checked here, and an unreadable file raises DashflowError naming it (now or when read).
    A crop whose valid part is digitally silent gets its noise scaled against ``SPEECH_POWER``;
    a silent noise segment leaves the crop clean.
    """

    def __init__(self, noise_records: Sequence[dict], config: MixingConfig,
                 sample_rate: int = SAMPLE_RATE, seed: int = 0):
        check_mixing(config)
        if not noise_records:
            raise DashflowError("no noise files to mix with")
        self.noises = [_open_noise(record) for record in noise_records]
        self.snr_db = (float(config.snr_db[0]), float(config.snr_db[1]))
        self.rt60 = (float(config.rt60[0]), float(config.rt60[1]))
        self.reverb_prob, self.dereverb = float(config.reverb_prob), bool(config.dereverb)
        self.sample_rate, self.seed = sample_rate, seed

    def __call__(self, clean: Tensor, length: int, epoch: int, key: int | str) -> tuple[Tensor, Tensor]:
        """clean [S] (zero past ``length``) -> (noisy [S], target [S]); a pure function of
        (seed, epoch, key)."""
        mix = self.draw(clean, length, epoch, key)
        return mix.noisy, mix.target

    def draw(self, clean: Tensor, length: int, epoch: int, key: int | str) -> Mix:
        """Like ``__call__``, also returning the SNR, noise id and RT60 drawn."""
        if clean.dim() != 1 or not 0 < length <= clean.numel():
            raise DashflowError(f"NoiseMixer takes clean [S] with 0 < length <= S, got shape "
                                f"{tuple(clean.shape)} and length {length}")
        rng = np.random.default_rng([self.seed, epoch, zlib.crc32(str(key).encode("utf-8")),
                                     MIX_STREAM])
        noise_file = self.noises[int(rng.integers(len(self.noises)))]
        noise = self._segment(noise_file, length, rng)
        snr_db = float(rng.uniform(*self.snr_db))
        rt60 = float(rng.uniform(*self.rt60)) if rng.random() < self.reverb_prob else None

        dry = clean[:length].double().numpy()
        wet = dry if rt60 is None else fftconvolve(
            dry, synthetic_rir(rt60, self.sample_rate, rng).astype(np.float64))[:length]
        target = dry if self.dereverb else wet
        speech_power = float(np.square(wet).mean())
        noise_power = float(np.square(noise).mean())
        gain = 0.0 if noise_power < SILENCE_POWER else _noise_gain(
            speech_power if speech_power >= SILENCE_POWER else SPEECH_POWER, noise_power, snr_db)
        noisy = wet + gain * noise
        peak = max(float(np.abs(noisy).max()), float(np.abs(target).max()))
        scale = PEAK / peak if peak > 1.0 else 1.0  # same factor keeps the SNR

        out = torch.zeros(2, clean.numel(), dtype=torch.float32)
        out[0, :length] = torch.from_numpy(noisy * scale)
        out[1, :length] = torch.from_numpy(target * scale)
        return Mix(out[0], out[1], snr_db, noise_file.audio_id, rt60)

    def _segment(self, noise: _NoiseFile, length: int, rng: np.random.Generator) -> np.ndarray:
        """``length`` samples of ``noise`` at ``self.sample_rate`` [length] float64: a random
        window read partially, or the whole file looped from a random offset when shorter."""
        needed = math.ceil(length * noise.sample_rate / self.sample_rate) + 1
        short = noise.frames <= needed
        start = 0 if short else int(rng.integers(noise.frames - needed + 1))
        wav = self._read(noise, start, noise.frames if short else needed)
        wav = resample(wav, noise.sample_rate, self.sample_rate).astype(np.float64)
        offset = int(rng.integers(wav.size)) if short else 0
        return np.tile(wav, math.ceil((offset + length) / wav.size))[offset:offset + length]

    @staticmethod
    def _read(noise: _NoiseFile, start: int, frames: int) -> np.ndarray:
        try:
            wav, _ = sf.read(noise.path, start=start, frames=frames, dtype="float32",
                             always_2d=True)
        except Exception as exc:  # soundfile raises several types for corrupt files
            raise DashflowError(f"{noise.path}: cannot read noise ({first_line(exc)})") from None
        if wav.shape[0] == 0 or not np.isfinite(wav).all():
            raise DashflowError(f"{noise.path}: noise segment at sample {start} is empty or "
                                f"not finite")
        return wav.mean(axis=1)


class MixedClipDataset(Dataset):
    """Crops of an :class:`AudioClipDataset` mixed by a :class:`NoiseMixer`, keyed like it.

    Items are the clip items with ``audio`` = the target [S] and ``noisy`` [S]; the mix key is
    the clip's ``audio_id`` and the epoch that of the ``(epoch, index)`` key.
    """

    def __init__(self, clips: AudioClipDataset, mixer: NoiseMixer):
        self.clips, self.mixer = clips, mixer

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        item = self.clips[key]
        epoch = key[0] if isinstance(key, tuple) else 0
        noisy, target = self.mixer(item["audio"], item["length"], epoch, item["audio_id"])
        return {**item, "audio": target, "noisy": noisy}


def _is_manifest(source: str | os.PathLike | Sequence[dict]) -> bool:
    return not isinstance(source, (str, os.PathLike)) or str(source).endswith((".jsonl", ".json"))


def _records(source: str | os.PathLike | Sequence[dict]) -> list[dict]:
    return read_manifest(source) if isinstance(source, (str, os.PathLike)) else list(source)


def _check_paired(source: str | os.PathLike | Sequence[dict]) -> str | os.PathLike | list[dict]:
    """``source`` (records when a manifest) after checking every clip has a ``noisy`` twin."""
    hint = "pass a noise manifest to mix on the fly, or a paired one (dashflow prepare voicebank/dns)"
    if not _is_manifest(source):
        import webdataset as wds

        first = expand_shards(source)[0]
        sample = next(iter(wds.tarfile_samples([{"url": first}])), {})
        if "noisy.flac" not in sample:
            raise DashflowError(f"{first}: shards hold no noisy audio; {hint}")
        return source
    records = _records(source)
    unpaired = [r["audio_id"] for r in records if not r.get("noisy")]
    if unpaired:
        name = source if isinstance(source, (str, os.PathLike)) else "the manifest"
        raise DashflowError(f"{name}: {len(unpaired)} record(s) have no 'noisy' path (first: "
                            f"{unpaired[0]!r}); {hint}")
    return records


def build_se_loader(source: str | os.PathLike | Sequence[dict],
                    noise: str | os.PathLike | Sequence[dict] | None, batch_size: int,
                    crop_seconds: float | None, seed: int = 0, start_step: int = 0, rank: int = 0,
                    world_size: int = 1, num_workers: int = 0, sample_rate: int = SAMPLE_RATE,
                    mixing: MixingConfig | None = None) -> DataLoader:
    """Endless SE batches: ``audio`` [B,S] (the clean target), ``noisy`` [B,S], ``length`` [B],
    ``audio_id``, ``caption`` (see :func:`dashflow.data.collate_clips`).

    ``noise=None``: ``source`` is a paired manifest or paired shards (every clip has ``noisy``),
    read by :func:`dashflow.data.build_clip_loader`. Otherwise ``source`` is a clean-speech
    manifest (records or ``.jsonl``) mixed on the fly with the ``noise`` manifest's files by a
    :class:`NoiseMixer` configured by ``mixing``. Resumes exactly at ``start_step``.
    """
    if noise is None:
        return build_clip_loader(_check_paired(source), batch_size, crop_seconds, seed,
                                 start_step, rank, world_size, num_workers, sample_rate)
    if not _is_manifest(source):
        raise DashflowError(f"{source}: on-the-fly mixing reads a clean-speech manifest (.jsonl), "
                            f"not shards")
    clean = [{k: v for k, v in r.items() if k != "noisy"} for r in _records(source)]
    mixer = NoiseMixer(_records(noise), mixing or MixingConfig(), sample_rate, seed)
    dataset = MixedClipDataset(AudioClipDataset(clean, crop_seconds, sample_rate, seed), mixer)
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, start_step, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def write_mixed_set(clean: Sequence[dict], noise: Sequence[dict], out_dir: str | Path,
                    mixing: MixingConfig | None = None, seed: int = 0,
                    sample_rate: int = SAMPLE_RATE) -> Path:
    """A fixed SE test set: every whole clean clip mixed once by a NoiseMixer (epoch 0, key
    ``audio_id``).

    Writes ``out_dir/noisy/<name>.wav``, ``out_dir/clean/<name>.wav`` (the target: same name and
    length) and ``out_dir/manifest.jsonl``: paired records with ``snr_db``, ``noise`` (its
    audio_id), ``speaker`` and ``rt60`` where known. ``<name>`` is the audio_id with characters
    other than letters, digits, ``_ . -`` replaced by ``_``. Returns the manifest path.
    """
    out_dir = Path(out_dir)
    mixer = NoiseMixer(noise, mixing or MixingConfig(), sample_rate, seed)
    records, names = [], {}
    for record in tqdm(clean, delay=1.0, desc="mixing", unit="clip"):
        name = re.sub(r"[^\w.-]+", "_", record["audio_id"])
        if name in names:
            raise DashflowError(f"audio_ids {names[name]!r} and {record['audio_id']!r} both "
                                f"become {name}.wav")
        names[name] = record["audio_id"]
        wav = load_audio(record["audio"], sample_rate)
        mix = mixer.draw(wav, wav.numel(), 0, record["audio_id"])
        mixed = {"audio_id": record["audio_id"],
                 "audio": save_audio(out_dir / "clean" / f"{name}.wav", mix.target, sample_rate),
                 "noisy": save_audio(out_dir / "noisy" / f"{name}.wav", mix.noisy, sample_rate),
                 "duration": round(wav.numel() / sample_rate, 3), "snr_db": round(mix.snr_db, 3),
                 "noise": mix.noise_id, "task": "speech_enhancement"}
        if record.get("speaker"):
            mixed["speaker"] = record["speaker"]
        if mix.rt60 is not None:
            mixed["rt60"] = round(mix.rt60, 3)
        records.append(mixed)
    if not records:
        raise DashflowError("no clean clips to mix")
    return write_manifest(records, out_dir / "manifest.jsonl")

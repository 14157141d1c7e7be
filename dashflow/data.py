"""Clip data shared by every recipe: JSON-lines manifests, random crops, WebDataset shards.

A manifest has one clip a line::

    {"audio_id": "x1", "audio": "wavs/x1.wav", "caption": "a dog barks", "duration": 4.2,
     "noisy": "noisy/x1.wav", "task": "speech_enhancement"}

``audio_id`` and ``audio`` are required; relative paths resolve against the manifest's folder.
Items are dicts ``{"audio": wav [S], "length": int, "audio_id": str, "caption": str | None,
"noisy": wav [S] (when the record has one)}``; :func:`collate_clips` batches them.

Exact resume: random crops are a pure function of ``(seed, epoch, clip)`` and the sample
order a pure function of ``(seed, epoch)``, so a loader rebuilt with ``start_step=k`` yields
exactly the batches an uninterrupted run saw from step ``k`` on, without reading the first k.
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    get_worker_info,
)

from dashflow.audio import SAMPLE_RATE, load_audio
from dashflow.errors import DashflowError
from dashflow.manifests import PATH_KEYS, read_manifest
from dashflow.outputs import atomic_path

logger = logging.getLogger(__name__)

OPTIONAL_KEYS = ("caption", "duration", "task")  # carried into WebDataset samples



# ----------------------------------------------------------------------------- manifests

def check_audio_records(records: Sequence[dict]) -> list[dict]:
    """Keep records whose audio (and noisy audio) files have readable, non-empty headers.

    Each dropped record is reported as one warning line naming the file; the durations found
    fill ``duration`` when missing. Raises DashflowError when nothing is readable.
    """
    kept = []
    for record in records:
        try:
            for key in PATH_KEYS:
                if record.get(key):
                    seconds = _header_seconds(record[key])
                    if key == "audio":
                        record = {**record, "duration": record.get("duration") or seconds}
        except DashflowError as exc:
            logger.warning("skipping %s: %s", record["audio_id"], exc)
            continue
        kept.append(record)
    if not kept:
        raise DashflowError(f"none of the {len(records)} manifest entries has readable audio")
    return kept


def _header_seconds(path: str) -> float:
    try:
        info = sf.info(path)
    except Exception as exc:  # soundfile raises several types for missing or corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DashflowError(f"{path}: cannot read audio ({reason})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise DashflowError(f"{path}: audio file is empty")
    return info.frames / info.samplerate


# ----------------------------------------------------------------------------- crops

def crop_offset(length: int, crop: int, seed: int, epoch: int, key: str | int) -> int:
    """Start sample of a ``crop``-long window in a clip of ``length``: a function of its args."""
    if length <= crop:
        return 0
    key_hash = zlib.crc32(str(key).encode("utf-8"))
    rng = np.random.default_rng([seed, epoch, key_hash])
    return int(rng.integers(0, length - crop + 1))


def make_item(record: dict, wavs: dict[str, torch.Tensor], crop: int | None, seed: int,
              epoch: int, key: str | int, random_crop: bool) -> dict[str, Any]:
    """Crop (or zero-pad) ``wavs`` ("audio" and optional "noisy", each [S]) to ``crop`` samples."""
    audio = wavs["audio"]
    if crop is None:
        crop = audio.numel()
    offset = crop_offset(audio.numel(), crop, seed, epoch, key) if random_crop else 0
    item: dict[str, Any] = {"audio_id": record["audio_id"], "caption": record.get("caption")}
    for name, wav in wavs.items():
        window = wav[offset:offset + crop]
        item[name] = torch.nn.functional.pad(window, (0, crop - window.numel()))
        if name == "audio":
            item["length"] = window.numel()
    return item


class AudioClipDataset(Dataset):
    """Map-style clips from manifest records, cropped to ``crop_seconds`` at ``sample_rate``.

    ``dataset[i]`` gives the epoch-0 crop of clip ``i``; ``dataset[(epoch, i)]`` (what
    :class:`ResumableBatchSampler` yields) gives that epoch's crop. ``random_crop=False``
    takes the first ``crop_seconds`` (validation). ``crop_seconds=None`` keeps whole clips.
    Records with unreadable files are reported and dropped here, never padded with zeros.
    """

    def __init__(self, records: Sequence[dict], crop_seconds: float | None,
                 sample_rate: int = SAMPLE_RATE, seed: int = 0, random_crop: bool = True):
        self.records = check_audio_records(records)
        self.crop = None if crop_seconds is None else round(crop_seconds * sample_rate)
        self.sample_rate = sample_rate
        self.seed = seed
        self.random_crop = random_crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        record = self.records[index]
        wavs = {name: load_audio(record[name], self.sample_rate)
                for name in PATH_KEYS if record.get(name)}
        if "noisy" in wavs and wavs["noisy"].numel() != wavs["audio"].numel():
            raise DashflowError(f"{record['noisy']}: length differs from its clean file "
                                f"{record['audio']}")
        return make_item(record, wavs, self.crop, self.seed, epoch, index, self.random_crop)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(epoch, index)`` keys for one process, starting at ``start_step``.

    Epoch ``e`` shuffles all indices with seed ``(seed, e)``; each global batch of
    ``batch_size * world_size`` is split by rank; the incomplete tail of an epoch is dropped.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.global_batch = batch_size * world_size
        if num_items < self.global_batch:
            raise DashflowError(f"{num_items} clips cannot fill one batch of {batch_size} x "
                                f"{world_size} processes")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.rank, self.shuffle = start_step, rank, shuffle
        self.batches_per_epoch = num_items // self.global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = divmod(self.start_step, self.batches_per_epoch)
        while True:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
                order = torch.randperm(self.num_items, generator=generator).tolist()
            else:
                order = list(range(self.num_items))
            for batch in range(skip, self.batches_per_epoch):
                start = batch * self.global_batch + self.rank * self.batch_size
                yield [(epoch, index) for index in order[start:start + self.batch_size]]
            epoch, skip = epoch + 1, 0


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: ``audio`` [B,S], ``length`` [B] long, ``noisy`` [B,S] if every item has one,
    ``audio_id`` and ``caption`` lists."""
    batch: dict[str, Any] = {
        "audio": torch.stack([item["audio"] for item in items]),
        "length": torch.tensor([item["length"] for item in items], dtype=torch.long),
        "audio_id": [item["audio_id"] for item in items],
        "caption": [item["caption"] for item in items],
    }
    if all("noisy" in item for item in items):
        batch["noisy"] = torch.stack([item["noisy"] for item in items])
    return batch


# ----------------------------------------------------------------------------- shards

def write_shards(manifest: str | os.PathLike, out_dir: str | os.PathLike,
                 clips_per_shard: int = 1000, sample_rate: int = SAMPLE_RATE) -> list[Path]:
    """Pack a manifest into ``out_dir/shard-000000.tar`` ... (16-bit FLAC at ``sample_rate``).

    Each sample holds ``audio.flac``, ``noisy.flac`` (when present) and ``json`` (the
    record's other fields). Unreadable clips are reported and skipped. Returns shard paths.
    """
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = _encoded_samples(check_audio_records(read_manifest(manifest)), sample_rate)
    shards: list[Path] = []
    while chunk := list(itertools.islice(samples, clips_per_shard)):
        shards.append(out_dir / f"shard-{len(shards):06d}.tar")
        with atomic_path(shards[-1]) as tmp, wds.TarWriter(str(tmp)) as tar:
            for number, sample in enumerate(chunk):
                tar.write({"__key__": f"{number:08d}", **sample})
    if not shards:
        raise DashflowError(f"{manifest}: no readable audio to write into shards")
    return shards


def _encoded_samples(records: Sequence[dict], sample_rate: int) -> Iterator[dict[str, bytes]]:
    """Shard samples (FLAC bytes + JSON metadata) of ``records``; unreadable ones reported."""
    for record in records:
        try:
            sample = {f"{name}.flac": _flac_bytes(load_audio(record[name], sample_rate),
                                                  sample_rate)
                      for name in PATH_KEYS if record.get(name)}
        except DashflowError as exc:
            logger.warning("skipping %s: %s", record["audio_id"], exc)
            continue
        meta = {key: record[key] for key in ("audio_id", *OPTIONAL_KEYS) if key in record}
        yield {**sample, "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}


def _flac_bytes(wav: torch.Tensor, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wav.clamp(-1, 1).numpy(), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def expand_shards(spec: str | os.PathLike) -> list[str]:
    """Shard paths from a folder (its ``*.tar``), a glob, or a brace pattern ``a-{000..009}.tar``."""
    spec = str(spec)
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
    else:
        paths = sorted(p for pattern in braceexpand.braceexpand(spec) for p in glob.glob(pattern))
    if not paths:
        raise DashflowError(f"{spec}: no .tar shards found")
    return paths


class ShardClipDataset(IterableDataset):
    """Endless stream of the same items as :class:`AudioClipDataset`, read from tar shards.

    Epoch ``e`` shuffles the shard list with ``(seed, e)`` and deals it to every
    (rank, worker) stream; each stream shuffles samples in a seeded buffer. ``start_step``
    skips what the first ``start_step`` batches consumed, without decoding it (exact resume,
    any number of workers).
    """

    def __init__(self, shards: Sequence[str], crop_seconds: float | None, batch_size: int,
                 sample_rate: int = SAMPLE_RATE, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 256):
        self.shards = list(shards)
        self.crop = None if crop_seconds is None else round(crop_seconds * sample_rate)
        self.batch_size, self.sample_rate, self.seed = batch_size, sample_rate, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.shuffle_buffer = shuffle_buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        streams = self.world_size * workers
        if len(self.shards) < streams:
            raise DashflowError(f"{len(self.shards)} shards cannot feed {self.world_size} "
                                f"process(es) x {workers} worker(s); write more shards")
        # The DataLoader takes batch j from worker j % workers, starting at worker 0. Batch j
        # of a run resumed at start_step is batch start_step + j of the full run, so this
        # worker replays the stream of worker (worker + start_step) % workers, past the
        # batches that worker made before start_step.
        replayed = (worker + self.start_step) % workers
        stream = self.rank * workers + replayed
        skip = len(range(replayed, self.start_step, workers)) * self.batch_size
        epoch = 0
        while True:
            for position, (record, raw) in enumerate(self._samples(epoch, stream, streams)):
                if skip:
                    skip -= 1
                    continue
                wavs = {name: self._decode(raw[f"{name}.flac"], record)
                        for name in PATH_KEYS if f"{name}.flac" in raw}
                yield make_item(record, wavs, self.crop, self.seed, epoch, record["audio_id"],
                                random_crop=True)
            epoch += 1

    def _samples(self, epoch: int, stream: int, streams: int) -> Iterator[tuple[dict, dict]]:
        import webdataset as wds

        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        mine = [{"url": self.shards[i]} for i in order[stream::streams]]
        rng = np.random.default_rng([self.seed, epoch, stream])
        buffer: list[tuple[dict, dict]] = []
        for raw in wds.tarfile_samples(mine):
            buffer.append((json.loads(raw["json"]), raw))
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def _decode(self, data: bytes, record: dict) -> torch.Tensor:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        if sr != self.sample_rate:
            raise DashflowError(f"shard clip {record['audio_id']}: stored at {sr} Hz, expected "
                                f"{self.sample_rate} Hz (rewrite the shards)")
        return torch.from_numpy(wav.mean(axis=1))


# ----------------------------------------------------------------------------- loaders

def build_clip_loader(source: str | os.PathLike | Sequence[dict], batch_size: int,
                      crop_seconds: float | None, seed: int = 0, start_step: int = 0,
                      rank: int = 0, world_size: int = 1, num_workers: int = 0,
                      sample_rate: int = SAMPLE_RATE) -> DataLoader:
    """Endless training batches (see :func:`collate_clips`) for process ``rank`` of
    ``world_size``, resuming at ``start_step``.

    ``source``: manifest records, a ``.jsonl`` manifest, or WebDataset shards (a folder, a glob
    or a brace pattern). The loader draws nothing from the global RNG.
    """
    loader_args = dict(collate_fn=collate_clips, num_workers=num_workers,
                       pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                       generator=torch.Generator().manual_seed(seed))
    if not isinstance(source, (str, os.PathLike)) or str(source).endswith((".jsonl", ".json")):
        records = source if not isinstance(source, (str, os.PathLike)) else read_manifest(source)
        dataset = AudioClipDataset(records, crop_seconds, sample_rate, seed)
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed, start_step, rank,
                                        world_size)
        return DataLoader(dataset, batch_sampler=sampler, **loader_args)
    dataset = ShardClipDataset(expand_shards(source), crop_seconds, batch_size, sample_rate,
                               seed, start_step, rank, world_size)
    return DataLoader(dataset, batch_size=batch_size, **loader_args)

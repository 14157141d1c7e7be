"""Training batches of (latents or audio, caption) for the text-conditioned DiT recipes.

Two sources give the same kind of batch:

- a JSON-lines manifest (or WebDataset shards) of audio + caption: random crops of at most
  ``max_seconds`` (:func:`dashflow.data.build_clip_loader`), encoded on the fly by the frozen
  tokenizer (:func:`batch_latents`);
- a manifest + a :class:`~generation.latent_cache.LatentCache` of the same tokenizer: random
  crops of at most ``max_seconds`` worth of latent frames of the cached ``[T, C]`` latents.

Each process loads ``batch_size x accumulation`` clips per optimizer step (its share of the
global batch) and :func:`dashflow.training.split_batch` cuts them into micro-batches. Sample order and crops are
pure functions of ``(seed, epoch, clip)``, so a loader rebuilt at step k resumes exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from dashflow.generation.training.latent_cache import LatentCache
from torch.utils.data import DataLoader, Dataset

from dashflow.data import ResumableBatchSampler, build_clip_loader, crop_offset
from dashflow.codecs import LatentCodec
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest


def is_manifest(source: str | os.PathLike) -> bool:
    return str(source).endswith((".jsonl", ".json"))


def has_caption(caption: object) -> bool:
    return isinstance(caption, str) and bool(caption.strip())


def require_captions(records: Sequence[dict], source: str | os.PathLike) -> list[dict]:
    """The records, each checked to carry a non-empty ``caption`` string."""
    for record in records:
        if not has_caption(record.get("caption")):
            raise DashflowError(f"{source}: clip {record['audio_id']!r} has no caption (text "
                                "conditioning needs a \"caption\" on every line)")
    return list(records)


class LatentClipDataset(Dataset):
    """Cached latents of manifest records, cropped to at most ``max_frames`` frames.

    ``dataset[(epoch, i)]`` -> ``{"latents": [T, C] float32, "caption", "audio_id"}``; the crop
    offset is drawn from ``(seed, epoch, i)`` like :class:`dashflow.data.AudioClipDataset`.
    """

    def __init__(self, records: Sequence[dict], cache: LatentCache, max_frames: int, seed: int = 0):
        missing = [record["audio_id"] for record in records if not cache.has(record["audio_id"])]
        if missing:
            raise DashflowError(f"{len(missing)} of {len(records)} clips are not in the latent cache "
                                f"{cache.folder} (first: {missing[0]!r}); run dashflow cache-latents "
                                "with this manifest and tokenizer")
        self.records, self.cache, self.max_frames, self.seed = list(records), cache, max_frames, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        record = self.records[index]
        latents = self.cache.load(record["audio_id"])
        offset = crop_offset(len(latents), self.max_frames, self.seed, epoch, index)
        return {"latents": latents[offset:offset + self.max_frames], "caption": record["caption"],
                "audio_id": record["audio_id"]}


def collate_latents(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad to the longest item: ``latents`` [B, T, C], ``latent_mask`` [B, T] bool, plus
    ``caption`` and ``audio_id`` lists."""
    lengths = torch.tensor([len(item["latents"]) for item in items])
    latents = torch.zeros(len(items), int(lengths.max()), items[0]["latents"].shape[1])
    for row, item in enumerate(items):
        latents[row, :len(item["latents"])] = item["latents"]
    return {"latents": latents, "latent_mask": torch.arange(latents.shape[1])[None] < lengths[:, None],
            "caption": [item["caption"] for item in items],
            "audio_id": [item["audio_id"] for item in items]}


def build_train_loader(source: str | list[dict], tokenizer: LatentCodec, max_seconds: float, batch_size: int,
                       latent_cache: str = "", seed: int = 0, start_step: int = 0, rank: int = 0,
                       world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Endless batches of ``batch_size`` clips for process ``rank``, from step ``start_step`` on.

    ``source``: a ``.jsonl`` manifest, its records (captioned), or WebDataset shards (audio only).
    With ``latent_cache`` the batches hold cached latents (see :func:`collate_latents`), else audio
    crops (see :func:`dashflow.data.collate_clips`) for :func:`batch_latents` to encode.
    """
    records = source if isinstance(source, list) else (
        require_captions(read_manifest(source), source) if is_manifest(source) else None)
    if not latent_cache:
        return build_clip_loader(records if records is not None else source, batch_size, max_seconds,
                                 seed, start_step, rank, world_size, num_workers, tokenizer.sample_rate)
    if records is None:
        raise DashflowError(f"{source}: a latent cache is read through a .jsonl manifest, not shards")
    max_frames = tokenizer.latent_length(round(max_seconds * tokenizer.sample_rate))
    dataset = LatentClipDataset(records, LatentCache.for_tokenizer(latent_cache, tokenizer), max_frames, seed)
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, start_step, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_latents, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())


@torch.no_grad()
def batch_latents(batch: dict[str, Any], tokenizer: LatentCodec) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean latents [B, C, T] float32 and latent mask [B, T] of a (micro-)batch on the
    tokenizer's device, cut after the longest clip.

    Cached latents pass through; audio (``audio`` [B, S], ``length`` [B]) is encoded by the
    frozen tokenizer in float32 outside any autocast region, as the latent cache was.
    """
    device = tokenizer.device
    if "latents" in batch:
        latents, mask = batch["latents"].to(device), batch["latent_mask"].to(device)
    else:
        wav, lengths = batch["audio"].to(device), batch["length"].to(device)
        with torch.autocast(device.type, enabled=False):
            encoding = tokenizer.encode(wav.float(), lengths.clamp(min=tokenizer.min_samples))
        latents, mask = encoding.latents, encoding.mask
    frames = max(1, int(mask.sum(1).max()))
    return latents[:, :frames].transpose(1, 2).float(), mask[:, :frames].bool()

"""Tokenizer latents cached per clip, so training can skip the tokenizer encoder.

:func:`cache_latents` writes the cache (``dashflow cache-latents`` wraps it); :class:`LatentCache`
reads it.

Layout (written by ``dashflow cache-latents``)::

    cache_dir/<weights_hash>/cache_info.json          which tokenizer built this folder
    cache_dir/<weights_hash>/<audio_id>.safetensors   "latents" [T, D] + metadata

``weights_hash`` is the codec's ``weights_hash()``, so latents of another tokenizer live
in another folder and are never read by mistake. ``audio_id`` is percent-encoded into a safe
file name (``/`` -> ``%2F``). Metadata (strings): ``audio_id``, ``audio``, ``duration`` (s),
``sample_rate``, ``frames``, ``weights_hash``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dashflow.audio import load_audio
from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path, warn_skipped

if TYPE_CHECKING:
    from dashflow.codecs import LatentCodec

INFO_NAME = "cache_info.json"
SUFFIX = ".safetensors"
MAX_NAME = 200  # bytes of an encoded id kept verbatim; longer ids get a hash suffix


def latent_filename(audio_id: str) -> str:
    """A file name for ``audio_id``: percent-encoded, never hidden, at most ~220 bytes."""
    name = quote(audio_id, safe="-_.,=+@")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME]}~{hashlib.sha256(audio_id.encode()).hexdigest()[:16]}"
    return name + SUFFIX


class LatentCache:
    """Reads ``cache_dir/<weights_hash>/``: ``has(audio_id)``, ``load(audio_id) -> latents [T, D]``."""

    def __init__(self, cache_dir: str | os.PathLike, weights_hash: str):
        self.cache_dir = Path(cache_dir)
        self.weights_hash = weights_hash
        self.folder = self.cache_dir / weights_hash

    @classmethod
    def for_tokenizer(cls, cache_dir: str | os.PathLike, tokenizer) -> LatentCache:
        """The cache of ``tokenizer`` (a LatentCodec) under ``cache_dir``."""
        return cls(cache_dir, tokenizer.weights_hash())

    def path(self, audio_id: str) -> Path:
        return self.folder / latent_filename(audio_id)

    def has(self, audio_id: str) -> bool:
        return self.path(audio_id).is_file()

    def load(self, audio_id: str) -> torch.Tensor:
        """Latents [T, D] float32 of ``audio_id``; DashflowError when absent or unreadable."""
        path = self._existing(audio_id)
        try:
            return load_file(path)["latents"].float()
        except (SafetensorError, KeyError, OSError) as exc:
            raise DashflowError(f"{path}: unreadable latent file ({exc}); delete it and rerun "
                                "dashflow cache-latents") from None

    def metadata(self, audio_id: str) -> dict[str, str]:
        """The stored metadata of ``audio_id`` (duration, sample_rate, frames, ...), as strings."""
        path = self._existing(audio_id)
        try:
            with safe_open(path, framework="pt") as handle:
                return dict(handle.metadata() or {})
        except (SafetensorError, OSError) as exc:
            raise DashflowError(f"{path}: unreadable latent file ({exc})") from None

    def _existing(self, audio_id: str) -> Path:
        path = self.path(audio_id)
        if path.is_file():
            return path
        if self.folder.is_dir():
            raise DashflowError(f"{audio_id!r}: not in latent cache {self.folder}; run dashflow "
                                "cache-latents on a manifest that lists it")
        raise DashflowError(f"{self.cache_dir} holds no latents for tokenizer {self.weights_hash} "
                            f"({self._describe_others()}); run dashflow cache-latents with this "
                            "tokenizer or pass the cache of the tokenizer you train with")

    def _describe_others(self) -> str:
        if not self.cache_dir.is_dir():
            return "the folder does not exist"
        others = sorted(p for p in self.cache_dir.iterdir() if (p / INFO_NAME).is_file())
        if not others:
            return "it has no tokenizer folders at all"
        described = []
        for folder in others:
            try:
                source = json.loads((folder / INFO_NAME).read_text()).get("tokenizer", "?")
            except (json.JSONDecodeError, OSError):
                source = "?"
            described.append(f"{folder.name} from {source}")
        return "it has " + ", ".join(described)


def cache_latents(records: Sequence[dict], tokenizer: LatentCodec, cache_dir: str | os.PathLike,
                  batch_size: int = 8, num_workers: int = 0, dtype: torch.dtype = torch.float32,
                  source: str = "") -> list[str]:
    """Encode every manifest record not yet in ``cache_dir/<weights_hash>/`` and store its latents.

    Clips are read by ``num_workers`` loader processes, padded into batches of ``batch_size``
    (the tokenizer gives each clip the same latents alone as in a padded batch) and written one
    file each, atomically, as soon as their batch is done, so an interrupted run loses nothing
    and a rerun only does what is missing. Unreadable or too-short clips are skipped and
    reported. Returns one line per skipped clip.
    """
    cache = LatentCache.for_tokenizer(cache_dir, tokenizer)
    cache.folder.mkdir(parents=True, exist_ok=True)
    write_cache_info(cache.folder, {"weights_hash": cache.weights_hash, "tokenizer": source,
                                    "latent_dim": tokenizer.latent_dim, "sample_rate": tokenizer.sample_rate,
                                    "samples_per_latent": tokenizer.samples_per_latent})
    todo = [record for record in records if not cache.has(record["audio_id"])]
    clips = _ClipReader(todo, tokenizer.sample_rate, tokenizer.min_samples)
    loader = DataLoader(clips, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    failures: list[str] = []
    with tqdm(delay=1.0, total=len(todo), desc="cache-latents", unit="clip", dynamic_ncols=True) as bar:
        for batch in loader:
            good = []
            for record, wav, error in batch:
                if error is None:
                    good.append((record, wav))
                else:
                    failures.append(f"{record['audio_id']}: {error}")
            if good:
                _encode_and_write(tokenizer, cache, good, dtype)
            bar.update(len(batch))
    for failure in failures:  # after the bar, so no line is drawn into it
        warn_skipped(failure)
    return failures


class _ClipReader(Dataset):
    """Item i: (record, wav [S] or None, error line or None); bad audio is reported, not raised."""

    def __init__(self, records: Sequence[dict], sample_rate: int, min_samples: int):
        self.records, self.sample_rate, self.min_samples = records, sample_rate, min_samples

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[dict, torch.Tensor | None, str | None]:
        record = self.records[index]
        try:
            wav = load_audio(record["audio"], self.sample_rate)
        except DashflowError as exc:
            return record, None, str(exc)
        if wav.numel() < self.min_samples:
            return record, None, (f"{record['audio']}: {wav.numel()} samples is shorter than the "
                                  f"tokenizer's minimum of {self.min_samples} at {self.sample_rate} Hz")
        return record, wav, None


@torch.inference_mode()
def _encode_and_write(tokenizer: LatentCodec, cache: LatentCache,
                      clips: list[tuple[dict, torch.Tensor]], dtype: torch.dtype) -> None:
    """Encode ``clips`` (record, wav [S]) as one zero-padded batch and write each clip's [T_i, D]."""
    lengths = torch.tensor([wav.numel() for _, wav in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, (_, wav) in enumerate(clips):
        batch[row, :wav.numel()] = wav
    device = next(tokenizer.parameters()).device
    encoding = tokenizer.encode(batch.to(device), lengths.to(device))
    for (record, wav), latents, mask in zip(clips, encoding.latents, encoding.mask):
        frames = int(mask.sum())
        write_latents(cache.path(record["audio_id"]), latents[:frames].to("cpu", dtype), {
            "audio_id": record["audio_id"], "audio": record["audio"],
            "duration": wav.numel() / tokenizer.sample_rate, "sample_rate": tokenizer.sample_rate,
            "frames": frames, "weights_hash": cache.weights_hash})


def write_cache_info(folder: Path, info: dict) -> None:
    """Record which tokenizer built ``folder`` (written once, atomically)."""
    path = folder / INFO_NAME
    if not path.is_file():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")


def write_latents(path: Path, latents: torch.Tensor, metadata: dict[str, object]) -> None:
    """Save latents [T, D] with ``metadata`` (stored as strings) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        save_file({"latents": latents.contiguous()}, tmp,
                  metadata={key: str(value) for key, value in metadata.items()})

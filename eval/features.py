"""Per-clip embeddings with a content-addressed cache.

An :class:`Embedder` turns one clip (mono, at its own sample rate) into named arrays. Results are
cached under ``<cache>/<embedder key>/<sha256 of the audio file>.npz``; the embedder key hashes
the model's weights sha256 and every front-end setting, so a changed file, model or setting
misses the cache instead of reading a stale entry. Unreadable or empty files are reported by
name and left out, never replaced by silence.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from dashflow.eval.weights import sha256_file
from tqdm import tqdm

from dashflow.audio import load_audio
from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path

CACHE_ENV = "DASHFLOW_EVAL_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/dashflow/eval-features")
CACHE_FORMAT = 1

Features = dict[str, np.ndarray]


class Embedder(Protocol):
    name: str
    sample_rate: int
    settings: dict[str, Any]  # everything that changes the numbers, weights sha256 included

    def __call__(self, wav: np.ndarray, content_hash: str) -> Features: ...


def cache_key(embedder: Embedder) -> str:
    """Hex digest of the embedder's name, settings and the cache format."""
    blob = json.dumps({"name": embedder.name, "settings": embedder.settings, "format": CACHE_FORMAT},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FeatureCache:
    """``.npz`` files keyed by (embedder key, file content sha256); ``root=None`` disables it."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).expanduser() if root is not None else None

    def _path(self, key: str, content_hash: str) -> Path:
        return self.root / key / f"{content_hash}.npz"

    def get(self, key: str, content_hash: str) -> Features | None:
        if self.root is None or not (path := self._path(key, content_hash)).is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed and overwritten

    def put(self, key: str, content_hash: str, features: Features) -> None:
        if self.root is None:
            return
        with atomic_path(self._path(key, content_hash)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **features)


@dataclass
class Extraction:
    """``features[embedder][clip]``; ``bad[clip]``: why a clip was left out; ``hashes[clip]``: sha256."""

    features: dict[str, dict[str, Features]]
    bad: dict[str, str]
    hashes: dict[str, str]


def extract(clips: dict[str, Path], embedders: list[Embedder], cache: FeatureCache,
            desc: str = "embedding") -> Extraction:
    """Run every embedder on every clip; audio is read once per sample rate still needed."""
    out: dict[str, dict[str, Features]] = {e.name: {} for e in embedders}
    bad: dict[str, str] = {}
    hashes: dict[str, str] = {}
    keys = {e.name: cache_key(e) for e in embedders}
    for clip_id, path in tqdm(clips.items(), delay=1.0, desc=desc, unit="clip"):
        try:
            content_hash = hashes[clip_id] = sha256_file(path)
        except OSError as exc:
            bad[clip_id] = f"{path}: cannot read ({exc.strerror or exc})"
            continue
        pending = []
        for embedder in embedders:
            cached = cache.get(keys[embedder.name], content_hash)
            if cached is None:
                pending.append(embedder)
            else:
                out[embedder.name][clip_id] = cached
        if not pending:
            continue
        try:
            wavs = {sr: load_audio(path, sr).numpy() for sr in sorted({e.sample_rate for e in pending})}
        except DashflowError as exc:
            bad[clip_id] = str(exc)
            continue
        for embedder in pending:
            features = embedder(wavs[embedder.sample_rate], content_hash)
            cache.put(keys[embedder.name], content_hash, features)
            out[embedder.name][clip_id] = features
    return Extraction(out, bad, hashes)


def default_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path``, else $DASHFLOW_EVAL_CACHE, else ~/.cache/dashflow/eval-features."""
    return Path(path or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()

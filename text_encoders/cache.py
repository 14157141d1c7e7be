"""On-disk cache of per-prompt text embeddings for training.

Each prompt's embedding is one safetensors file ``folder/<key[:2]>/<key>.safetensors`` holding
``embedding`` [L_i, D] (its unpadded tokens), where ``key = sha256(encoder.weights_hash() + "\\n" +
prompt)``. Another encoder (other weights, tokenizer, dtype or max_length) has another weights
hash, hence other keys: the cache can never return a stale embedding. Writes are atomic, so
several processes may share one folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from dashflow.text_encoders.base import TextEncoder, check_prompts
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dashflow.outputs import atomic_path


class TextEmbeddingCache:
    """``get(prompts)`` returns what ``encoder.encode(prompts)`` would, reading hits from disk."""

    def __init__(self, folder: str | os.PathLike, encoder: TextEncoder, batch_size: int = 32):
        self.folder = Path(folder)
        self.encoder = encoder
        self.batch_size = batch_size

    def path(self, prompt: str) -> Path:
        """The file that holds (or will hold) ``prompt``'s embedding under the current encoder."""
        key = hashlib.sha256(f"{self.encoder.weights_hash()}\n{prompt}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, L, D] float32 (zero-padded to the longest prompt) and mask [B, L] bool,
        on the encoder's device. Misses are encoded in batches of ``batch_size`` and stored."""
        prompts = check_prompts(prompts)
        found = {prompt: self._read(prompt) for prompt in dict.fromkeys(prompts)}
        misses = [prompt for prompt, emb in found.items() if emb is None]
        for start in range(0, len(misses), self.batch_size):
            chunk = misses[start:start + self.batch_size]
            embeddings, mask = self.encoder.encode(chunk)
            for prompt, emb, row in zip(chunk, embeddings, mask):
                found[prompt] = emb[row].cpu()
                self._write(prompt, found[prompt])
        items = [found[prompt] for prompt in prompts]
        lengths = torch.tensor([len(item) for item in items])
        out = torch.zeros(len(items), int(lengths.max()), self.encoder.dim)
        for i, item in enumerate(items):
            out[i, :len(item)] = item
        mask = torch.arange(out.shape[1])[None] < lengths[:, None]
        device = self.encoder.device
        return out.to(device), mask.to(device)

    def _read(self, prompt: str) -> torch.Tensor | None:
        """The stored [L_i, D] embedding, or None on a miss (or an unreadable / foreign file)."""
        path = self.path(prompt)
        if not path.is_file():
            return None
        try:
            embedding = load_file(path)["embedding"]
        except (SafetensorError, KeyError, OSError):
            return None  # a damaged entry is recomputed and overwritten
        if embedding.ndim != 2 or embedding.shape[1] != self.encoder.dim or embedding.shape[0] == 0:
            return None
        return embedding

    def _write(self, prompt: str, embedding: torch.Tensor) -> None:
        path = self.path(prompt)
        with atomic_path(path) as tmp:
            save_file({"embedding": embedding.contiguous()}, tmp,
                      metadata={"encoder": self.encoder.name,
                                "weights_hash": self.encoder.weights_hash()})

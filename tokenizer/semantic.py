"""Dasheng audio encoder: the frozen semantic branch of the DashengTokenizer.

A ViT over 64-bin log-mel patches of 64 x 4 frames (40 ms per token). Long inputs are cut into
1008-frame chunks (10.08 s, 252 tokens); each chunk is encoded on its own with positions
restarting at 0, and the chunks of all clips are batched together through the blocks.
Module names follow the PyPI ``dasheng`` / HF ``DashengEncoder`` layout, so both the
tokenizer's ``encoder.model.*`` weights and bare ``dasheng_*.pt`` files load strictly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from dashflow.tokenizer.frontends import DashengFrontEnd, frame_counts
from torch import Tensor, nn

from dashflow.errors import DashflowError

logger = logging.getLogger(__name__)

PATCH_FRAMES = 4  # mel frames per token (time stride of the patch embedding)
CHUNK_FRAMES = 1008  # mel frames per independently encoded chunk
# Sizes of the released Dasheng encoders (embed_dim, depth, num_heads).
DASHENG_SIZES = {"base": (768, 12, 12), "0.6b": (1280, 32, 16), "1.2b": (1536, 40, 24)}


class SwapAxes(nn.Module):
    """Swap dims 1 and 2 of a [B, C, F, T] tensor (parameter-free)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and a key-padding mask."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x [N, L, D], key_mask [N, L] (True = attend) -> [N, L, D]."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale head_dim**-0.5
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block (LayerNorm eps 1e-6, no LayerScale, no dropout)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x [N, L, D] -> [N, L, D]."""
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Conv2d patchifier over the whole mel axis: [N, 1, n_mels, F] -> [N, D, 1, F // 4]."""

    def __init__(self, n_mels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, (n_mels, PATCH_FRAMES), stride=(n_mels, PATCH_FRAMES))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class DashengEncoder(nn.Module):
    """Dasheng ViT encoder on 16 kHz audio; outputs 25 Hz embeddings.

    Args:
        embed_dim, depth, num_heads: transformer size (0.6B: 1280 / 32 / 16).
        chunk_batch_size: most 1008-frame chunks pushed through the blocks at once; bounds the
            memory of long inputs.
    """

    def __init__(self, embed_dim: int = 1280, depth: int = 32, num_heads: int = 16,
                 chunk_batch_size: int = 32):
        super().__init__()
        self.embed_dim = embed_dim
        self.chunk_batch_size = chunk_batch_size
        tokens_per_chunk = CHUNK_FRAMES // PATCH_FRAMES
        self.time_pos_embed = nn.Parameter(torch.randn(1, embed_dim, 1, tokens_per_chunk) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, embed_dim, 1, 1) * 0.02)
        self.front_end = DashengFrontEnd()
        n_mels = self.front_end.n_mels
        self.patch_embed = PatchEmbed(n_mels, embed_dim)
        self.init_bn = nn.Sequential(SwapAxes(), nn.BatchNorm2d(n_mels, momentum=0.01), SwapAxes())
        self.init_bn[1].register_load_state_dict_pre_hook(_fill_missing_bn_stats)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(_init_weights)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wav [B, S] 16 kHz, lengths [B] valid samples -> embeddings [B, T, D].

        T = (S // 160 + 1) // 4. Tokens past a clip's own T are zero.
        """
        mel = self.front_end(wav, lengths)  # [B, M, F]
        batch, n_mels, frames = mel.shape
        x = self.init_bn(mel[:, None].to(self.time_pos_embed.dtype))  # [B, 1, M, F]
        n_chunks = -(-frames // CHUNK_FRAMES)
        x = F.pad(x, (0, n_chunks * CHUNK_FRAMES - frames))
        chunks = x.view(batch, 1, n_mels, n_chunks, CHUNK_FRAMES).permute(0, 3, 1, 2, 4)
        chunks = chunks.reshape(batch * n_chunks, 1, n_mels, CHUNK_FRAMES)

        tokens_per_chunk = CHUNK_FRAMES // PATCH_FRAMES
        n_tokens = frames // PATCH_FRAMES
        clip_tokens = (torch.full((batch,), n_tokens, device=wav.device) if lengths is None
                       else frame_counts(lengths.to(wav.device), self.front_end.hop_length) // PATCH_FRAMES)
        token_idx = torch.arange(n_chunks * tokens_per_chunk, device=wav.device)
        valid = (token_idx[None, :] < clip_tokens[:, None]).view(batch * n_chunks, tokens_per_chunk)

        out = chunks.new_zeros(batch * n_chunks, tokens_per_chunk, self.embed_dim)
        used = valid.any(dim=1).nonzero().squeeze(1)  # chunks holding at least one real token
        for group in used.split(self.chunk_batch_size):
            out[group] = self._encode_chunks(chunks[group], valid[group])
        out = out.view(batch, n_chunks * tokens_per_chunk, self.embed_dim)[:, :n_tokens]
        return out * valid.view(batch, -1)[:, :n_tokens, None]

    def _encode_chunks(self, chunks: Tensor, valid: Tensor) -> Tensor:
        """chunks [N, 1, M, 1008], valid [N, 252] -> [N, 252, D] (zero past the longest chunk)."""
        length = int(valid.sum(dim=1).max())
        x = self.patch_embed(chunks) + self.time_pos_embed + self.freq_pos_embed  # [N, D, 1, 252]
        x = x.flatten(2).transpose(1, 2)[:, :length]
        key_mask = valid[:, :length]
        key_mask = None if bool(key_mask.all()) else key_mask
        for block in self.blocks:
            x = block(x, key_mask)
        return F.pad(self.norm(x), (0, 0, 0, valid.shape[1] - length))


def _init_weights(module: nn.Module) -> None:
    """Dasheng initialisation: Xavier-uniform Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def _fill_missing_bn_stats(bn: nn.BatchNorm2d, state_dict: dict, prefix: str, *_args) -> None:
    """Load pre-hook: accept checkpoints without BatchNorm buffers (fresh statistics, warned)."""
    state_dict.setdefault(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    stats = {"running_mean": torch.zeros, "running_var": torch.ones}
    missing = [name for name in stats if prefix + name not in state_dict]
    for name in missing:
        state_dict[prefix + name] = stats[name](bn.num_features)
    if missing:
        logger.warning("%s%s absent from the checkpoint: the mel normalisation starts from "
                       "mean 0 / variance 1", prefix, "/".join(missing))


def read_dasheng_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Read a PyPI ``dasheng`` release file ``{"model": state_dict, "config": kwargs}``.

    Loaded with ``torch.load(weights_only=True)`` (no unpickling of code). Returns the state
    dict and the config kwargs; raises DashflowError naming the file when it is unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise DashflowError(f"{path}: Dasheng checkpoint not found")
    try:
        dump = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (corrupt zip, refused pickle, truncated file)
        raise DashflowError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if not (isinstance(dump, dict) and isinstance(dump.get("model"), dict)):
        raise DashflowError(f"{path}: expected a dasheng checkpoint {{'model': state_dict, 'config': ...}}")
    config = dump.get("config") or {}
    return dump["model"], dict(config)

"""Content adapter, duration predictors, duration coding and monotonic expansion.

The adapter (``CrossAttentionAdapter``) lets the content query a task instruction, predicts a
global (clip) duration and local (per content token) durations in the log domain, and
projects the content. The functions below turn durations into training targets, decode
predictions into latent frames, and expand content to latent rate along a monotonic path
(UniFlow-Audio's ``models/content_adapter.py``, github.com/wsntxxn/UniFlow-Audio).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm (eps 1e-12) over the channel axis of [B, C, L]."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, -1)).transpose(1, -1)


class DurationPredictor(nn.Module):
    """``n_layers`` x [zero-pad, Conv1d, ReLU, channel LayerNorm, Dropout] -> ``linear`` -> [B, L].

    ``conv.{i}.1`` is the Conv1d and ``conv.{i}.3`` the LayerNorm, as in the official keys.
    """

    def __init__(self, in_channels: int, filter_channels: int = 512, n_layers: int = 5,
                 kernel_size: int = 3, p_dropout: float = 0.5):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv = nn.ModuleList([
            nn.Sequential(nn.ConstantPad1d((pad, pad), 0.0),
                          nn.Conv1d(in_channels if i == 0 else filter_channels, filter_channels,
                                    kernel_size),
                          nn.ReLU(), ChannelLayerNorm(filter_channels), nn.Dropout(p_dropout))
            for i in range(n_layers)])
        self.linear = nn.Linear(filter_channels, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, C], mask [B, L] bool -> log-duration predictions [B, L] (0 where masked).

        As in the reference, the input is not masked; every layer's output is.
        """
        m = mask.to(x.dtype)
        h = x.transpose(1, 2)
        for layer in self.conv:
            h = layer(h) * m[:, None, :]
        return self.linear(h.transpose(1, 2)).squeeze(-1) * m


@dataclass
class AdapterOutput:
    """content [B, L, D]; global_duration [B] and local_duration [B, L] in the log domain."""

    content: Tensor
    global_duration: Tensor
    local_duration: Tensor


class CrossAttentionAdapter(nn.Module):
    """Content attends to the instruction; durations are predicted from a grad-scaled copy.

    ``attn`` MultiheadAttention(content_dim, heads, kdim=vdim=prefix_dim, dropout);
    ``global_duration_mlp`` Linear-ReLU-Dropout-Linear on the masked mean; ``norm`` LayerNorm;
    ``content_proj`` Conv1d(content_dim, d_out, 1).
    """

    def __init__(self, content_dim: int = 1024, prefix_dim: int = 1024, d_out: int | None = None,
                 num_heads: int = 16, dropout: float = 0.2, duration_grad_scale: float = 0.1,
                 duration_predictor: DurationPredictor | None = None):
        super().__init__()
        d_out = content_dim if d_out is None else d_out
        self.duration_grad_scale = duration_grad_scale
        self.attn = nn.MultiheadAttention(content_dim, num_heads, dropout=dropout, kdim=prefix_dim,
                                          vdim=prefix_dim, batch_first=True)
        self.duration_predictor = duration_predictor or DurationPredictor(content_dim)
        self.global_duration_mlp = nn.Sequential(nn.Linear(content_dim, content_dim), nn.ReLU(),
                                                 nn.Dropout(dropout), nn.Linear(content_dim, 1))
        self.norm = nn.LayerNorm(content_dim)
        self.content_proj = nn.Conv1d(content_dim, d_out, 1)

    def forward(self, content: Tensor, content_mask: Tensor, instruction: Tensor,
                instruction_mask: Tensor) -> AdapterOutput:
        """content [B, L, Dc], content_mask [B, L] bool, instruction [B, Li, Di],
        instruction_mask [B, Li] bool -> AdapterOutput."""
        m = content_mask.to(content.dtype)[..., None]
        attended, _ = self.attn(content, instruction, instruction, need_weights=False,
                                key_padding_mask=~instruction_mask.bool())
        x = self.norm(attended * m + content)
        s = self.duration_grad_scale
        x_d = x * s + x.detach() * (1 - s)  # duration losses reach the adapter scaled by s
        pooled = (x_d * m).sum(1) / m.sum(1)
        return AdapterOutput(
            content=self.content_proj(x.transpose(1, 2)).transpose(1, 2),
            global_duration=self.global_duration_mlp(pooled).squeeze(-1),
            local_duration=self.duration_predictor(x_d, content_mask))


# --- duration coding ------------------------------------------------------------------------

def local_duration_target(seconds: Tensor, frame_resolution: float = 0.005, offset: float = 1.0) -> Tensor:
    """Per-token training target ``log(round(seconds / frame_resolution) + offset)``, [B, L]."""
    return torch.log(torch.round(seconds / frame_resolution) + offset)


def global_duration_target(latent_lengths: Tensor, latent_rate: float, offset: float = 1.0) -> Tensor:
    """Clip training target ``log(frames / latent_rate + offset)``, [B]."""
    return torch.log(latent_lengths.float() / latent_rate + offset)


def decode_local_durations(log_pred: Tensor, mask: Tensor, latent_rate: float,
                           frame_resolution: float = 0.005, offset: float = 1.0) -> Tensor:
    """Log predictions [B, L] -> latent frames per token [B, L] (float, integral values).

    ``round((ceil(exp(pred) * mask) - offset) * frame_resolution * latent_rate)``, as the
    reference (masked tokens give 0).
    """
    steps = torch.ceil(torch.exp(log_pred.float()) * mask) - offset
    return torch.round(steps * frame_resolution * latent_rate)


def decode_global_duration(log_pred: Tensor, local_frames: Tensor, is_time_aligned: Tensor,
                           latent_rate: float, offset: float = 1.0) -> Tensor:
    """Clip length in latent frames [B] (long): ``round((exp(pred) - offset) * latent_rate)``
    for non-time-aligned items, the sum of the local frames for time-aligned ones."""
    frames = torch.round((torch.exp(log_pred.float()) - offset) * latent_rate)
    return torch.where(is_time_aligned, local_frames.sum(1), frames).long()


# --- expansion --------------------------------------------------------------------------------

def lengths_to_mask(lengths: Tensor, max_length: int | None = None) -> Tensor:
    """lengths [B] -> bool mask [B, max_length] (max_length defaults to the longest)."""
    lengths = lengths.long()
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def alignment_path(frames: Tensor, content_mask: Tensor, num_frames: int) -> Tensor:
    """Monotonic hard alignment [B, L, T]: token l covers frames [cum_{l-1}, cum_l).

    frames [B, L] latent frames per token, content_mask [B, L] bool. Frames past
    ``num_frames`` are cut (the reference's trim); masked tokens get empty rows.
    """
    cum = torch.cumsum(frames.long(), dim=1)
    start = cum - frames.long()
    t = torch.arange(num_frames, device=frames.device)[None, None, :]
    path = (t >= start[..., None]) & (t < cum[..., None])
    return path & content_mask.bool()[..., None]


def expand_to_frames(content: Tensor, content_mask: Tensor, frames: Tensor, num_frames: int) -> Tensor:
    """content [B, L, D] -> time-aligned content [B, T, D] (= path^T @ content, zero past the end)."""
    path = alignment_path(frames, content_mask, num_frames)
    return torch.matmul(path.transpose(1, 2).to(content.dtype), content)

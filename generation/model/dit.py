"""LayerFusion DiT backbone of UniFlow-Audio / Dasheng-AudioGen (``LayerFusionAudioDiT``).

A U-shaped stack of adaLN DiT blocks over latent frames ``[B, C, T]``: self-attention with
q/k LayerNorm and shared rotary positions, a time-aligned context added in every block,
ungated cross-attention to a token context, and a GEGLU MLP. Module names follow the official
state-dict layout (the ``mispeech/Dasheng-AudioGen`` remote code on the Hugging Face Hub, ``dit.py``) so official weights load strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

TIME_FREQ_DIM = 256


def timestep_embedding(timesteps: Tensor, dim: int = TIME_FREQ_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t f_k), sin(t f_k)]``, ``f_k = max_period^(-k/(dim/2))``.

    timesteps [B] (float, ``1000 * sigma``) -> [B, dim] float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rotate_half(x: Tensor) -> Tensor:
    """[..., 2h] -> [..., 2h]: (x1, x2) -> (-x2, x1)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary positions 0..L-1 shared by q and k (rotate-half layout, cos/sin in fp32).

    ``inv_freq`` [head_dim/2] = 10000^(-2i/head_dim) is a persistent buffer: the official
    checkpoint stores it.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def tables(self, length: int) -> tuple[Tensor, Tensor]:
        """cos, sin [L, hd] fp32 for positions 0..L-1."""
        pos = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.float())
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, q: Tensor, k: Tensor, tables: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """q, k [B, H, L, hd] -> rotated q, k (same dtype); ``tables``: :meth:`tables` of L."""
        cos, sin = tables if tables is not None else self.tables(q.shape[-2])

        def rotate(x: Tensor) -> Tensor:
            xf = x.float()
            return (xf * cos + rotate_half(xf) * sin).type_as(x)

        return rotate(q), rotate(k)


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v, per-head q/k LayerNorm and optional RoPE.

    Self-attention when ``context`` is None (``rope=True``: RoPE after the q/k norms);
    cross-attention otherwise (no RoPE). ``key_mask`` [B, Lk] bool marks valid keys.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None, rope: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        context_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.norm_q = nn.LayerNorm(head_dim)
        self.norm_k = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(dim, dim)
        self.rotary = RotaryEmbedding(head_dim) if rope else None

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """source [B, Lk, Dc] -> normed keys and values, each [B, H, Lk, hd]."""
        return self.norm_k(self._heads(self.to_k(source))), self._heads(self.to_v(source))

    def forward(self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None,
                rope: tuple[Tensor, Tensor] | None = None, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x [B, Lq, D], context [B, Lk, Dc] or None, key_mask [B, Lk] bool -> [B, Lq, D].

        ``kv``: :meth:`keys_values` of the context, when the caller computed them already;
        ``rope``: the rotary tables of Lq (self-attention)."""
        q = self.norm_q(self._heads(self.to_q(x)))
        k, v = kv if kv is not None else self.keys_values(x if context is None else context)
        if self.rotary is not None:
            q, k = self.rotary(q, k, rope)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, n, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    """``proj`` Linear(D, 2H) split into [a | b] -> a * GELU(b) (exact GELU)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(b)


class FeedForward(nn.Module):
    """GEGLU MLP: ``net.0`` GEGLU(D -> mult*D), ``net.1`` dropout (0), ``net.2`` Linear(mult*D, D)."""

    def __init__(self, dim: int, mult: float = 4.0):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AdaLN(nn.Module):
    """Per-block ``time_ada`` Linear(D, 6D) on the time token -> six [B, 1, D] modulations."""

    def __init__(self, dim: int):
        super().__init__()
        self.time_ada = nn.Linear(dim, 6 * dim)

    def forward(self, time_token: Tensor) -> tuple[Tensor, ...]:
        """time_token [B, D] -> (shift1, scale1, gate1, shift2, scale2, gate2), each [B, 1, D]."""
        return self.time_ada(time_token).view(time_token.shape[0], 6, -1).chunk(6, dim=1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


@dataclass
class BlockConditioning:
    """A block's terms that depend on the conditioning alone: the projected time-aligned context
    ``ta`` [B, T, D] and the cross-attention ``keys`` / ``values`` [B, H, L, hd]."""

    ta: Tensor
    keys: Tensor
    values: Tensor


@dataclass
class PreparedConditioning:
    """What every backbone call of one generation shares (:meth:`LayerFusionAudioDiT.prepare`):
    the masks (None when all valid), the rotary tables of T and each block's conditioning."""

    x_mask: Tensor | None
    context_mask: Tensor | None
    rope: tuple[Tensor, Tensor]
    blocks: list[BlockConditioning]


class LayerFusionDiTBlock(nn.Module):
    """One DiT block; out-blocks (``skip=True``) first fuse the U-Net long skip.

    Order: [skip fusion] -> x += tanh(1-g1) * attn(adaLN(x)) -> x += proj(norm(c_ta))
    -> x += cross_attn(norm2(x), norm_context(ctx)) -> x += (1-g2) * mlp(adaLN(x)).
    ``gradient_checkpointing`` (per block) is read by the backbone.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ta_context_dim: int, skip: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, rope=True)
        self.cross_attn = Attention(dim, num_heads, context_dim=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)
        self.adaln = AdaLN(dim)
        if skip:
            self.skip_norm = nn.LayerNorm(2 * dim)
            self.skip_linear = nn.Linear(2 * dim, dim)
        else:
            self.skip_norm = self.skip_linear = None
        self.ta_context_projection = nn.Linear(ta_context_dim, dim, bias=False)
        self.ta_context_norm = nn.LayerNorm(ta_context_dim)
        self.gradient_checkpointing = False

    def condition(self, ta_context: Tensor | None, context: Tensor | None) -> BlockConditioning:
        """ta_context [B, T, Dta], context [B, L, D] (embedded) -> this block's conditioning."""
        keys, values = self.cross_attn.keys_values(self.norm_context(context))
        return BlockConditioning(self.ta_context_projection(self.ta_context_norm(ta_context)), keys, values)

    def forward(self, x: Tensor, time_token: Tensor, ta_context: Tensor | None, context: Tensor | None,
                x_mask: Tensor | None, context_mask: Tensor | None, skip: Tensor | None = None,
                rope: tuple[Tensor, Tensor] | None = None, conditioning: BlockConditioning | None = None) -> Tensor:
        """x [B, T, D], time_token [B, D], ta_context [B, T, Dta], context [B, L, D] -> [B, T, D]
        (``rope``: the rotary tables of T; ``conditioning``: :meth:`condition` of the contexts,
        when prepared once for many calls)."""
        if conditioning is None:
            conditioning = self.condition(ta_context, context)
        if self.skip_linear is not None:
            x = self.skip_linear(self.skip_norm(torch.cat([x, skip], dim=-1)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(time_token)
        attended = self.attn(modulate(self.norm1(x), shift1, scale1), key_mask=x_mask, rope=rope)
        x = x + torch.tanh(1 - gate1) * attended
        x = x + conditioning.ta
        x = x + self.cross_attn(self.norm2(x), key_mask=context_mask, kv=(conditioning.keys, conditioning.values))
        return x + (1 - gate2) * self.mlp(modulate(self.norm3(x), shift2, scale2))


class PatchEmbed(nn.Module):
    """``proj`` Conv1d(C, D, k=1): [B, C, T] -> [B, T, D]."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv1d(in_chans, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """``mlp`` = Linear(256, D), SiLU, Linear(D, D) on the sinusoidal embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timesteps: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(timesteps).to(self.mlp[0].weight.dtype))


class FinalBlock(nn.Module):
    """adaLN(norm) -> ``linear`` Linear(D, C) -> [B, C, T] -> ``final_layer`` Conv1d(C, C, 3, pad 1)."""

    def __init__(self, dim: int, out_chans: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, out_chans)
        self.final_layer = nn.Conv1d(out_chans, out_chans, 3, padding=1)

    def forward(self, x: Tensor, time_ada: Tensor) -> Tensor:
        """x [B, T, D], time_ada [B, 2D] -> [B, C, T]."""
        shift, scale = time_ada.view(x.shape[0], 2, -1).chunk(2, dim=1)
        x = self.linear(modulate(self.norm(x), shift, scale))
        return self.final_layer(x.transpose(1, 2))


class LayerFusionAudioDiT(nn.Module):
    """The backbone: ``depth // 2`` in-blocks, a mid block and ``depth // 2`` out-blocks.

    Odd depth gives ``depth`` blocks, even depth ``depth + 1`` (32 -> 33), as in the reference.
    There is no absolute positional encoding; self-attention carries RoPE.
    """

    def __init__(self, in_chans: int = 1280, out_chans: int | None = None, embed_dim: int = 1536,
                 depth: int = 32, num_heads: int = 24, mlp_ratio: float = 4.0,
                 context_dim: int = 1024, ta_context_dim: int = 1024):
        super().__init__()
        out_chans = in_chans if out_chans is None else out_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.time_embed = TimestepEmbedder(embed_dim)
        self.time_ada_final = nn.Linear(embed_dim, 2 * embed_dim)
        self.context_embed = nn.Sequential(nn.Linear(context_dim, embed_dim), nn.SiLU(),
                                           nn.Linear(embed_dim, embed_dim))

        def block(skip: bool) -> LayerFusionDiTBlock:
            return LayerFusionDiTBlock(embed_dim, num_heads, mlp_ratio, ta_context_dim, skip=skip)

        self.in_blocks = nn.ModuleList([block(False) for _ in range(depth // 2)])
        self.mid_block = block(False)
        self.out_blocks = nn.ModuleList([block(True) for _ in range(depth // 2)])
        self.final_block = FinalBlock(embed_dim, out_chans)
        self.initialize_weights()

    def blocks(self) -> list[LayerFusionDiTBlock]:
        return [*self.in_blocks, self.mid_block, *self.out_blocks]

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Reference init: xavier-uniform Linear / patch / final conv, zero biases; zero adaLN
        (``time_ada``, ``time_ada_final``) and zero cross-attention output projections."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for conv in (self.patch_embed.proj, self.final_block.final_layer):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        zeroed = [self.time_ada_final]
        for blk in self.blocks():
            zeroed += [blk.adaln.time_ada, blk.cross_attn.proj]
        for linear in zeroed:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    @staticmethod
    def _run(block: LayerFusionDiTBlock, *args: Tensor | None) -> Tensor:
        if block.gradient_checkpointing and torch.is_grad_enabled():
            fn = getattr(block, "_gradient_checkpointing_func", None)  # set by diffusers' enable_...
            if fn is not None:
                return fn(block, *args)
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def prepare(self, time_aligned_context: Tensor, context: Tensor, x_mask: Tensor | None = None,
                context_mask: Tensor | None = None) -> PreparedConditioning:
        """Everything of a call that depends on the conditioning alone, for calls that share it
        (the sampling steps): embedded context, each block's projected time-aligned context and
        cross-attention keys / values, rotary tables, masks (one host sync, here)."""
        ctx = self.context_embed(context)
        return PreparedConditioning(
            # all-valid masks are dropped so SDPA can pick its fastest (flash) kernel
            None if x_mask is None or bool(x_mask.all()) else x_mask,
            None if context_mask is None or bool(context_mask.all()) else context_mask,
            # every block stores the same inv_freq (10000^(-2i/hd)): one table serves all
            self.mid_block.attn.rotary.tables(time_aligned_context.shape[1]),
            [blk.condition(time_aligned_context, ctx) for blk in self.blocks()])

    def forward(self, x: Tensor, timesteps: Tensor, time_aligned_context: Tensor | None = None,
                context: Tensor | None = None, x_mask: Tensor | None = None, context_mask: Tensor | None = None,
                prepared: PreparedConditioning | None = None) -> Tensor:
        """Predict the flow velocity.

        x [B, C, T] noisy latents; timesteps [B] or a scalar, ``1000 * sigma`` as float (never
        truncated here: the official sampler's integer cast is reproduced by the sampler);
        time_aligned_context [B, T, Dta]; context [B, L, Dc]; x_mask [B, T] / context_mask
        [B, L] bool (True = valid). Or, instead of the four, ``prepared`` (:meth:`prepare`).
        Returns [B, C, T]. Without ``prepared`` each block computes its conditioning itself,
        inside its gradient checkpoint.
        """
        b, _, t = x.shape
        if prepared is None:
            if time_aligned_context.shape[:2] != (b, t):
                raise ValueError(f"time_aligned_context {tuple(time_aligned_context.shape)} does not "
                                 f"match latents [B={b}, T={t}]")
            ctx = self.context_embed(context)
            x_mask = None if x_mask is None or bool(x_mask.all()) else x_mask
            context_mask = None if context_mask is None or bool(context_mask.all()) else context_mask
            rope = self.mid_block.attn.rotary.tables(t)
            conditioning = [None] * len(self.blocks())
        else:
            ctx = time_aligned_context = None
            x_mask, context_mask, rope = prepared.x_mask, prepared.context_mask, prepared.rope
            conditioning = prepared.blocks
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(b)
        h = self.patch_embed(x)
        time_token = F.silu(self.time_embed(timesteps.to(x.device)))
        inputs = (time_token, time_aligned_context, ctx, x_mask, context_mask)
        half = len(self.in_blocks)
        skips = []
        for blk, cond in zip(self.in_blocks, conditioning[:half]):
            h = self._run(blk, h, *inputs, None, rope, cond)
            skips.append(h)
        h = self._run(self.mid_block, h, *inputs, None, rope, conditioning[half])
        for blk, cond in zip(self.out_blocks, conditioning[half + 1:]):
            h = self._run(blk, h, *inputs, skips.pop(), rope, cond)
        return self.final_block(h, self.time_ada_final(time_token))

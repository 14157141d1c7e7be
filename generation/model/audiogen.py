"""``AudioGenModel``: the trainable generation model of Dasheng-AudioGen / UniFlow-Audio.

Holds the DiT ``backbone``, the ``content_adapter``, the text projection
``content_encoder.text_encoder.proj``, the learned dummy embeddings and the fixed instruction
buffers, under the official state-dict names, so a local copy of ``mispeech/Dasheng-AudioGen``
(``config.json`` + ``model.safetensors``) loads strictly. The frozen text encoder and the
audio tokenizer live outside (``text_encoders``, ``tokenizer``).

Task routing (UniFlow-Audio, github.com/wsntxxn/UniFlow-Audio, ``models/content_adapter.py``): non-time-aligned tasks (text-to-audio/music)
cross-attend to the adapted content and get ``dummy_ta_embed`` on every frame; time-aligned
tasks (speech enhancement) get the content expanded to latent rate and a one-token
``dummy_nta_embed`` context.

Presets (``AudioGenModel.from_preset``): ``audiogen`` is the official 1536-wide, depth-32
(33-block) model; ``paper`` is depth 11 at width 1536 / 24 heads: the seed paper prints 1532,
which no head count divides, so the official width 1536 is used (748,488,194 trainable
parameters, backbone 736,409,088; ``audiogen``: 2,185,498,626); ``small`` is 768 / 12 heads /
depth 11 on the same 1280-d latents and 1024-d content; ``tiny`` is for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from dashflow.generation.model.content_adapter import (
    AdapterOutput,
    CrossAttentionAdapter,
    DurationPredictor,
    decode_global_duration,
    decode_local_durations,
    expand_to_frames,
    lengths_to_mask,
)
from dashflow.generation.model.dit import LayerFusionAudioDiT, PreparedConditioning
from diffusers import ConfigMixin
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from dashflow.errors import DashflowError
from dashflow.models import SafetensorsModelMixin

# Official config fields whose only implemented value is the released one.
_FIXED_OPTIONS = {
    "dit_patch_size": 1, "dit_input_type": "1d", "dit_qk_norm": "layernorm",
    "dit_norm_layer": "layernorm", "dit_act_layer": "geglu", "dit_context_norm": True,
    "dit_time_fusion": "ada", "dit_ta_context_fusion": "add", "dit_ta_context_norm": True,
    "dit_context_fusion": "cross", "dit_context_pe_method": "none", "dit_pe_method": "none",
    "dit_rope_mode": "shared",
}

PRESETS: dict[str, dict] = {
    "audiogen": {},
    "paper": {"dit_depth": 11},
    "small": {"dit_embed_dim": 768, "dit_num_heads": 12, "dit_depth": 11},
    "tiny": {"latent_dim": 16, "dit_in_chans": None, "dit_out_chans": None, "content_dim": 32,
             "text_embed_dim": 32, "task_instruction_dim": 32, "instruction_seq_len": 4,
             "dit_ta_context_dim": None, "dit_context_dim": None, "dit_embed_dim": 64,
             "dit_depth": 3, "dit_num_heads": 4, "adapter_num_heads": 4,
             "duration_predictor_filter_channels": 32},
}


@dataclass
class Conditioning:
    """Backbone conditioning for one batch.

    context [B, L, Dc] + context_mask [B, L] (cross-attention), time_aligned_context [B, T, Dc],
    latent_mask [B, T] (True = frame inside the clip).
    """

    context: Tensor
    context_mask: Tensor
    time_aligned_context: Tensor
    latent_mask: Tensor

    @property
    def latent_lengths(self) -> Tensor:
        return self.latent_mask.sum(1)

    def drop(self, which: Tensor) -> Conditioning:
        """Zero ``context`` and ``time_aligned_context`` of the items where ``which`` [B] is True
        (the classifier-free-guidance null condition); masks are kept."""
        keep = (~which.bool()).to(self.context.dtype)[:, None, None]
        return Conditioning(self.context * keep, self.context_mask,
                            self.time_aligned_context * keep, self.latent_mask)

    def null(self) -> Conditioning:
        return self.drop(torch.ones(self.context.shape[0], dtype=torch.bool, device=self.context.device))

    def repeat(self, n: int) -> Conditioning:
        """The batch tiled ``n`` times (``[self; self; ...]``, item i of copy j at j * B + i)."""
        return Conditioning(*(t.repeat(n, *[1] * (t.dim() - 1)) for t in (
            self.context, self.context_mask, self.time_aligned_context, self.latent_mask)))

    def cat(self, other: Conditioning) -> Conditioning:
        """Stack two conditionings along the batch (``[self; other]``)."""
        return Conditioning(*(torch.cat([a, b]) for a, b in zip(
            (self.context, self.context_mask, self.time_aligned_context, self.latent_mask),
            (other.context, other.context_mask, other.time_aligned_context, other.latent_mask))))


@dataclass
class AudioGenOutput(BaseOutput):
    """velocity [B, C, T]; global_duration [B] and local_duration [B, L] (log-domain predictions)."""

    velocity: Tensor
    global_duration: Tensor
    local_duration: Tensor


def time_aligned_flags(is_time_aligned: Tensor | None, content: Tensor, content_kind: str) -> Tensor:
    """[B] bool: the given flags, else True for ``audio`` content (SE) and False for ``text``."""
    if is_time_aligned is None:
        return torch.full((content.shape[0],), content_kind == "audio", device=content.device)
    return is_time_aligned.to(content.device).bool()


class _Projection(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)


class ContentEncoder(nn.Module):
    """Trainable heads of the content encoders: ``text_encoder.proj`` (text-encoder width ->
    content_dim) and, only when configured, ``audio_encoder.proj`` (latent width -> content_dim,
    our speech-enhancement adaptation; absent from the official model). Under DDP a model
    with both heads needs ``find_unused_parameters`` when a batch uses only one of them."""

    def __init__(self, text_dim: int, content_dim: int, audio_dim: int | None = None):
        super().__init__()
        self.text_encoder = _Projection(text_dim, content_dim)
        self.audio_encoder = _Projection(audio_dim, content_dim) if audio_dim else None


class AudioGenModel(SafetensorsModelMixin, ConfigMixin, PeftAdapterMixin):
    """DiT + content adapter + content projections + dummy embeddings + instruction buffers.

    Config fields carry the official ``config.json`` names; ``text_encoder_name``,
    ``tokenizer_name``, ``tokenizer_max_length`` are read by pipelines, ``dit_img_size`` and
    ``dit_ada_sola_*`` are kept only so the official file loads (unused with ``ada`` and no
    absolute positions). Ours: ``text_embed_dim`` (text-encoder width, default content_dim),
    ``audio_content_dim`` (adds ``content_encoder.audio_encoder`` for SE). ``dit_in_chans`` /
    ``dit_out_chans`` default to ``latent_dim``; ``dit_context_dim`` / ``dit_ta_context_dim``
    to ``content_dim``.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, text_encoder_name: str = "google/flan-t5-large",
                 tokenizer_name: str = "mispeech/dashengtokenizer", use_zero_instruction: bool = False,
                 instruction_seq_len: int = 14, task_instruction_dim: int = 1024,
                 sample_rate: int = 16000, downsampling_ratio: int = 640, latent_dim: int = 1280,
                 content_dim: int = 1024, frame_resolution: float = 0.005, duration_offset: float = 1.0,
                 tokenizer_max_length: int = 512, dit_img_size: int = 1000, dit_patch_size: int = 1,
                 dit_in_chans: int | None = 1280, dit_out_chans: int | None = 1280,
                 dit_input_type: str = "1d", dit_embed_dim: int = 1536, dit_depth: int = 32,
                 dit_num_heads: int = 24, dit_mlp_ratio: float = 4.0, dit_qk_norm: str = "layernorm",
                 dit_norm_layer: str = "layernorm", dit_act_layer: str = "geglu",
                 dit_context_norm: bool = True, dit_time_fusion: str = "ada", dit_ada_sola_rank: int = 32,
                 dit_ada_sola_alpha: int = 32, dit_ta_context_dim: int | None = 1024,
                 dit_ta_context_fusion: str = "add", dit_ta_context_norm: bool = True,
                 dit_context_dim: int | None = 1024, dit_context_fusion: str = "cross",
                 dit_context_pe_method: str = "none", dit_pe_method: str = "none",
                 dit_rope_mode: str = "shared", adapter_num_heads: int = 16, adapter_dropout: float = 0.2,
                 adapter_duration_grad_scale: float = 0.1, duration_predictor_filter_channels: int = 512,
                 duration_predictor_n_layers: int = 5, duration_predictor_kernel_size: int = 3,
                 duration_predictor_p_dropout: float = 0.5, special_tokens: list[str] | None = None,
                 train_special_tokens: bool = False, text_embed_dim: int | None = None,
                 audio_content_dim: int | None = None):
        super().__init__()
        given = dict(locals())
        for name, value in _FIXED_OPTIONS.items():
            if given[name] != value:
                raise DashflowError(f"config {name}={given[name]!r} is not implemented (only {value!r})")
        for name, value, want in (("dit_in_chans", dit_in_chans, latent_dim),
                                  ("dit_out_chans", dit_out_chans, latent_dim),
                                  ("dit_context_dim", dit_context_dim, content_dim),
                                  ("dit_ta_context_dim", dit_ta_context_dim, content_dim)):
            if value is not None and value != want:
                raise DashflowError(f"config {name}={value} must equal {want}")
        if special_tokens:
            raise DashflowError("config special_tokens is not supported (the released model has none)")
        if dit_embed_dim % dit_num_heads:
            raise DashflowError(f"config dit_embed_dim={dit_embed_dim} is not divisible by "
                                f"dit_num_heads={dit_num_heads}")

        self.dummy_param = nn.Parameter(torch.empty(0), requires_grad=False)  # device anchor
        self.dummy_nta_embed = nn.Parameter(torch.zeros(content_dim))
        self.dummy_ta_embed = nn.Parameter(torch.zeros(content_dim))
        self.register_buffer("instruction_embedding",
                             torch.zeros(1, instruction_seq_len, task_instruction_dim))
        self.register_buffer("instruction_lengths",
                             torch.full((1,), instruction_seq_len, dtype=torch.long))
        self.backbone = LayerFusionAudioDiT(
            in_chans=latent_dim, embed_dim=dit_embed_dim, depth=dit_depth, num_heads=dit_num_heads,
            mlp_ratio=dit_mlp_ratio, context_dim=content_dim, ta_context_dim=content_dim)
        self.content_adapter = CrossAttentionAdapter(
            content_dim=content_dim, prefix_dim=task_instruction_dim, num_heads=adapter_num_heads,
            dropout=adapter_dropout, duration_grad_scale=adapter_duration_grad_scale,
            duration_predictor=DurationPredictor(
                content_dim, duration_predictor_filter_channels, duration_predictor_n_layers,
                duration_predictor_kernel_size, duration_predictor_p_dropout))
        self.content_encoder = ContentEncoder(text_embed_dim or content_dim, content_dim, audio_content_dim)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> AudioGenModel:
        """Build a preset (``audiogen``, ``paper``, ``small``, ``tiny``) with config overrides."""
        if name not in PRESETS:
            raise DashflowError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (25.0 for 16 kHz / 640)."""
        return self.config.sample_rate / self.config.downsampling_ratio

    # --- content ------------------------------------------------------------------------

    def embed_content(self, content: Tensor, content_kind: str = "text") -> Tensor:
        """Project encoder output [B, L, D_in] to content_dim: ``text`` (text-encoder states) or
        ``audio`` (latent frames [B, T, latent_dim], needs ``audio_content_dim``)."""
        if content_kind == "text":
            return self.content_encoder.text_encoder.proj(content)
        if content_kind == "audio":
            if self.content_encoder.audio_encoder is None:
                raise DashflowError("audio content needs a model built with audio_content_dim")
            return self.content_encoder.audio_encoder.proj(content)
        raise DashflowError(f"content_kind must be 'text' or 'audio', not {content_kind!r}")

    def default_instruction(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The stored instruction (zeros of length 1 with ``use_zero_instruction``) broadcast to
        the batch: embeddings [B, Li, Di], mask [B, Li]."""
        if self.config.use_zero_instruction:
            emb = self.instruction_embedding.new_zeros(1, 1, self.config.task_instruction_dim)
            lengths = torch.ones(1, dtype=torch.long, device=emb.device)
        else:
            emb, lengths = self.instruction_embedding, self.instruction_lengths
        mask = lengths_to_mask(lengths, emb.shape[1])
        return emb.expand(batch_size, -1, -1), mask.expand(batch_size, -1)

    @torch.no_grad()
    def set_instruction(self, embeddings: Tensor) -> None:
        """Store a fixed instruction (e.g. text-encoder states of a task phrase), [Li, Di]."""
        length, dim = embeddings.shape
        if length > self.config.instruction_seq_len or dim != self.config.task_instruction_dim:
            raise DashflowError(f"instruction [{length}, {dim}] does not fit the buffer "
                                f"{list(self.instruction_embedding.shape[1:])}")
        self.instruction_embedding.zero_()[0, :length] = embeddings
        self.instruction_lengths.fill_(length)

    def adapt(self, content: Tensor, content_mask: Tensor, content_kind: str = "text",
              instruction: Tensor | None = None, instruction_mask: Tensor | None = None) -> AdapterOutput:
        """Project the content and run the adapter against the (default) instruction."""
        if instruction is None:
            instruction, instruction_mask = self.default_instruction(content.shape[0])
        return self.content_adapter(self.embed_content(content, content_kind), content_mask.bool(),
                                    instruction.to(content.dtype), instruction_mask.bool())

    def route(self, content: Tensor, content_mask: Tensor, is_time_aligned: Tensor,
              frames: Tensor | None, latent_mask: Tensor) -> Conditioning:
        """Task routing of the adapted content [B, L, Dc].

        Time-aligned items: content expanded by ``frames`` [B, L] (latent frames per token) as
        time-aligned context, ``dummy_nta_embed`` as a one-token context. Others: the content as
        context, ``dummy_ta_embed`` on every frame. The context is cut after its last valid token.
        """
        b, t = latent_mask.shape
        ta = is_time_aligned.bool()
        content_mask = content_mask.bool()
        dummy_ta = self.dummy_ta_embed.to(content.dtype).expand(b, t, -1)
        if bool(ta.any()):
            if frames is None:
                raise DashflowError("time-aligned items need per-token durations")
            expanded = expand_to_frames(content, content_mask, frames, t)
            ta_context = torch.where(ta[:, None, None], expanded, dummy_ta)
        else:
            ta_context = dummy_ta
        context = torch.where(ta[:, None, None], self.dummy_nta_embed.to(content.dtype), content)
        first_only = torch.arange(content.shape[1], device=content.device)[None, :] < 1
        context_mask = torch.where(ta[:, None], content_mask & first_only, content_mask)
        valid = context_mask.any(0).nonzero()
        keep = int(valid.max()) + 1 if valid.numel() else 1
        return Conditioning(context[:, :keep], context_mask[:, :keep], ta_context, latent_mask.bool())

    def seconds_to_frames(self, seconds: Tensor, content_mask: Tensor) -> Tensor:
        """Per-token durations in seconds [B, L] -> latent frames ``round(s * rate)``, masked."""
        return torch.round(seconds.float() * self.latent_rate) * content_mask

    @torch.no_grad()
    def condition(self, content: Tensor, content_mask: Tensor, *, content_kind: str = "text",
                  is_time_aligned: Tensor | None = None, instruction: Tensor | None = None,
                  instruction_mask: Tensor | None = None, durations: Tensor | None = None,
                  latent_lengths: Tensor | None = None, adapted: AdapterOutput | None = None) -> Conditioning:
        """Inference conditioning.

        content [B, L, D_in] (text-encoder states, or latent frames for ``audio``),
        content_mask [B, L]; durations [B, L] seconds per token (default: decoded local
        predictions); latent_lengths [B] or one int, frames (default: decoded global prediction, or the
        sum of local frames for time-aligned items; at least 1). ``adapted``: this content's
        :meth:`adapt` output when the caller already has it (the adapter then does not run again).
        """
        ta = time_aligned_flags(is_time_aligned, content, content_kind)
        out = adapted if adapted is not None else self.adapt(content, content_mask, content_kind, instruction,
                                                             instruction_mask)
        mask = content_mask.bool()
        if durations is None:
            frames = decode_local_durations(out.local_duration, mask, self.latent_rate,
                                            self.config.frame_resolution, self.config.duration_offset)
        else:
            frames = self.seconds_to_frames(durations, mask)
        if latent_lengths is None:
            latent_lengths = decode_global_duration(out.global_duration, frames, ta, self.latent_rate,
                                                    self.config.duration_offset)
        lengths = torch.as_tensor(latent_lengths, device=content.device).long().expand(content.shape[0])
        latent_mask = lengths_to_mask(lengths.clamp(min=1))
        return self.route(out.content, mask, ta, frames, latent_mask)

    def forward(self, sample: Tensor, timesteps: Tensor, content: Tensor, content_mask: Tensor,
                latent_mask: Tensor, *, content_kind: str = "text", is_time_aligned: Tensor | None = None,
                durations: Tensor | None = None, instruction: Tensor | None = None,
                instruction_mask: Tensor | None = None, drop_condition: Tensor | None = None) -> AudioGenOutput:
        """Training forward: adapter, routing, CFG null condition, backbone.

        sample [B, C, T] noisy latents, timesteps [B] (``1000 * sigma``), content [B, L, D_in],
        content_mask [B, L], latent_mask [B, T], durations [B, L] seconds (time-aligned items),
        drop_condition [B] bool (zero context and time-aligned context, masks kept).
        """
        ta = time_aligned_flags(is_time_aligned, content, content_kind)
        out = self.adapt(content, content_mask, content_kind, instruction, instruction_mask)
        frames = None if durations is None else self.seconds_to_frames(durations, content_mask.bool())
        cond = self.route(out.content, content_mask, ta, frames, latent_mask)
        if drop_condition is not None:
            cond = cond.drop(drop_condition)
        velocity = self.velocity(sample, timesteps, cond)
        return AudioGenOutput(velocity=velocity, global_duration=out.global_duration,
                              local_duration=out.local_duration)

    def prepare(self, cond: Conditioning) -> PreparedConditioning:
        """The backbone's per-generation constants of ``cond`` (see :meth:`velocity`)."""
        return self.backbone.prepare(cond.time_aligned_context, cond.context, cond.latent_mask, cond.context_mask)

    def velocity(self, sample: Tensor, timesteps: Tensor, cond: Conditioning,
                 prepared: PreparedConditioning | None = None) -> Tensor:
        """Backbone call: sample [B, C, T], timesteps [B] or scalar -> velocity [B, C, T].
        ``prepared`` (:meth:`prepare` of ``cond``) skips what every sampling step shares."""
        if prepared is not None:
            return self.backbone(sample, timesteps, prepared=prepared)
        return self.backbone(sample, timesteps, cond.time_aligned_context, cond.context,
                             cond.latent_mask, cond.context_mask)

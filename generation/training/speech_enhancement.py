"""What the speech-enhancement recipe (``recipes/se.py``) needs beyond :mod:`dashflow.training`:
its config, the two enhancers and the loss of one micro-batch.

Model A (``model.kind=denoiser``): :class:`~dashflow.generation.model.denoiser.LatentDenoiser`,
MSE between enhanced and clean latents. Model B (``model.kind=flow``): the flow-matching DiT conditioned on
the noisy latents through the time-aligned path (one content frame per latent frame), trained
with the reference objective (CFG dropout 0.2, duration losses 0.1); it samples with CFG 1.0.
With ``flow.normalize_latents`` it works on per-channel normalised latents (the clean target and
the noisy content alike), as the text-to-audio and unified recipes do.
Both read batches of (noisy, clean) 16 kHz crops (:func:`dashflow.mixing.build_se_loader`:
on-the-fly mixing of clean speech with noise, or a paired manifest) and encode both with the
frozen tokenizer. Randomness is keyed by (seed, step, micro-batch position) as in the TTA recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.sampling.flow import FlowMatchingConfig, LatentNormalizer, check_config, masked_mse
from dashflow.generation.training.data import batch_latents
from dashflow.generation.training.text_to_audio import (
    ModelConfig,
    build_model,
    micro_batch_seeds,
)
from dashflow.text_encoders import load_text_encoder
from omegaconf import MISSING

from dashflow.codecs import LatentCodec
from dashflow.errors import DashflowError
from dashflow.mixing import MixingConfig, check_mixing
from dashflow.training import EMAConfig, OptimConfig, TrainConfig, check_training

KINDS = ("denoiser", "flow")
SE_INSTRUCTION = "Remove the background noise and reverberation, keep the speech."


@dataclass
class SEModelConfig:
    kind: str = "denoiser"           # denoiser (Model A, latent MSE) | flow (Model B, the DiT)
    preset: str = "paper"            # LatentDenoiser preset (paper | tiny) or AudioGenModel preset
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields over the preset
    init_from: str = ""              # a saved enhancer folder to fine-tune instead of a fresh preset
    tokenizer: str = MISSING         # codec folder or hub id (frozen; dashflow.codecs.load_codec)
    text_encoder: str = "minilm"     # flow only: encodes the instruction once (frozen, not kept)
    instruction: str = SE_INSTRUCTION  # flow only: the task phrase stored in the model
    gradient_checkpointing: bool = False  # flow only
    latent_normalizer: str = ""      # flow with flow.normalize_latents: a LatentNormalizer folder ("" fits one)
    normalizer_batches: int = 64     # training batches (clean latents) the statistics are fitted on


@dataclass
class SEDataConfig:
    train: str = MISSING             # clean-speech manifest (with data.noise), or a paired noisy/clean one
    noise: str = ""                  # noise manifest for on-the-fly mixing ("" = data.train is paired)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    max_seconds: float = 4.0         # crop length
    batch_size: int = 16             # clips per micro-batch per process
    num_workers: int = 4


@dataclass
class SEConfig:
    model: SEModelConfig = field(default_factory=SEModelConfig)
    data: SEDataConfig = field(default_factory=SEDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/se"))


def check_se_settings(cfg: SEConfig) -> None:
    """Raise one DashflowError line for settings the recipe cannot run with."""
    if cfg.model.kind not in KINDS:
        raise DashflowError(f"model.kind={cfg.model.kind!r}: use {' or '.join(KINDS)}")
    if cfg.model.kind == "flow":
        check_config(cfg.flow)
    elif cfg.flow.normalize_latents:
        raise DashflowError("flow.normalize_latents applies to model.kind=flow (the denoiser maps latents directly)")
    check_training(cfg.train, cfg.optim, {"data.batch_size": cfg.data.batch_size,
                                          "data.max_seconds": cfg.data.max_seconds})
    check_mixing(cfg.data.mixing)


def build_enhancer(cfg: SEModelConfig, tokenizer: LatentCodec) -> LatentDenoiser | AudioGenModel:
    """A fresh preset sized to the tokenizer (or ``init_from``), in training mode."""
    sizes = {"latent_dim": tokenizer.latent_dim, "sample_rate": tokenizer.sample_rate,
             "downsampling_ratio": tokenizer.samples_per_latent}
    if cfg.kind == "flow":
        encoder = load_text_encoder(cfg.text_encoder, device=tokenizer.device)
        overrides = {} if cfg.init_from else {"audio_content_dim": tokenizer.latent_dim, **cfg.overrides}
        model_cfg = ModelConfig(preset=cfg.preset, overrides=overrides, init_from=cfg.init_from,
                                tokenizer=cfg.tokenizer, text_encoder=cfg.text_encoder, instruction=cfg.instruction,
                                gradient_checkpointing=cfg.gradient_checkpointing)
        model = build_model(model_cfg, tokenizer, encoder)
        if model.content_encoder.audio_encoder is None:
            raise DashflowError(f"{cfg.init_from}: the model has no audio content encoder (audio_content_dim)")
        model.content_encoder.text_encoder.requires_grad_(False)  # unused: the content is audio (DDP)
        return model
    if cfg.init_from:
        if cfg.overrides:
            raise DashflowError("model.overrides apply to a preset; they cannot change model.init_from")
        model = LatentDenoiser.from_pretrained(cfg.init_from)
    else:
        model = LatentDenoiser.from_preset(cfg.preset, **{**sizes, **cfg.overrides})
    if model.config.latent_dim != tokenizer.latent_dim:
        raise DashflowError(f"the denoiser takes {model.config.latent_dim}-d latents, the tokenizer gives "
                            f"{tokenizer.latent_dim}-d")
    return model.train()


def se_micro_batch_loss(model: torch.nn.Module, micro: dict[str, Any], tokenizer: LatentCodec, kind: str,
                        flow: FlowMatchingConfig, seed: int, step: int, position: int, accelerator: Accelerator,
                        normalizer: LatentNormalizer | None = None) -> dict[str, torch.Tensor]:
    """Losses of one micro-batch (``audio`` = clean target [B, S], ``noisy`` [B, S], ``length``):
    ``loss`` (+ ``mse`` for the denoiser; ``flow``, ``local_duration``, ``global_duration`` for
    the DiT, on latents normalised by ``normalizer`` where given, the noisy content too).
    ``position`` = the micro-batch's index in the global batch of ``step``."""
    draws, dropout = micro_batch_seeds(seed, step, position)
    torch.manual_seed(dropout)
    clean, mask = batch_latents(micro, tokenizer)
    noisy, _ = batch_latents({"audio": micro["noisy"], "length": micro["length"]}, tokenizer)
    with accelerator.autocast():
        if kind == "denoiser":
            mse = masked_mse(model(noisy.transpose(1, 2), mask).transpose(1, 2), clean, mask)
            return {"loss": mse, "mse": mse}
        objective = FlowMatching(model, flow, normalizer)
        content = objective.to_model_space(noisy).transpose(1, 2)  # [B, T, C], the space the model generates in
        durations = mask.float() / accelerator.unwrap_model(model).latent_rate
        return objective.loss(clean, mask, content, mask, content_kind="audio", durations=durations,
                              generator=torch.Generator().manual_seed(draws))

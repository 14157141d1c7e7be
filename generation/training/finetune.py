"""What the fine-tuning recipe (``recipes/finetune.py``) needs: its config and the base pipeline's
parts, frozen (codec, text encoder, latent normalizer) or trained (the DiT, whole or through LoRA).

The base is any saved text-to-audio / text-to-music pipeline folder (the bundled demo, an export of
``recipes/tta.py`` or ``recipes/unified.py``, a local Dasheng-AudioGen folder). Captions are
formatted and the instruction chosen exactly as the base pipeline does at sampling time, and the
latents normalised with its normalizer, so the adapted model is sampled as the base one is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from dashflow.generation.pipelines.audio import AudioGenerationPipeline, load_pipeline
from dashflow.generation.pipelines.lora import LoraSettings, add_lora, check_settings
from dashflow.generation.sampling.flow import FlowMatchingConfig, check_config
from dashflow.generation.training.data import require_captions
from dashflow.generation.training.text_to_audio import Frozen, TextConditioner
from omegaconf import MISSING, OmegaConf

from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest
from dashflow.training import EMAConfig, OptimConfig, TrainConfig, check_training

MODES = ("lora", "full")


@dataclass
class FinetuneDataConfig:
    train: str = MISSING             # .jsonl manifest (audio + caption): dashflow prepare writes one
    replay: str = ""                 # .jsonl of what the base already makes (its training clips, or its own
                                     # generations), mixed in so that it keeps making them
    replay_fraction: float = 0.5     # share of the clips drawn that come from ``replay``
    latent_cache: str = ""           # dashflow cache-latents folder made with the base pipeline's codec
    text_cache: str = ""
    max_seconds: float = 10.0
    batch_size: int = 8
    num_workers: int = 2


@dataclass
class FinetuneConfig:
    base: str = MISSING              # the pipeline folder (or hub id) to adapt
    task: str = ""                   # tta | ttm ("" = the folder's own)
    mode: str = "lora"               # lora: train adapters only | full: train every DiT weight
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=50))
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(enabled=False))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/finetune", max_steps=1000,
                                                                  checkpoint_every=200))


def check_finetune_settings(cfg: FinetuneConfig) -> None:
    if cfg.mode not in MODES:
        raise DashflowError(f"mode={cfg.mode!r}: use {' or '.join(MODES)}")
    if cfg.mode == "lora":
        check_settings(cfg.lora)
        if cfg.ema.enabled:
            raise DashflowError("ema.enabled applies to mode=full (an adapter's weights are exported as trained)")
    if cfg.data.replay and not 0.0 < cfg.data.replay_fraction < 1.0:
        raise DashflowError(f"data.replay_fraction={cfg.data.replay_fraction}: use a share between 0 and 1")
    check_config(cfg.flow)
    check_training(cfg.train, cfg.optim, {"data.batch_size": cfg.data.batch_size,
                                          "data.max_seconds": cfg.data.max_seconds})


def training_records(data: FinetuneDataConfig, seed: int) -> list[dict]:
    """The clips to fine-tune on: ``data.train``'s, with ``data.replay``'s mixed in so that a
    ``replay_fraction`` share of the clips drawn are replay clips: the new clips repeated and a
    seeded sample of the replay clips taken to come as close as they allow (a replay manifest too
    small for the share is taken whole, once)."""
    new = require_captions(read_manifest(data.train), data.train)
    if not data.replay:
        return new
    replay = require_captions(read_manifest(data.replay), data.replay)
    both = {r["audio_id"] for r in new} & {r["audio_id"] for r in replay}
    if both:
        raise DashflowError(f"{data.replay}: clip {sorted(both)[0]!r} is also in {data.train} (audio ids must differ)")
    ratio = data.replay_fraction / (1.0 - data.replay_fraction)  # replay clips per new clip
    repeats = max(1, round(len(replay) / (ratio * len(new))))
    keep = min(len(replay), max(1, round(ratio * len(new) * repeats)))
    order = np.random.default_rng(seed).permutation(len(replay))[:keep]
    return new * repeats + [replay[i] for i in sorted(order)]


def load_base(cfg: FinetuneConfig, device: torch.device) -> tuple[AudioGenerationPipeline, Frozen]:
    """The base pipeline on ``device`` and its frozen parts (codec, text encoder, normalizer);
    ``cfg.flow.normalize_latents`` follows the base."""
    pipe = load_pipeline(cfg.base, task=cfg.task or None).to(device)
    pipe.tokenizer.requires_grad_(False)
    text = TextConditioner(pipe.text_encoder.encoder, cfg.data.text_cache)
    cfg.flow.normalize_latents = pipe.latent_normalizer is not None
    return pipe, Frozen(pipe.tokenizer.eval(), text, pipe.latent_normalizer)


def trainable_model(pipe: AudioGenerationPipeline, cfg: FinetuneConfig) -> torch.nn.Module:
    """The base DiT in training mode: with LoRA adapters (the only trainable weights) or whole."""
    model = pipe.transformer.train()
    if cfg.mode == "lora":
        model.requires_grad_(False)
        add_lora(model, lora_settings(cfg))
    return model


def lora_settings(cfg: FinetuneConfig) -> LoraSettings:
    return OmegaConf.to_object(cfg.lora) if OmegaConf.is_config(cfg.lora) else cfg.lora


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def format_batch(pipe: AudioGenerationPipeline, micro: dict[str, Any]) -> dict[str, Any]:
    """A micro-batch with its captions as the base pipeline formats prompts."""
    return {**micro, "caption": pipe.format_prompts(list(micro["caption"]))}

"""What the text-to-audio / text-to-music recipe needs beyond :mod:`dashflow.training` (``recipes/tta.py``).

The config schema (its ``train`` / ``optim`` / ``ema`` sections are :mod:`dashflow.training`'s),
the frozen parts (tokenizer, text encoder, optional latent normalizer), the DiT with its task
instruction, the loss of one micro-batch, fixed-prompt samples for the logs and the pipeline a
trained model is exported as.

Randomness is keyed by sample position, not by process: each micro-batch draws its noise
levels, noise, CFG dropout and module dropout from a seed of (``train.seed``, step, position of
the micro-batch in the global batch). A run on N processes with accumulation A therefore
computes the same numbers as one process with accumulation N x A (same global batch), and a
resumed run the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines.audio import AudioGenerationPipeline
from dashflow.generation.pipelines.tasks import get_task
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.sampling.flow import FlowMatchingConfig, LatentNormalizer, check_config
from dashflow.generation.training.data import batch_latents, has_caption
from dashflow.text_encoders import TextEmbeddingCache, TextEncoder, load_text_encoder
from diffusers import FlowMatchEulerDiscreteScheduler
from omegaconf import MISSING

from dashflow.audio import save_audio
from dashflow.codecs import LatentCodec, load_codec
from dashflow.errors import DashflowError
from dashflow.spectral import MelMagnitude
from dashflow.outputs import atomic_path
from dashflow.training import (
    EMAConfig,
    OptimConfig,
    TrainConfig,
    check_training,
    log_audio,
    log_spectrogram,
)

NORMALIZER_DIR = "latent_normalizer"


# ----------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    preset: str = "paper"            # AudioGenModel preset: audiogen | paper | small | tiny
    overrides: dict[str, Any] = field(default_factory=dict)  # AudioGenModel fields over the preset
    init_from: str = ""              # AudioGenModel folder to fine-tune instead of a fresh preset
    warm_start: str = ""             # AudioGenModel folder whose tensors of matching name and shape start the preset
    tokenizer: str = MISSING         # codec folder or hub id (frozen; e.g. the official DashengTokenizer)
    text_encoder: str = "flan-t5-large"  # minilm | flan-t5-large | a local model folder (frozen)
    instruction: str = ""            # task phrase stored as the adapter instruction ("" keeps the model's)
    gradient_checkpointing: bool = False
    latent_normalizer: str = ""      # with flow.normalize_latents: a LatentNormalizer folder ("" fits one)
    normalizer_batches: int = 64     # training batches the statistics are fitted on


@dataclass
class DataConfig:
    train: str = MISSING             # .jsonl manifest (audio + caption), or WebDataset shards
    latent_cache: str = ""           # dashflow cache-latents folder: read latents, skip the encoder
    text_cache: str = ""             # TextEmbeddingCache folder ("" encodes captions every step)
    prompt_prefix: str = ""          # prepended to every caption and sample prompt (e.g. "<|caption|> ")
    max_seconds: float = 10.0        # random crops of at most this long (in latent frames)
    batch_size: int = 24             # clips per micro-batch per process
    num_workers: int = 4


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["a dog barks", "rain falls on a tin roof"])
    every: int = 5000                # steps between logged samples (and the last step); 0 = none
    seconds: float = 10.0
    num_steps: int = 25
    guidance_scale: float = 5.0
    sway_coef: float = -1.0
    seed: int = 0


@dataclass
class Config:
    task: str = "tta"                # tta | ttm: the run's name and the pipeline class it is exported as
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/tta"))


def check_settings(cfg: Config) -> None:
    """Raise one DashflowError line for settings the recipe cannot run with."""
    get_task(cfg.task, text=True)
    check_config(cfg.flow)
    check_training(cfg.train, cfg.optim, {"data.batch_size": cfg.data.batch_size,
                                          "data.max_seconds": cfg.data.max_seconds,
                                          "sample.seconds": cfg.sample.seconds})
    if cfg.sample.every < 0:
        raise DashflowError(f"sample.every={cfg.sample.every}: must be 0 (no samples) or more")


# ----------------------------------------------------------------------------- models

class TextConditioner:
    """Captions -> frozen text-encoder states [B, L, D] + mask [B, L] (through the cache if any)."""

    def __init__(self, encoder: TextEncoder, cache_dir: str = "", prefix: str = ""):
        self.encoder, self.prefix = encoder, prefix
        self.cache = TextEmbeddingCache(cache_dir, encoder) if cache_dir else None

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [self.prefix + caption for caption in captions]
        return self.cache.get(prompts) if self.cache is not None else self.encoder.encode(prompts)


@dataclass
class Frozen:
    """What surrounds the trained DiT, all frozen: the tokenizer (latents in, audio out), the text
    conditioner and, with ``flow.normalize_latents``, the per-channel latent normalizer."""

    tokenizer: LatentCodec
    text: TextConditioner
    normalizer: LatentNormalizer | None = None


def load_frozen(cfg: Config, device: torch.device) -> Frozen:
    """The frozen tokenizer and text conditioner, in eval mode on ``device`` (no normalizer yet:
    see :func:`prepare_normalizer`)."""
    tokenizer = load_codec(cfg.model.tokenizer, device=device)
    encoder = load_text_encoder(cfg.model.text_encoder, device=device)
    return Frozen(tokenizer.eval(), TextConditioner(encoder, cfg.data.text_cache, cfg.data.prompt_prefix))


def prepare_normalizer(cfg: Any, tokenizer: LatentCodec, resumed: bool, is_main_process: bool,
                       batches: Callable[[], Iterable[dict[str, Any]]]) -> LatentNormalizer | None:
    """With ``flow.normalize_latents`` (``cfg``: a recipe config with ``model``, ``flow`` and
    ``train``), the latent normalizer on the tokenizer's device: ``model.latent_normalizer`` if
    given, else the one a resumed run saved in ``<output_dir>/latent_normalizer``, else one fitted
    on the (clean) latents of the first ``model.normalizer_batches`` of ``batches()``, batches of
    the whole training set the same on every process, and saved there by the main process.
    Without it, None."""
    if not cfg.flow.normalize_latents:
        return None
    saved = Path(cfg.train.output_dir) / NORMALIZER_DIR
    source = cfg.model.latent_normalizer or (str(saved) if resumed else "")
    if source:
        normalizer = LatentNormalizer.from_pretrained(source)
    else:
        first = islice(batches(), cfg.model.normalizer_batches)
        normalizer = LatentNormalizer.fit(batch_latents(batch, tokenizer) for batch in first)
        normalizer.save_pretrained(saved, is_main_process=is_main_process)
    if normalizer.mean.numel() != tokenizer.latent_dim:
        raise DashflowError(f"{source}: the latent normalizer has {normalizer.mean.numel()} channels, the "
                            f"tokenizer {tokenizer.latent_dim}")
    return normalizer.to(tokenizer.device)


def build_model(cfg: ModelConfig, tokenizer: LatentCodec, encoder: TextEncoder) -> AudioGenModel:
    """A fresh preset sized to the tokenizer and text encoder (or ``init_from``), with the task
    instruction stored, in training mode."""
    instruction = None
    if cfg.instruction:
        states, mask = encoder.encode([cfg.instruction])
        instruction = states[0, mask[0]].cpu()
    if cfg.init_from:
        if cfg.overrides or cfg.warm_start:
            raise DashflowError("model.overrides and model.warm_start apply to a preset; they cannot change "
                                "model.init_from")
        model = AudioGenModel.from_pretrained(cfg.init_from)
    else:
        fields: dict[str, Any] = {
            "latent_dim": tokenizer.latent_dim, "sample_rate": tokenizer.sample_rate,
            "downsampling_ratio": tokenizer.samples_per_latent, "text_embed_dim": encoder.dim,
            "text_encoder_name": cfg.text_encoder, "tokenizer_name": cfg.tokenizer}
        if instruction is not None:
            fields.update(task_instruction_dim=encoder.dim, instruction_seq_len=len(instruction))
        model = AudioGenModel.from_preset(cfg.preset, **{**fields, **cfg.overrides})
    text_dim = model.content_encoder.text_encoder.proj.in_features
    if model.config.latent_dim != tokenizer.latent_dim or text_dim != encoder.dim:
        raise DashflowError(f"model takes {model.config.latent_dim}-d latents and {text_dim}-d text, but "
                            f"the tokenizer gives {tokenizer.latent_dim}-d and {encoder.name} {encoder.dim}-d")
    if cfg.warm_start:
        warm_start(model, cfg.warm_start)
    if instruction is not None:
        model.set_instruction(instruction)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model.train()


def warm_start(model: AudioGenModel, folder: str) -> list[str]:
    """Copy into ``model`` every tensor of the AudioGenModel saved at ``folder`` (e.g. a
    text-to-audio DiT growing the se task's audio content path); tensors only ``model`` has stay
    as initialised: their names are returned and printed once. The task instruction buffer may
    differ in length (each task sets its own). One DashflowError line when a tensor of the saved
    model does not fit."""
    source = AudioGenModel.from_pretrained(folder).state_dict()
    target = model.state_dict()
    source.pop("instruction_embedding", None)
    misfit = next((name for name, tensor in source.items()
                   if name not in target or target[name].shape != tensor.shape), None)
    if misfit is not None:
        shape = list(target[misfit].shape) if misfit in target else "nothing"
        raise DashflowError(f"model.warm_start={folder}: its {misfit} {list(source[misfit].shape)} does not fit "
                            f"the model ({shape}); warm-start from a model of the same shape")
    model.load_state_dict(source, strict=False)
    fresh = sorted(set(target) - set(source))
    if PartialState().is_main_process:
        print(f"warm start from {folder}: {len(source)} of {len(target)} tensors; fresh: {', '.join(fresh) or 'none'}")
    return fresh


# ----------------------------------------------------------------------------- one micro-batch

def micro_batch_seeds(seed: int, step: int, position: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (flow draws, module dropout) of one micro-batch."""
    words = np.random.SeedSequence([seed, step, position]).generate_state(2, dtype=np.uint64)
    return int(words[0] >> 1), int(words[1] >> 1)


def micro_batch_loss(model: torch.nn.Module, micro: dict[str, Any], frozen: Frozen, flow: FlowMatchingConfig,
                     seed: int, step: int, position: int, accelerator: Accelerator,
                     instruction: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Flow-matching losses of one micro-batch (``loss``, ``flow``, ``local_duration``,
    ``global_duration``); ``position`` = its index in the global batch of ``step``;
    ``instruction``: states [B, Li, Di] + mask [B, Li] instead of the model's stored one.

    Reseeds the global torch RNG (dropout) and draws sigma, noise and CFG dropout from a CPU
    generator, both from :func:`micro_batch_seeds`.
    """
    missing = [clip for clip, caption in zip(micro["audio_id"], micro["caption"]) if not has_caption(caption)]
    if missing:
        raise DashflowError(f"clip {missing[0]!r} has no caption (text conditioning needs one per clip)")
    draws, dropout = micro_batch_seeds(seed, step, position)
    torch.manual_seed(dropout)
    latents, latent_mask = batch_latents(micro, frozen.tokenizer)
    content, content_mask = frozen.text(micro["caption"])
    with accelerator.autocast():
        return FlowMatching(model, flow, frozen.normalizer).loss(
            latents, latent_mask, content, content_mask, instruction=None if instruction is None else instruction[0],
            instruction_mask=None if instruction is None else instruction[1],
            generator=torch.Generator().manual_seed(draws))


# ----------------------------------------------------------------------------- samples

def make_pipeline(task: str, model: AudioGenModel, frozen: Frozen, instruction: str | None = None
                  ) -> AudioGenerationPipeline:
    """The ``tta`` / ``ttm`` pipeline of a trained model; its prompt template applies the
    training prompt prefix, so inference formats prompts as training did. ``instruction``: a task
    phrase the pipeline encodes instead of using the model's stored one (multi-task models)."""
    pipeline_class = get_task(task, text=True).pipeline_class()
    pipeline = pipeline_class(tokenizer=frozen.tokenizer, text_encoder=frozen.text.encoder, transformer=model,
                              scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000),
                              latent_normalizer=frozen.normalizer, prompt_template=frozen.text.prefix + "{prompt}",
                              instruction=instruction)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def log_samples(accelerator: Accelerator, pipeline: AudioGenerationPipeline, cfg: SampleConfig,
                step: int, output_dir: str) -> None:
    """Generate the fixed prompts (seed ``cfg.seed + i`` for prompt i) and log each as
    TensorBoard audio + log-mel image and as ``<output_dir>/samples/step_XXXXXXX/<i>.wav``
    (the prompts in ``prompts.json`` beside them). Main process only."""
    out = pipeline(list(cfg.prompts), duration=cfg.seconds, num_inference_steps=cfg.num_steps,
                   guidance_scale=cfg.guidance_scale, sway_coef=cfg.sway_coef, seed=cfg.seed,
                   output_type="pt")
    folder = Path(output_dir) / "samples" / f"step_{step:07d}"
    mel = MelMagnitude(out.sample_rate, n_fft=1024, hop_length=160, n_mels=80)
    for i, wav in enumerate(out.trimmed()):
        log_audio(accelerator, f"sample/{i}", wav, step, out.sample_rate)
        log_spectrogram(accelerator, f"sample/{i}_mel", mel(wav[None])[0].clamp(min=1e-5).log(), step)
        save_audio(folder / f"{i}.wav", wav, out.sample_rate)
    with atomic_path(folder / "prompts.json") as tmp:
        tmp.write_text(json.dumps(list(cfg.prompts), indent=2) + "\n")

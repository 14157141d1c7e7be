"""What the multi-task recipe (``recipes/unified.py``) needs beyond the text-to-audio pieces: one
DiT trained on several tasks at once, as UniFlow-Audio trains it.

- A task is ``tta`` / ``ttm`` (content: the caption, through the text encoder; not time-aligned,
  CFG dropout 0.2, global duration loss) or ``se`` (content: the noisy speech's latents, time-aligned
  one content frame per latent frame, no CFG dropout, local duration loss only: the input sets
  the length), each with its manifest(s), sampling weight and instruction phrasings.
- Batches are task-grouped, as UniFlow's ``TaskIteratingSampler``: every step draws one task by
  weight from a generator keyed by (seed, step), so every process trains the same task at a step
  and a resumed run draws what an uninterrupted one did; each task's loader resumes at the number
  of batches it has served.
- Each clip's instruction is one of its task's phrasings (drawn per clip, keyed like the rest of
  the micro-batch's randomness), encoded once by the frozen text encoder. The model stores the
  ``se`` instruction (the enhancement pipeline has no text encoder); the text pipelines encode
  their task's first phrasing at sampling time.
- The trained model is exported as one pipeline per task, ``<folder>/<task>``, whose identical
  files are hard links of one another: one copy of the weights on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from itertools import count
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.sampling.flow import FlowMatchingConfig, check_config
from dashflow.generation.training.data import batch_latents, build_train_loader, has_caption
from dashflow.generation.training.speech_enhancement import SE_INSTRUCTION
from dashflow.generation.training.text_to_audio import Frozen, ModelConfig, micro_batch_seeds
from omegaconf import MISSING, OmegaConf

from dashflow.codecs import LatentCodec
from dashflow.errors import DashflowError
from dashflow.mixing import MixingConfig, build_se_loader, check_mixing
from dashflow.text_encoders import TextEncoder
from dashflow.training import EMAConfig, OptimConfig, TrainConfig, check_training

TEXT_TASKS = ("tta", "ttm")
DEFAULT_INSTRUCTIONS = {
    "tta": ["Generate a sound that matches the description.", "Create the audio the text describes.",
            "Produce a sound effect from this caption."],
    "ttm": ["Generate music that matches the description.", "Compose a piece of music from the text.",
            "Create music in the style the caption describes."],
    "se": [SE_INSTRUCTION, "Enhance the noisy speech recording.", "Denoise this speech and remove the reverberation."],
}
LOGGED = ("loss", "flow", "local_duration", "global_duration")


@dataclass
class TaskSpec:
    name: str = MISSING              # tta | ttm | se (one entry per task)
    train: str = MISSING             # text: audio + caption manifest; se: clean speech (with noise), or paired
    noise: str = ""                  # se: noise manifest for on-the-fly mixing ("" = train is paired)
    weight: float = 1.0              # sampling weight of the task's batches
    instructions: list[str] = field(default_factory=list)  # phrasings ([] = the defaults); the first is the pipeline's
    latent_cache: str = ""           # text tasks: a dashflow cache-latents folder


@dataclass
class UnifiedDataConfig:
    text_cache: str = ""
    prompt_prefix: str = ""
    max_seconds: float = 10.0        # crop length of every task
    batch_size: int = 24             # clips per micro-batch per process
    num_workers: int = 4
    mixing: MixingConfig = field(default_factory=MixingConfig)  # se with noise


@dataclass
class UnifiedConfig:
    tasks: list[TaskSpec] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: UnifiedDataConfig = field(default_factory=UnifiedDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/unified"))


def check_unified_settings(cfg: UnifiedConfig) -> None:
    """One DashflowError line for a task list or settings the recipe cannot run with."""
    if not cfg.tasks:
        raise DashflowError("tasks is empty: list at least one of tta, ttm, se with its manifest")
    names = [task.name for task in cfg.tasks]
    for task in cfg.tasks:
        if task.name not in DEFAULT_INSTRUCTIONS:
            raise DashflowError(f"task {task.name!r}: use one of {', '.join(DEFAULT_INSTRUCTIONS)}")
        if names.count(task.name) > 1:
            raise DashflowError(f"task {task.name!r} is listed twice")
        if not task.weight > 0:
            raise DashflowError(f"task {task.name!r} has weight {task.weight}: give it a positive weight, or "
                                "leave the task out")
        if task.train.endswith(".jsonl") and not Path(task.train).is_file():
            raise DashflowError(f"task {task.name!r}: {task.train}: no such manifest")
        if task.noise and not Path(task.noise).is_file():
            raise DashflowError(f"task {task.name!r}: {task.noise}: no such noise manifest")
        if any(not phrase.strip() for phrase in task.instructions):
            raise DashflowError(f"task {task.name!r} has an empty instruction")
    check_config(cfg.flow)
    check_training(cfg.train, cfg.optim, {"data.batch_size": cfg.data.batch_size,
                                          "data.max_seconds": cfg.data.max_seconds})
    check_mixing(cfg.data.mixing)


def instructions_of(task: TaskSpec) -> list[str]:
    return list(task.instructions) or DEFAULT_INSTRUCTIONS[task.name]


def unified_model_config(cfg: UnifiedConfig, latent_dim: int) -> ModelConfig:
    """``cfg.model`` with the stored instruction (the se task's, else the first task's) and, with
    se, an audio content projection of the latent width."""
    stored = next((t for t in cfg.tasks if t.name == "se"), cfg.tasks[0])
    overrides = dict(cfg.model.overrides)
    if any(t.name == "se" for t in cfg.tasks) and not cfg.model.init_from:
        overrides.setdefault("audio_content_dim", latent_dim)
    model = OmegaConf.to_object(cfg.model)  # a ModelConfig instance
    return dataclasses.replace(model, instruction=instructions_of(stored)[0], overrides=overrides)


# ----------------------------------------------------------------------------- the mixture

class TaskMixture:
    """Which task trains at each step: one draw by weight per step from a generator keyed by
    (seed, step), the same on every process and after a resume."""

    def __init__(self, names: Sequence[str], weights: Sequence[float], seed: int):
        self.names, self.seed = list(names), seed
        total = float(sum(weights))
        self.probabilities = np.array([w / total for w in weights])

    def task_at(self, step: int) -> str:
        draw = np.random.default_rng([self.seed, step, 0x7A5C]).random()
        index = int(np.searchsorted(np.cumsum(self.probabilities), draw, side="right"))
        return self.names[min(index, len(self.names) - 1)]

    def batches_before(self, step: int) -> dict[str, int]:
        """Batches each task has served in steps 1..``step`` (where its loader resumes)."""
        counts = dict.fromkeys(self.names, 0)
        for past in range(1, step + 1):
            counts[self.task_at(past)] += 1
        return counts


def task_loaders(cfg: UnifiedConfig, tokenizer: LatentCodec, batch_size: int, served: dict[str, int],
                 rank: int = 0, world: int = 1) -> dict[str, Iterator[dict[str, Any]]]:
    """One endless iterator of ``batch_size`` clips per task for process ``rank``, each resumed at
    the batches it has ``served``."""
    loaders = {}
    for task in cfg.tasks:
        if task.name == "se":
            loader = build_se_loader(task.train, task.noise or None, batch_size, cfg.data.max_seconds, cfg.train.seed,
                                     served[task.name], rank, world, cfg.data.num_workers, tokenizer.sample_rate,
                                     cfg.data.mixing)
        else:
            loader = build_train_loader(task.train, tokenizer, cfg.data.max_seconds, batch_size, task.latent_cache,
                                        cfg.train.seed, served[task.name], rank, world, cfg.data.num_workers)
        loaders[task.name] = iter(loader)
    return loaders


def mixture_batches(cfg: UnifiedConfig, mixture: TaskMixture, tokenizer: LatentCodec) -> Iterator[dict[str, Any]]:
    """The run's batches from its first step as one process would draw them, every task by its
    weight (what the latent normalizer is fitted on: the clean latents of every task)."""
    loaders = task_loaders(cfg, tokenizer, cfg.data.batch_size, dict.fromkeys(mixture.names, 0))
    for step in count(1):
        yield next(loaders[mixture.task_at(step)])


# ----------------------------------------------------------------------------- instructions

@dataclass
class Instructions:
    """A task's phrasings encoded once: states [K, L, D] (zero-padded) + mask [K, L]."""

    states: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def encode(cls, phrases: Sequence[str], encoder: TextEncoder) -> Instructions:
        states, mask = encoder.encode(list(phrases))
        return cls(states.float().cpu(), mask.bool().cpu())

    def draw(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` phrasings drawn uniformly: states [count, L, D] + mask [count, L]."""
        index = torch.randint(len(self.states), (count,), generator=generator)
        return self.states[index], self.mask[index]


def task_flow(flow: FlowMatchingConfig, name: str) -> FlowMatchingConfig:
    """The objective of one task: se has no CFG dropout (it samples at CFG 1) and no global
    duration loss (the input sets the length)."""
    if name == "se":
        return dataclasses.replace(flow, cfg_dropout=0.0, global_duration_weight=0.0)
    return flow


def unified_micro_batch_loss(model: torch.nn.Module, task: str, micro: dict[str, Any], frozen: Frozen,
                             instructions: Instructions, flow: FlowMatchingConfig, seed: int, step: int,
                             position: int, accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """Losses of one micro-batch of ``task`` (``loss``, ``flow``, ``local_duration``,
    ``global_duration``), its randomness keyed by (seed, step, position) as in the single-task recipes."""
    draws, dropout = micro_batch_seeds(seed, step, position)
    torch.manual_seed(dropout)
    generator = torch.Generator().manual_seed(draws)
    latents, latent_mask = batch_latents(micro, frozen.tokenizer)
    instruction, instruction_mask = instructions.draw(latents.shape[0], generator)
    device = latents.device
    objective = FlowMatching(model, flow, frozen.normalizer)
    if task == "se":
        noisy, _ = batch_latents({"audio": micro["noisy"], "length": micro["length"]}, frozen.tokenizer)
        noisy = objective.to_model_space(noisy)  # the content in the space the model generates in
        durations = latent_mask.float() / accelerator.unwrap_model(model).latent_rate
        with accelerator.autocast():
            return objective.loss(latents, latent_mask, noisy.transpose(1, 2), latent_mask, content_kind="audio",
                                  durations=durations, instruction=instruction.to(device),
                                  instruction_mask=instruction_mask.to(device), generator=generator)
    missing = [clip for clip, caption in zip(micro["audio_id"], micro["caption"]) if not has_caption(caption)]
    if missing:
        raise DashflowError(f"task {task}: clip {missing[0]!r} has no caption")
    content, content_mask = frozen.text(micro["caption"])
    with accelerator.autocast():
        return objective.loss(latents, latent_mask, content, content_mask, instruction=instruction.to(device),
                              instruction_mask=instruction_mask.to(device), generator=generator)


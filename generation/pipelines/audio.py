"""Text-to-audio and text-to-music pipelines (``diffusers.DiffusionPipeline`` subclasses).

Components: ``tokenizer`` (any :class:`dashflow.codecs.LatentCodec`: decodes latents to audio), ``text_encoder``
(PipelineTextEncoder around a frozen TextEncoder), ``transformer`` (AudioGenModel: DiT + content
adapter), ``scheduler`` (FlowMatchEulerDiscreteScheduler by default: the sampler steps with a copy
of it set to the sway sigmas, so its settings and class take effect) and the optional ``latent_normalizer`` (LatentNormalizer, only for models
trained on normalised latents). ``save_pretrained(dir)`` writes one folder per component plus
``model_index.json``; ``from_pretrained`` reads such a folder (or a hub id), and also a bare
Dasheng-AudioGen model folder (``config.json`` + ``model.safetensors``), whose tokenizer and text
encoder come from the names in its config.

Prompts (the ``mispeech/Dasheng-AudioGen`` remote code on the Hugging Face Hub, ``modeling_dasheng_audiogen.py``): Dasheng-AudioGen reads structured prompts
``<|caption|> text [<|speech|> text] [<|asr|> text] [<|sfx|> text] [<|music|> text] [<|env|> text]``
as plain text. The pipeline's ``prompt_template`` (stored in ``model_index.json``) turns a plain
prompt into that text; ``None`` means the task's default: ``<|caption|> {prompt}`` for
text-to-audio, ``<|caption|> {prompt} <|music|> {prompt}`` for text-to-music (our choice: the
official card has no text-to-music example). With a tagged template, a prompt that already starts
with ``<|caption|>`` is used as written. A model trained on plain captions, or with the training
recipe's ``data.prompt_prefix``, stores ``prompt_template = prompt_prefix + "{prompt}"``.
The optional ``instruction`` is a task phrase encoded by the text encoder and used instead of the
instruction stored in the model (UniFlow's per-task instructions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.model.content_adapter import (
    AdapterOutput,
    decode_global_duration,
)
from dashflow.generation.pipelines.components import (
    DashflowPipelineMixin,
    PipelineTextEncoder,
    index_class_name,
    load_guarded,
    read_json,
    resolve_checkpoint,
)
from dashflow.generation.sampling.flow import LatentNormalizer
from dashflow.generation.sampling.sampler import sample
from dashflow.text_encoders import TextEncoder
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput
from torch import Tensor

from dashflow.codecs import LatentCodec, load_codec
from dashflow.errors import DashflowError

__all__ = [
    "PIPELINES",
    "AudioGenerationOutput",
    "AudioGenerationPipeline",
    "TextToAudioPipeline",
    "TextToMusicPipeline",
    "format_prompt",
    "load_pipeline",
]

CAPTION_TAG = "<|caption|>"
PROMPT_FIELD = "{prompt}"
PIPELINE_INDEX = "model_index.json"


def format_prompt(prompt: str, template: str = "<|caption|> {prompt}") -> str:
    """The text the text encoder sees: ``template`` with ``{prompt}`` replaced by the stripped
    prompt. With a template starting with ``<|caption|>``, a prompt that starts with it too is a
    complete structured prompt and is kept. Empty prompts (or captions) raise DashflowError."""
    if not isinstance(prompt, str):
        raise DashflowError(f"a prompt must be a string, not {type(prompt).__name__}")
    text = prompt.strip()
    structured = template.startswith(CAPTION_TAG) and text.startswith(CAPTION_TAG)
    if not text or (structured and not text[len(CAPTION_TAG):].strip()):
        raise DashflowError(f"prompt {prompt!r} is empty: describe the sound to generate")
    return text if structured else template.replace(PROMPT_FIELD, text)


@dataclass
class AudioGenerationOutput(AudioPipelineOutput):
    """audios [B, S] at ``sample_rate`` (numpy float32, or a tensor with ``output_type="pt"``),
    zero after each item's end; lengths [B] samples per item (latent frames x 640); settings:
    everything that decided the result (prompts as encoded, durations, steps, guidance, seeds)."""

    lengths: list[int]
    sample_rate: int
    settings: dict[str, Any]

    def trimmed(self) -> list[np.ndarray | Tensor]:
        """Each item's audio [S_i] without the padding."""
        return [audio[:length] for audio, length in zip(self.audios, self.lengths)]


class AudioGenerationPipeline(DashflowPipelineMixin, DiffusionPipeline):
    """Shared logic of the text-conditioned pipelines; subclasses set the task defaults.

    ``default_prompt_template``: used when the config's ``prompt_template`` is None;
    ``max_duration``: longest clip in seconds (also caps predicted durations).
    """

    task: ClassVar[str] = "tta"
    default_prompt_template: ClassVar[str] = "<|caption|> {prompt}"
    max_duration: ClassVar[float] = 60.0
    _optional_components: ClassVar[list[str]] = ["latent_normalizer"]
    own_components = (PipelineTextEncoder, AudioGenModel, LatentNormalizer)

    def __init__(self, tokenizer: LatentCodec, text_encoder: PipelineTextEncoder | TextEncoder,
                 transformer: AudioGenModel, scheduler: FlowMatchEulerDiscreteScheduler,
                 latent_normalizer: LatentNormalizer | None = None, prompt_template: str | None = None,
                 instruction: str | None = None):
        super().__init__()
        if isinstance(text_encoder, TextEncoder):
            text_encoder = PipelineTextEncoder.wrap(text_encoder)
        check_components(tokenizer, text_encoder, transformer, scheduler, latent_normalizer)
        if prompt_template is not None and PROMPT_FIELD not in prompt_template:
            raise DashflowError(f"prompt_template {prompt_template!r} has no {PROMPT_FIELD} field")
        if instruction is not None and not instruction.strip():
            raise DashflowError("instruction is empty: pass a task phrase or None (the model's own)")
        for module in (tokenizer, text_encoder, transformer, latent_normalizer):
            if module is not None:
                module.eval()  # dropout off: generation is deterministic given the seed
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                              scheduler=scheduler, latent_normalizer=latent_normalizer)
        self.register_to_config(prompt_template=prompt_template, instruction=instruction)

    # --- loading and saving ----------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, torch_dtype: torch.dtype | None = None,
                        **kwargs) -> AudioGenerationPipeline:
        """Load a pipeline folder (``model_index.json``), a hub id, or a bare AudioGenModel folder.

        ``torch_dtype`` (default float32) applies to the transformer and the tokenizer; the text
        encoder stays float32. Components passed as keyword arguments replace the stored ones.
        """
        folder = resolve_checkpoint(pretrained_model_name_or_path, "pipeline")
        if isinstance(kwargs.get("text_encoder"), TextEncoder):
            kwargs["text_encoder"] = PipelineTextEncoder.wrap(kwargs["text_encoder"])
        if not (folder / PIPELINE_INDEX).is_file():
            if is_model_folder(folder):
                return cls.from_model_folder(folder, torch_dtype=torch_dtype, **kwargs)
            raise DashflowError(f"{pretrained_model_name_or_path}: not a pipeline folder (no {PIPELINE_INDEX}) "
                                "and not a Dasheng-AudioGen model folder")
        index = read_json(folder / PIPELINE_INDEX)
        for name in ("tokenizer", "text_encoder", "transformer", "scheduler", "latent_normalizer"):
            entry = index.get(name)
            if name not in kwargs and isinstance(entry, list) and entry and entry[0] is not None \
                    and not (folder / name).is_dir():
                raise DashflowError(f"{folder}: component folder {name}/ is missing")
        return load_guarded(lambda: super(AudioGenerationPipeline, cls).from_pretrained(
            str(folder), torch_dtype=torch_dtype or torch.float32, **kwargs), folder)

    @classmethod
    def from_model_folder(cls, folder: str | Path, torch_dtype: torch.dtype | None = None,
                          tokenizer: LatentCodec | None = None,
                          text_encoder: PipelineTextEncoder | TextEncoder | None = None,
                          **pipeline_kwargs) -> AudioGenerationPipeline:
        """A pipeline around a bare AudioGenModel folder (e.g. a local ``mispeech/Dasheng-AudioGen``):
        tokenizer and text encoder default to the config's ``tokenizer_name`` / ``text_encoder_name``."""
        dtype = torch_dtype or torch.float32
        transformer = AudioGenModel.from_pretrained(folder, torch_dtype=dtype)
        if tokenizer is None:
            tokenizer = load_codec(transformer.config.tokenizer_name, torch_dtype=dtype)
        if text_encoder is None:
            text_encoder = PipelineTextEncoder(transformer.config.text_encoder_name)
        scheduler = pipeline_kwargs.pop("scheduler", None) or FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        return cls(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                   scheduler=scheduler, **pipeline_kwargs)

    # --- generation --------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self.transformer.config.sample_rate)

    @property
    def samples_per_latent(self) -> int:
        return int(self.tokenizer.samples_per_latent)

    @property
    def prompt_template(self) -> str:
        """The configured template, else the task's default."""
        return self.config.prompt_template or self.default_prompt_template

    def format_prompts(self, prompt: str | Sequence[str]) -> list[str]:
        """The prompts as the text encoder sees them (see :func:`format_prompt`)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise DashflowError("no prompt given")
        return [format_prompt(p, self.prompt_template) for p in prompts]

    def duration_frames(self, duration: float | Sequence[float | None] | None, batch_size: int) -> list[int | None]:
        """Latent frames per item (``max(1, round(seconds x latent rate))``); None = predicted."""
        durations = list(duration) if isinstance(duration, (list, tuple)) else [duration] * batch_size
        if len(durations) != batch_size:
            raise DashflowError(f"{len(durations)} durations for {batch_size} prompts")
        frames: list[int | None] = []
        for seconds in durations:
            if seconds is None:
                frames.append(None)
                continue
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                    or not 0 < seconds <= self.max_duration:
                raise DashflowError(f"duration {seconds!r} s is outside (0, {self.max_duration:g}] s "
                                    f"for {type(self).__name__}")
            frames.append(max(1, round(seconds * self.transformer.latent_rate)))
        return frames

    def _generators(self, batch_size: int, generator, seed) -> tuple[Any, list[int] | None]:
        if seed is not None and generator is not None:
            raise DashflowError("pass seed or generator, not both")
        if seed is None:
            return generator, None
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(batch_size)]
        if len(seeds) != batch_size or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise DashflowError(f"seed must be an int or {batch_size} ints, got {seed!r}")
        return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds

    def _instruction(self, batch_size: int, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """The configured task phrase's text-encoder states [B, Li, Di] and mask [B, Li], or Nones."""
        if self.config.instruction is None:
            return None, None
        emb, mask = self.text_encoder.encode([self.config.instruction])
        if emb.shape[-1] != self.transformer.config.task_instruction_dim:
            raise DashflowError(f"instruction states are {emb.shape[-1]}-d but the model's instructions are "
                                f"{self.transformer.config.task_instruction_dim}-d")
        device = self.transformer.device
        return (emb.to(device, dtype).expand(batch_size, -1, -1), mask.to(device).expand(batch_size, -1))

    def _latent_frames(self, adapted: AdapterOutput, requested: list[int | None]) -> Tensor:
        """Latent frames [B]: the requested ones, else the model's global duration prediction
        (from the adapter output ``adapted``), clamped to [1, max_duration]."""
        rate, offset = self.transformer.latent_rate, self.transformer.config.duration_offset
        log_pred = torch.nan_to_num(adapted.global_duration.float(), nan=0.0)
        log_pred = log_pred.clamp(max=math.log(self.max_duration + offset))
        no_alignment = torch.zeros_like(log_pred, dtype=torch.bool)  # text: the global prediction
        predicted = decode_global_duration(log_pred, torch.zeros_like(adapted.local_duration), no_alignment,
                                           rate, offset).clamp(1, int(self.max_duration * rate))
        given = torch.tensor([0 if f is None else f for f in requested], device=predicted.device)
        return torch.where(torch.tensor([f is None for f in requested], device=predicted.device), predicted, given)

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], duration: float | Sequence[float | None] | None = None,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0, sway_coef: float | None = -1.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 seed: int | Sequence[int] | None = None, output_type: str = "np",
                 return_dict: bool = True) -> AudioGenerationOutput | tuple:
        """Generate audio for ``prompt`` (one or a list).

        duration: seconds (one for all, or one per prompt) in (0, max_duration]; None uses the
        model's predicted duration. Each item's length is its latent frames x 640 samples.
        num_inference_steps >= 1 (Euler, sway schedule, N model calls), guidance_scale >= 1
        (1 = no classifier-free guidance), sway_coef (0 / None = linear sigmas). seed: item i
        uses ``seed + i`` (or pass one seed per prompt); generator: torch generator(s) instead.
        output_type ``"np"`` or ``"pt"``. Returns AudioGenerationOutput (audios [B, S]).
        """
        prompts = self.format_prompts(prompt)
        batch = len(prompts)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or num_inference_steps < 1:
            raise DashflowError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if not math.isfinite(guidance_scale) or guidance_scale < 1:
            raise DashflowError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale!r}")
        if sway_coef is not None and not math.isfinite(sway_coef):
            raise DashflowError(f"sway_coef must be a finite number or None, got {sway_coef!r}")
        if output_type not in ("np", "pt"):
            raise DashflowError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        requested = self.duration_frames(duration, batch)
        generator, seeds = self._generators(batch, generator, seed)

        model = self.transformer
        device, dtype = model.device, model.dtype
        # 1. text: prompt states [B, L, D] and the task instruction
        content, mask = self.text_encoder.encode(prompts)
        content, mask = content.to(device, dtype), mask.to(device)
        instruction, instruction_mask = self._instruction(batch, dtype)
        # 2. the content adapter, once: durations and the backbone's conditioning
        adapted = model.adapt(content, mask, "text", instruction, instruction_mask)
        frames = self._latent_frames(adapted, requested)
        cond = model.condition(content, mask, latent_lengths=frames, adapted=adapted)
        # 3. sampling with the scheduler component, from noise to latents [B, C, T]
        progress = not getattr(self, "_progress_bar_config", {}).get("disable", False)
        latents = sample(model, cond, num_steps=num_inference_steps, guidance_scale=guidance_scale,
                         sway_coef=sway_coef, scheduler=self.scheduler, generator=generator,
                         normalizer=self.latent_normalizer, progress=progress)
        # 4. decoding to audio [B, S]
        audios = self.decode(latents, frames)

        lengths = [int(f) * self.samples_per_latent for f in frames.tolist()]
        settings = {"task": self.task, "prompts": prompts, "duration_requested": duration,
                    "durations": [n / self.sample_rate for n in lengths],
                    "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                    "sway_coef": sway_coef, "seeds": seeds, "prompt_template": self.prompt_template,
                    "instruction": self.config.instruction, "dtype": str(dtype).removeprefix("torch."),
                    "device": str(device)}
        if output_type == "np":
            audios = audios.numpy()
        if not return_dict:
            return (audios,)
        return AudioGenerationOutput(audios=audios, lengths=lengths, sample_rate=self.sample_rate,
                                     settings=settings)

    def decode(self, latents: Tensor, frames: Tensor) -> Tensor:
        """latents [B, C, T] + valid frames [B] -> float32 CPU audio [B, T x 640], zero past each
        item's end. Items of equal length are decoded together, each exactly as if alone."""
        batch, _, total = latents.shape
        hop = self.samples_per_latent
        audio = torch.zeros(batch, total * hop)
        for length in sorted(set(frames.tolist())):
            index = (frames == length).nonzero().squeeze(1)
            part = latents[index, :, :length].transpose(1, 2).to(self.tokenizer.dtype)
            wav = self.tokenizer.decode(part).float().cpu()
            audio[index.cpu(), :length * hop] = wav[:, :length * hop]
        return audio


class TextToAudioPipeline(AudioGenerationPipeline):
    """Text-to-audio: prompts go to ``<|caption|>``; clips up to 60 s."""


class TextToMusicPipeline(AudioGenerationPipeline):
    """Text-to-music: prompts go to ``<|caption|>`` and ``<|music|>``; clips up to 120 s."""

    task = "ttm"
    default_prompt_template = "<|caption|> {prompt} <|music|> {prompt}"
    max_duration = 120.0


PIPELINES: dict[str, type[AudioGenerationPipeline]] = {"tta": TextToAudioPipeline, "ttm": TextToMusicPipeline}


def is_model_folder(folder: Path) -> bool:
    """True for a saved AudioGenModel or an official Dasheng-AudioGen folder (its config.json)."""
    if not (folder / "config.json").is_file():
        return False
    config = read_json(folder / "config.json")
    return config.get("_class_name") == AudioGenModel.__name__ or config.get("model_type") == "dasheng_audiogen"


def pipeline_task(folder: str | Path) -> str | None:
    """The task of a saved pipeline folder (from ``model_index.json``), None if not recorded."""
    index = Path(folder) / PIPELINE_INDEX
    if not index.is_file():
        return None
    name = index_class_name(read_json(index))
    return next((task for task, cls in PIPELINES.items() if cls.__name__ == name), None)


def load_pipeline(checkpoint: str | Path, task: str | None = None, torch_dtype: torch.dtype | None = None,
                  **kwargs) -> AudioGenerationPipeline:
    """Load ``checkpoint`` as the pipeline of ``task`` (tta / ttm; default: the saved class, else tta)."""
    folder = resolve_checkpoint(checkpoint, "pipeline")
    task = task or pipeline_task(folder) or "tta"
    if task not in PIPELINES:
        raise DashflowError(f"unknown task {task!r} (choose from {', '.join(PIPELINES)})")
    return PIPELINES[task].from_pretrained(folder, torch_dtype=torch_dtype, **kwargs)


def check_components(tokenizer: LatentCodec, text_encoder: PipelineTextEncoder, transformer: AudioGenModel,
                     scheduler: FlowMatchEulerDiscreteScheduler, latent_normalizer: LatentNormalizer | None) -> None:
    """Raise one DashflowError line when the components do not fit together."""
    cfg = transformer.config
    text_width = transformer.content_encoder.text_encoder.proj.in_features
    problem = None
    if tokenizer.latent_dim != cfg.latent_dim:
        problem = f"the model generates {cfg.latent_dim}-d latents but the tokenizer decodes {tokenizer.latent_dim}-d ones"
    elif tokenizer.samples_per_latent != cfg.downsampling_ratio or tokenizer.sample_rate != cfg.sample_rate:
        problem = (f"the model expects {cfg.downsampling_ratio} samples per latent at {cfg.sample_rate} Hz, "
                   f"the tokenizer gives {tokenizer.samples_per_latent} at {tokenizer.sample_rate} Hz")
    elif text_encoder.dim != text_width:
        problem = (f"text encoder {text_encoder.name!r} gives {text_encoder.dim}-d states but the model's text "
                   f"projection takes {text_width}-d ones")
    elif latent_normalizer is not None and latent_normalizer.mean.numel() != cfg.latent_dim:
        problem = (f"the latent normalizer has {latent_normalizer.mean.numel()} channels, the model's latents "
                   f"{cfg.latent_dim}")
    elif scheduler.config.num_train_timesteps != 1000 or scheduler.config.use_dynamic_shifting:
        problem = "the scheduler must have num_train_timesteps=1000 and no dynamic shifting (the model's time scale)"
    if problem:
        raise DashflowError(f"mismatched pipeline components: {problem}")

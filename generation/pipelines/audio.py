"""Text-to-audio and text-to-music pipelines (``diffusers.DiffusionPipeline`` subclasses).

Components: ``tokenizer`` (any :class:`dashflow.codecs.LatentCodec`: decodes latents to audio),
``text_encoder`` (PipelineTextEncoder around a frozen TextEncoder), ``transformer`` (AudioGenModel:
DiT + content adapter), ``scheduler`` (FlowMatchEulerDiscreteScheduler by default: the sampler
steps with a copy of it set to the sway sigmas, so its settings and class take effect) and the
optional ``latent_normalizer`` (LatentNormalizer, only for models trained on normalised latents).
``save_pretrained(dir)`` writes one folder per component plus ``model_index.json``;
``from_pretrained`` reads such a folder (or a hub id), and also a bare Dasheng-AudioGen model folder (``config.json`` + ``model.safetensors``), whose tokenizer and text
encoder come from the names in its config.

Calls take diffusers' argument names (``audio_length_in_s``, ``negative_prompt``,
``num_waveforms_per_prompt``, ``latents``, ``callback_on_step_end``) and steer with input audio
(:mod:`.steering`) and long-form windows (:mod:`dashflow.generation.sampling.windows`); one
``check_inputs`` checks every argument before any model runs.

Prompts (the ``mispeech/Dasheng-AudioGen`` remote code on the Hugging Face Hub,
``modeling_dasheng_audiogen.py``): Dasheng-AudioGen reads structured prompts
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from dashflow.generation.model.audiogen import AudioGenModel, Conditioning
from dashflow.generation.model.content_adapter import (
    AdapterOutput,
    decode_global_duration,
)
from dashflow.generation.pipelines.checks import (
    check_callback,
    check_count,
    check_output_type,
    check_sampling,
    is_number,
)
from dashflow.generation.pipelines.components import (
    PIPELINE_INDEX,
    DashflowPipelineMixin,
    PipelineTextEncoder,
    index_class_name,
    quiet_loading,
    read_json,
    resolve_checkpoint,
    seeded_generators,
    task_folder,
)
from dashflow.generation.pipelines.lora import LoraPipelineMixin
from dashflow.generation.pipelines.inputs import Request, check_negatives, check_steering, check_window
from dashflow.generation.pipelines.tasks import TEXT_TASKS, get_task, task_of_class
from dashflow.generation.sampling.cfm import CALLBACK_INPUTS, FlowMatching
from dashflow.generation.sampling.flow import LatentNormalizer
from dashflow.generation.sampling.windows import sample_windows
from dashflow.text_encoders import TextEncoder
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput
from torch import Tensor

from dashflow.codecs import LatentCodec, load_codec
from dashflow.errors import DashflowError

__all__ = [
    "AudioGenerationOutput",
    "AudioGenerationPipeline",
    "TextToAudioPipeline",
    "TextToMusicPipeline",
    "format_prompt",
    "load_pipeline",
]

CAPTION_TAG = "<|caption|>"
PROMPT_FIELD = "{prompt}"
LONG_FORM_SECONDS = 3600.0  # longest windowed clip (an hour, as the audio reader's limit)


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


class AudioGenerationPipeline(LoraPipelineMixin, DashflowPipelineMixin, DiffusionPipeline):
    """Shared logic of the text-conditioned pipelines; subclasses set the task defaults.

    ``default_prompt_template``: used when the config's ``prompt_template`` is None;
    ``max_duration``: longest clip in seconds made in one pass (also caps predicted durations);
    longer ones are made in windows (``window_length_in_s``) up to ``LONG_FORM_SECONDS``.
    """

    task: ClassVar[str] = "tta"
    default_prompt_template: ClassVar[str] = "<|caption|> {prompt}"
    max_duration: ClassVar[float] = 60.0
    _optional_components: ClassVar[list[str]] = ["latent_normalizer"]
    _callback_tensor_inputs: ClassVar[list[str]] = list(CALLBACK_INPUTS)
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

    # --- loading -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, torch_dtype: torch.dtype | None = None,
                        **kwargs) -> AudioGenerationPipeline:
        """Load a pipeline folder (``model_index.json``), a hub id, or a bare AudioGenModel folder.

        ``torch_dtype`` (default float32) applies to the transformer and the tokenizer; the text
        encoder stays float32. Components passed as keyword arguments replace the stored ones.
        """
        if isinstance(kwargs.get("text_encoder"), TextEncoder):
            kwargs["text_encoder"] = PipelineTextEncoder.wrap(kwargs["text_encoder"])
        return super().from_pretrained(pretrained_model_name_or_path, torch_dtype=torch_dtype, **kwargs)

    @classmethod
    def from_folder_without_index(cls, folder: Path, torch_dtype: torch.dtype | None = None,
                                  **kwargs) -> AudioGenerationPipeline:
        if is_model_folder(folder):
            return cls.from_model_folder(folder, torch_dtype=torch_dtype, **kwargs)
        raise DashflowError(f"{folder}: not a pipeline folder (no {PIPELINE_INDEX}) "
                            "and not a Dasheng-AudioGen model folder")

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
            with quiet_loading():
                tokenizer = load_codec(transformer.config.tokenizer_name, torch_dtype=dtype)
        if text_encoder is None:
            text_encoder = PipelineTextEncoder(transformer.config.text_encoder_name)
        scheduler = pipeline_kwargs.pop("scheduler", None) or FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        return cls(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                   scheduler=scheduler, **pipeline_kwargs)

    # --- properties and prompts ----------------------------------------------------------------

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

    def duration_frames(self, duration: float | Sequence[float | None] | None, batch_size: int,
                        limit: float | None = None) -> list[int | None]:
        """Latent frames per item (``max(1, round(seconds x latent rate))``); None = predicted.
        Each length must lie in (0, ``limit``] (default ``max_duration``)."""
        limit = self.max_duration if limit is None else limit
        durations = list(duration) if isinstance(duration, (list, tuple)) else [duration] * batch_size
        if len(durations) != batch_size:
            raise DashflowError(f"{len(durations)} durations for {batch_size} prompts")
        frames: list[int | None] = []
        for seconds in durations:
            if seconds is None:
                frames.append(None)
                continue
            if not is_number(seconds) or not 0 < seconds <= limit:
                raise DashflowError(f"duration {seconds!r} s is outside (0, {limit:g}] s for {type(self).__name__}"
                                    + ("" if limit > self.max_duration else
                                       f" (longer clips: pass window_length_in_s, up to {LONG_FORM_SECONDS:g} s)"))
            frames.append(max(1, round(seconds * self.transformer.latent_rate)))
        return frames

    # --- argument checks -------------------------------------------------------------------------

    def check_inputs(self, prompt, audio_length_in_s=None, num_inference_steps=25, guidance_scale=5.0,
                     negative_prompt=None, negative_guidance_scale=1.0, num_waveforms_per_prompt=1, sway_coef=-1.0,
                     latents=None, init_audio=None, strength=None, inpaint_audio=None, inpaint_regions=None,
                     continue_audio=None, window_length_in_s=None, window_overlap_in_s=None, callback_on_step_end=None,
                     callback_on_step_end_tensor_inputs=("latents",), output_type="np", duration=None) -> Request:
        """Every check of :meth:`__call__`'s arguments (one DashflowError line each), before any
        model runs; returns the call's :class:`Request`."""
        check_sampling(num_inference_steps, guidance_scale, sway_coef)
        check_output_type(output_type)
        check_count("num_waveforms_per_prompt", num_waveforms_per_prompt)
        check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        if audio_length_in_s is not None and duration is not None:
            raise DashflowError("pass audio_length_in_s or duration (the same setting), not both")
        length = audio_length_in_s if audio_length_in_s is not None else duration
        prompts = self.format_prompts(prompt)
        negatives = check_negatives(negative_prompt, negative_guidance_scale, len(prompts), guidance_scale)
        rate = self.transformer.latent_rate
        window, overlap = check_window(window_length_in_s, window_overlap_in_s, rate, self.max_duration)
        limit = LONG_FORM_SECONDS if window else self.max_duration
        clips = {"init_audio": init_audio, "inpaint_audio": inpaint_audio, "continue_audio": continue_audio}
        steering = check_steering(clips, strength, inpaint_regions, length, sample_rate=self.sample_rate,
                                  latent_rate=rate, max_seconds=self.max_duration, limit=limit,
                                  min_samples=self.tokenizer.min_samples, windowed=window is not None)
        if negatives is not None:
            negatives = self.format_prompts(negatives)
        n = num_waveforms_per_prompt
        if latents is not None:
            want = (len(prompts) * n, self.transformer.config.latent_dim)
            if not isinstance(latents, Tensor) or latents.dim() != 3 or tuple(latents.shape[:2]) != want:
                shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
                raise DashflowError(f"latents must be a tensor [{want[0]}, {want[1]}, T] (one per output), got {shape}")
        if steering is not None:
            frames: list[int | None] = [None] * len(prompts)
        elif latents is not None and length is None:
            frames = [latents.shape[-1]] * len(prompts)
        else:
            frames = self.duration_frames(length, len(prompts), limit)
        if window and steering is None and (frames[0] is None or len(set(frames)) > 1):
            raise DashflowError("window_length_in_s needs one audio_length_in_s for every prompt")
        total = steering.added_frames if steering is not None else frames[0] or 0
        if latents is not None and window and total > window:
            raise DashflowError("latents cannot start a windowed (long-form) generation: each window draws its "
                                "own noise")
        repeat = (lambda items: [x for x in items for _ in range(n)])
        return Request(repeat(prompts), None if negatives is None else repeat(negatives), repeat(frames), steering,
                       window, overlap, length)

    # --- generation ------------------------------------------------------------------------------

    def instruction_states(self, batch_size: int, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """The configured task phrase's text-encoder states [B, Li, Di] and mask [B, Li], or Nones."""
        if self.config.instruction is None:
            return None, None
        emb, mask = self.text_encoder.encode([self.config.instruction])
        if emb.shape[-1] != self.transformer.config.task_instruction_dim:
            raise DashflowError(f"instruction states are {emb.shape[-1]}-d but the model's instructions are "
                                f"{self.transformer.config.task_instruction_dim}-d")
        device = self.transformer.device
        return (emb.to(device, dtype).expand(batch_size, -1, -1), mask.to(device).expand(batch_size, -1))

    def encode_text(self, prompts: list[str]) -> tuple[Tensor, Tensor, AdapterOutput]:
        """Prompts as encoded -> states [B, L, D], mask [B, L] and the content adapter's output
        (run once per call: durations and the backbone's conditioning come from it)."""
        model = self.transformer
        content, mask = self.text_encoder.encode(prompts)
        content, mask = content.to(model.device, model.dtype), mask.to(model.device)
        instruction, instruction_mask = self.instruction_states(len(prompts), model.dtype)
        return content, mask, model.adapt(content, mask, "text", instruction, instruction_mask)

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
    def __call__(self, prompt: str | Sequence[str], audio_length_in_s: float | Sequence[float | None] | None = None,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0,
                 negative_prompt: str | Sequence[str] | None = None, negative_guidance_scale: float = 1.0,
                 num_waveforms_per_prompt: int = 1, sway_coef: float | None = -1.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 seed: int | Sequence[int] | None = None, latents: Tensor | None = None,
                 init_audio: Tensor | np.ndarray | None = None, strength: float | None = None,
                 inpaint_audio: Tensor | np.ndarray | None = None,
                 inpaint_regions: Sequence[tuple[float, float]] | None = None,
                 continue_audio: Tensor | np.ndarray | None = None, window_length_in_s: float | None = None,
                 window_overlap_in_s: float | None = None, callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), output_type: str = "np",
                 return_dict: bool = True, *, duration: float | Sequence[float | None] | None = None,
                 ) -> AudioGenerationOutput | tuple:
        """Generate audio for ``prompt`` (one or a list).

        audio_length_in_s (diffusers' name; ``duration`` is the same): seconds, one for all or one
        per prompt, in (0, max_duration]; None uses the model's predicted duration (or the length
        of ``latents``). Each item's length is its latent frames x 640 samples.
        num_inference_steps >= 1 (Euler, sway schedule, N model calls), guidance_scale >= 1
        (1 = no classifier-free guidance), negative_prompt (one, or one per prompt): a third
        branch steers away from it, ``- negative_guidance_scale (v_neg - v_uncond)`` (needs
        guidance_scale > 1; :mod:`dashflow.generation.sampling.cfm` says why not diffusers' swap).
        num_waveforms_per_prompt: outputs per prompt (output i * n + j is prompt i's j-th).
        sway_coef (0 / None = linear sigmas). seed: output k uses ``seed + k`` (or one seed per
        output); generator: torch generator(s) instead. latents: the starting noise [B, C, T]
        (B = all outputs). callback_on_step_end(pipe, step, timestep, tensors) -> dict after every
        step (of every window, when windowed), with ``callback_on_step_end_tensor_inputs`` from
        ``latents`` / ``velocity`` (model space); a returned ``latents`` replaces the state.
        Input audio (mono [S] at ``sample_rate``, one clip for every output; :mod:`.steering`):
        ``init_audio`` + ``strength`` in (0, 1] (default 0.8; audio-to-audio, the output has the
        clip's length), ``inpaint_audio`` + ``inpaint_regions`` [(start, end) seconds], or
        ``continue_audio`` (``audio_length_in_s`` is then the seconds added).
        window_length_in_s: clips longer than this are made in windows of this length that
        overlap by ``window_overlap_in_s`` (default half a window) and are crossfaded in latent space
        (:mod:`dashflow.generation.sampling.windows`); lengths up to 3600 s.
        output_type ``"np"`` or ``"pt"``. Returns AudioGenerationOutput (audios [B, S]).
        """
        request = self.check_inputs(prompt, audio_length_in_s, num_inference_steps, guidance_scale, negative_prompt,
                                    negative_guidance_scale, num_waveforms_per_prompt, sway_coef, latents, init_audio,
                                    strength, inpaint_audio, inpaint_regions, continue_audio, window_length_in_s,
                                    window_overlap_in_s, callback_on_step_end, callback_on_step_end_tensor_inputs,
                                    output_type, duration)
        batch = len(request.prompts)
        generator, seeds = seeded_generators(batch, generator, seed)
        model, steering, hop = self.transformer, request.steering, self.samples_per_latent
        # 1. text: prompt states [B, L, D] and the content adapter, once (negatives likewise)
        content, mask, adapted = self.encode_text(request.prompts)
        negative = None if request.negatives is None else self.encode_text(request.negatives)
        # 2. what the sampler starts from: frames [B], and init latents / keep weights of an input clip
        init = keep = None
        if steering is None:
            frames = self._latent_frames(adapted, request.frames)
        else:
            init, keep, total = steering.plan(self.tokenizer)
            frames = torch.full((batch,), total, device=model.device)
            init, keep = init.expand(batch, -1, -1), None if keep is None else keep.expand(batch, -1)

        def conditions(lengths: Tensor | int) -> tuple[Conditioning, Conditioning | None]:
            cond = model.condition(content, mask, latent_lengths=lengths, adapted=adapted)
            neg = None if negative is None else model.condition(negative[0], negative[1], latent_lengths=lengths,
                                                               adapted=negative[2])
            return cond, neg

        progress = not getattr(self, "_progress_bar_config", {}).get("disable", False)
        callback = None if callback_on_step_end is None else (
            lambda step, timestep, tensors: callback_on_step_end(self, step, timestep, tensors))
        flow = FlowMatching(model, normalizer=self.latent_normalizer)
        sampling = {"num_steps": num_inference_steps, "guidance_scale": guidance_scale, "sway_coef": sway_coef,
                    "negative_scale": negative_guidance_scale, "scheduler": self.scheduler, "generator": generator,
                    "callback": callback, "callback_inputs": callback_on_step_end_tensor_inputs, "progress": progress}
        windowed = request.window is not None and int(frames[0]) > request.window
        # 3. sampling with the scheduler component, to latents [B, C, T]; 4. decoding to audio [B, S]
        if windowed:
            cond, neg = conditions(request.window)
            known = torch.zeros(batch, model.config.latent_dim, 0) if steering is None else init[:, :, :steering.kept]
            sampled = sample_windows(lambda _window, w_init, w_keep: flow.sample(
                cond, negative=neg, init=w_init, keep=w_keep, **sampling), known.to(model.device),
                int(frames[0]), request.window, request.overlap)
            audios = self.decode_in_chunks(sampled, request.window, request.overlap)
        else:
            cond, neg = conditions(frames)
            sampled = flow.sample(cond, negative=neg, noise=latents, init=init, keep=keep,
                                  strength=1.0 if steering is None else steering.strength, **sampling)
            audios = self.decode(sampled, frames)
        lengths = [int(f) * hop for f in frames.tolist()]
        if steering is not None:
            lengths = [steering.output_samples(int(f), hop) for f in frames.tolist()]
            audios = steering.paste(audios, lengths, self.sample_rate, hop)

        settings = {"task": self.task, "prompts": request.prompts, "negative_prompts": request.negatives,
                    "negative_guidance_scale": negative_guidance_scale if request.negatives else None,
                    "num_waveforms_per_prompt": num_waveforms_per_prompt,
                    "duration_requested": request.length_requested,
                    "durations": [n / self.sample_rate for n in lengths],
                    "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                    "sway_coef": sway_coef, "seeds": seeds, "latents_given": latents is not None,
                    "steering": None if steering is None else steering.settings(self.sample_rate, hop),
                    "window_length_in_s": window_length_in_s if windowed else None,
                    "window_overlap_in_s": request.overlap / model.latent_rate if windowed else None,
                    "prompt_template": self.prompt_template, "instruction": self.config.instruction,
                    "dtype": str(model.dtype).removeprefix("torch."), "device": str(model.device)}
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

    def decode_in_chunks(self, latents: Tensor, chunk: int, context: int) -> Tensor:
        """latents [B, C, T] -> float32 CPU audio [B, T x 640], decoded ``chunk`` frames at a time,
        each with ``context`` frames of latents on both sides (memory of one chunk, whatever T)."""
        batch, _, total = latents.shape
        hop = self.samples_per_latent
        audio = torch.zeros(batch, total * hop)
        for start in range(0, total, chunk):
            end = min(start + chunk, total)
            first, last = max(0, start - context), min(total, end + context)
            part = latents[:, :, first:last].transpose(1, 2).to(self.tokenizer.dtype)
            wav = self.tokenizer.decode(part).float().cpu()
            audio[:, start * hop:end * hop] = wav[:, (start - first) * hop:(end - first) * hop]
        return audio


class TextToAudioPipeline(AudioGenerationPipeline):
    """Text-to-audio: prompts go to ``<|caption|>``; clips up to 60 s."""


class TextToMusicPipeline(AudioGenerationPipeline):
    """Text-to-music: prompts go to ``<|caption|>`` and ``<|music|>``; clips up to 120 s."""

    task = "ttm"
    default_prompt_template = "<|caption|> {prompt} <|music|> {prompt}"
    max_duration = 120.0


def is_model_folder(folder: Path) -> bool:
    """True for a saved AudioGenModel or an official Dasheng-AudioGen folder (its config.json)."""
    if not (folder / "config.json").is_file():
        return False
    config = read_json(folder / "config.json")
    return config.get("_class_name") == AudioGenModel.__name__ or config.get("model_type") == "dasheng_audiogen"


def pipeline_task(folder: str | Path) -> str | None:
    """The task of a saved pipeline folder (from ``model_index.json``), None if not recorded."""
    index = Path(folder) / PIPELINE_INDEX
    return task_of_class(index_class_name(read_json(index))) if index.is_file() else None


def load_pipeline(checkpoint: str | Path, task: str | None = None, torch_dtype: torch.dtype | None = None,
                  **kwargs) -> AudioGenerationPipeline:
    """Load ``checkpoint`` as the pipeline of a text task (tta / ttm of the task registry;
    default: the saved class, else tta)."""
    folder = task_folder(resolve_checkpoint(checkpoint, "pipeline"), task or "tta")
    saved = pipeline_task(folder)
    pipeline_class = get_task(task or (saved if saved in TEXT_TASKS else "tta"), text=True).pipeline_class()
    return pipeline_class.from_pretrained(folder, torch_dtype=torch_dtype, **kwargs)


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

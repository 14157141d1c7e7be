"""Speech enhancement in the tokenizer's latent space (``diffusers.DiffusionPipeline``).

noisy 16 kHz speech -> ``tokenizer.encode`` -> enhancer -> ``tokenizer.decode`` -> enhanced speech.
Two enhancers:

- ``LatentDenoiser`` (the seed paper's protocol): one forward pass, noisy latents -> clean latents.
- ``AudioGenModel`` built with ``audio_content_dim`` (UniFlow-Audio's SE task): the flow-matching
  DiT, conditioned on the noisy latents through the time-aligned path (one content frame per
  latent frame, output length = input length), sampled with the sway schedule, CFG 1.0 by default.

Two outputs: ``resynthesis`` (the seed paper's protocol: the decoded enhanced latents) and
``mask`` (our addition): the ratio of the decoded enhanced latents to the decoded noisy latents,
``M = min(1, |STFT(decode(z_enh))| / |STFT(decode(z_noisy))|)`` averaged over 3 x 3 time-frequency
bins, is applied to the noisy STFT, which keeps the noisy phase (so SI-SDR can improve;
resynthesised phase is not the original's) and cancels most of the decoder's own spectral
error, which appears in both terms. The smoothing was chosen on a validation mix of training
speakers (benchmarks/results/se_experiment.md): it raised both SI-SDR and PESQ.

``save_pretrained(dir)`` writes ``tokenizer/``, ``enhancer/``, ``scheduler/``, ``latent_normalizer/`` (if
any) and ``model_index.json``;
``SpeechEnhancementPipeline.from_pretrained(dir_or_hub_id)`` reads it back (folders saved before the
scheduler was a component get the default FlowMatchEulerDiscreteScheduler). Files of any length go
through :func:`dashflow.audio_stream.stream_file` in overlapping chunks.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.pipelines.checks import check_count, check_sampling
from dashflow.generation.pipelines.components import DashflowPipelineMixin, seeded_generators
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.sampling.flow import LatentNormalizer
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, SchedulerMixin
from torch import Tensor

from dashflow.codecs import LatentCodec
from dashflow.errors import DashflowError

OUTPUTS = ("resynthesis", "mask")
MASK_FFT, MASK_HOP = 512, 128  # 32 ms / 8 ms at 16 kHz


class SpeechEnhancementPipeline(DashflowPipelineMixin, DiffusionPipeline):
    """Components: ``tokenizer`` (a :class:`dashflow.codecs.LatentCodec`), ``enhancer`` (LatentDenoiser, or an
    AudioGenModel with an audio content encoder), ``scheduler`` (what steps a flow enhancer;
    default FlowMatchEulerDiscreteScheduler, set to the sway sigmas per call) and, for a flow
    enhancer trained on normalised latents, ``latent_normalizer`` (the noisy content is normalised
    and the sampled latents denormalised with it)."""

    own_components = (LatentDenoiser, AudioGenModel, LatentNormalizer)
    trained_component = "enhancer"
    folder_kind = "speech-enhancement pipeline"
    task = "se"
    _optional_components: ClassVar[list[str]] = ["scheduler", "latent_normalizer"]

    def __init__(self, tokenizer: LatentCodec, enhancer: LatentDenoiser | AudioGenModel,
                 scheduler: SchedulerMixin | None = None, latent_normalizer: LatentNormalizer | None = None):
        super().__init__()
        if not isinstance(enhancer, (LatentDenoiser, AudioGenModel)):
            raise DashflowError(f"the enhancer must be a LatentDenoiser or an AudioGenModel, not "
                                f"{type(enhancer).__name__}")
        cfg = enhancer.config
        if cfg.latent_dim != tokenizer.latent_dim or cfg.downsampling_ratio != tokenizer.samples_per_latent:
            raise DashflowError(f"mismatched pipeline components: the enhancer works on {cfg.latent_dim}-d "
                                f"latents of {cfg.downsampling_ratio} samples, the tokenizer gives "
                                f"{tokenizer.latent_dim}-d latents of {tokenizer.samples_per_latent}")
        if isinstance(enhancer, AudioGenModel) and enhancer.content_encoder.audio_encoder is None:
            raise DashflowError("the AudioGenModel enhancer needs audio_content_dim (an audio content encoder)")
        if latent_normalizer is not None and (isinstance(enhancer, LatentDenoiser)
                                              or latent_normalizer.mean.numel() != cfg.latent_dim):
            raise DashflowError(f"a latent normalizer needs a flow enhancer with its channel count ({cfg.latent_dim}), "
                                f"got {latent_normalizer.mean.numel()} channels for a {type(enhancer).__name__}")
        tokenizer.eval()
        enhancer.eval()
        scheduler = scheduler if scheduler is not None else FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        self.register_modules(tokenizer=tokenizer, enhancer=enhancer, scheduler=scheduler,
                              latent_normalizer=latent_normalizer)

    @property
    def sample_rate(self) -> int:
        return int(self.tokenizer.sample_rate)

    @property
    def samples_per_latent(self) -> int:
        return int(self.tokenizer.samples_per_latent)

    @property
    def kind(self) -> str:
        """``denoiser`` (one pass) or ``flow`` (sampled DiT)."""
        return "denoiser" if isinstance(self.enhancer, LatentDenoiser) else "flow"

    @torch.no_grad()
    def enhance_latents(self, latents: Tensor, mask: Tensor, *, num_inference_steps: int = 25,
                        guidance_scale: float = 1.0, sway_coef: float | None = -1.0, num_samples: int = 1,
                        generator: torch.Generator | list[torch.Generator] | None = None) -> Tensor:
        """Noisy latents [B, T, C] + mask [B, T] -> enhanced latents [B, T, C] (enhancer dtype).

        A flow enhancer draws ``num_samples`` latents per item (batched; a generator list holds
        ``num_samples * B``, sample j of item i at j * B + i) and returns their mean, an estimate of
        the posterior mean; the deterministic denoiser ignores it."""
        model = self.enhancer
        latents = latents.to(model.device, model.dtype)
        mask = mask.to(model.device).bool()
        if isinstance(model, LatentDenoiser):
            return model(latents, mask)
        check_count("num_samples", num_samples)
        flow = FlowMatching(model, normalizer=self.latent_normalizer)
        content = flow.to_model_space(latents.transpose(1, 2)).transpose(1, 2).to(model.dtype)
        durations = mask.float() / model.latent_rate  # one latent frame per content frame
        cond = model.condition(content, mask, content_kind="audio", durations=durations,
                               latent_lengths=mask.sum(1).clamp(min=1))  # once, shared by the samples
        clean = flow.sample(cond.repeat(num_samples), num_steps=num_inference_steps, guidance_scale=guidance_scale,
                            sway_coef=sway_coef, scheduler=self.scheduler, generator=generator)  # [N * B, C, T]
        clean = clean.unflatten(0, (num_samples, -1)).float().mean(0)
        return clean.transpose(1, 2).to(model.dtype)

    @torch.no_grad()
    def __call__(self, noisy: Tensor, lengths: Tensor | None = None, *, output: str = "resynthesis",
                 num_inference_steps: int = 25, guidance_scale: float = 1.0, sway_coef: float | None = -1.0,
                 num_samples: int = 1, seed: int | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None) -> Tensor:
        """noisy [B, S] at ``sample_rate`` (item b valid for ``lengths[b]`` samples) -> enhanced
        float32 CPU audio [B, S], zero past each item's length. ``output``: ``resynthesis`` or
        ``mask`` (see the module doc). Flow only: ``num_samples`` latents averaged per item (see
        :meth:`enhance_latents`); ``seed``: sample j of item i draws its noise from ``seed + i + j * B``;
        ``generator`` instead of a seed."""
        self.check_inputs(noisy, output, num_inference_steps, guidance_scale, sway_coef, num_samples)
        generator, _ = seeded_generators(num_samples * noisy.shape[0], generator, seed)
        size = noisy.shape[1]
        lengths = torch.full((noisy.shape[0],), size) if lengths is None else lengths.long().cpu()
        encoding = self.tokenizer.encode(noisy.to(self.tokenizer.device, self.tokenizer.dtype),
                                         lengths.to(self.tokenizer.device))
        clean = self.enhance_latents(encoding.latents, encoding.mask, num_inference_steps=num_inference_steps,
                                     guidance_scale=guidance_scale, sway_coef=sway_coef, num_samples=num_samples,
                                     generator=generator)
        wav = self.decode(clean, size)
        if output == "mask":
            wav = ratio_mask(wav, self.decode(encoding.latents, size), noisy.float().cpu())
        return wav * (torch.arange(size)[None] < lengths[:, None])

    def check_inputs(self, noisy: Tensor, output: str, num_inference_steps: int, guidance_scale: float,
                     sway_coef: float | None, num_samples: int) -> None:
        """Every check of :meth:`__call__`'s arguments, one DashflowError line each."""
        if output not in OUTPUTS:
            raise DashflowError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        if not isinstance(noisy, Tensor) or noisy.dim() != 2 or not noisy.is_floating_point() \
                or not bool(torch.isfinite(noisy).all()):
            shape = tuple(noisy.shape) if isinstance(noisy, Tensor) else type(noisy).__name__
            raise DashflowError(f"noisy audio must be a finite float tensor [B, S], got {shape}")
        check_sampling(num_inference_steps, guidance_scale, sway_coef)
        check_count("num_samples", num_samples)

    def decode(self, latents: Tensor, size: int) -> Tensor:
        """latents [B, T, C] -> float32 CPU audio [B, size] (trimmed or zero-padded)."""
        wav = self.tokenizer.decode(latents.to(self.tokenizer.dtype)).float().cpu()
        return torch.nn.functional.pad(wav, (0, max(0, size - wav.shape[1])))[:, :size]


def ratio_mask(enhanced: Tensor, reference: Tensor, noisy: Tensor, eps: float = 1e-8) -> Tensor:
    """Apply ``min(1, |E| / |R|)`` (STFTs of ``enhanced`` and ``reference`` [B, S]), averaged over
    3 x 3 bins, to the STFT of ``noisy`` [B, S] and resynthesise [B, S] with the noisy phase."""
    window = torch.hann_window(MASK_FFT)

    def stft(x: Tensor) -> Tensor:
        return torch.stft(x, MASK_FFT, MASK_HOP, window=window, return_complex=True)

    mask = (stft(enhanced).abs() / (stft(reference).abs() + eps)).clamp(max=1.0)
    mask = torch.nn.functional.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=False)
    return torch.istft(mask * stft(noisy), MASK_FFT, MASK_HOP, window=window, length=noisy.shape[1])

"""``FlowMatching``: the one object that owns the training loss and the sampler around a backbone
(as F5-TTS's ``CFM`` does, github.com/SWivid/F5-TTS ``src/f5_tts/model/cfm.py``).

Both halves share the conventions written once here and in :mod:`.flow`: the path
``x_sigma = (1 - sigma) x0 + sigma eps`` (:func:`~.flow.interpolate`), network time
``1000 * sigma``, the velocity target ``eps - x0``, the classifier-free-guidance null condition
(:meth:`Conditioning.drop`: context and time-aligned context zeroed, masks kept) and the latent
normaliser (latents are normalised on the way in and denormalised on the way out).

Sampling (``sample``) integrates with the Euler scheduler from noise to latents and steers it:

- guidance ``v = v_u + w (v_c - v_u)`` (``v_u``: the null condition's velocity), run as one
  ``[uncond; cond]`` batch; a ``negative`` condition adds a third branch and a term
  ``- w_n (v_n - v_u)`` (composable-diffusion negation, Liu et al. 2022, arXiv:2206.01714). We
  chose it over replacing ``v_u`` by ``v_n`` (diffusers' and stable-audio-tools' negative
  prompt): on the demo model, with a negative of a related class (violin / flute), replacement
  at CFG 5 also lost the prompt's class, while the extra term with ``w_n = 1`` lowered the
  negative class and kept the prompt's (``benchmarks/results/steer/report.md``);
- ``init`` latents with ``strength`` s in (0, 1]: the schedule is scaled to start at sigma = s and
  the init latents are noised to that level (audio-to-audio; s = 1 is plain generation);
- ``keep`` [B, T] weights in [0, 1]: after every step the init latents, noised to the new level
  with the same noise, are re-imposed with these weights (inpainting, continuation, the
  crossfades of long-form windows); at sigma = 0 the result is ``keep x0 + (1 - keep) x``;
- ``callback(step_index, timestep, tensors) -> dict`` after every step, with the tensors named in
  ``callback_inputs`` (``latents``: the state after the step, ``velocity``: the guided velocity);
  a returned ``latents`` replaces the state (diffusers' ``callback_on_step_end``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from accelerate.utils import extract_model_from_parallel
from dashflow.generation.model.audiogen import AudioGenModel, Conditioning, time_aligned_flags
from dashflow.generation.model.content_adapter import (
    global_duration_target,
    local_duration_target,
)
from dashflow.generation.sampling.flow import (
    FlowMatchingConfig,
    LatentNormalizer,
    check_config,
    interpolate,
    masked_mse,
    sample_noise_levels,
)
from dashflow.generation.sampling.sampler import NOOP_SIGMA, make_scheduler, sway_sigmas
from diffusers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from dashflow.errors import DashflowError

CALLBACK_INPUTS = ("latents", "velocity")
StepCallback = Callable[[int, Tensor, dict[str, Tensor]], dict[str, Tensor]]


def stack_conditions(*conditions: Conditioning) -> Conditioning:
    """The conditions stacked along the batch; contexts of different lengths are zero-padded (masked)."""
    length = max(cond.context.shape[1] for cond in conditions)

    def padded(cond: Conditioning) -> Conditioning:
        extra = length - cond.context.shape[1]
        if not extra:
            return cond
        return Conditioning(torch.nn.functional.pad(cond.context, (0, 0, 0, extra)),
                            torch.nn.functional.pad(cond.context_mask, (0, extra)),
                            cond.time_aligned_context, cond.latent_mask)

    stacked = padded(conditions[0])
    for cond in conditions[1:]:
        stacked = stacked.cat(padded(cond))
    return stacked


class FlowMatching:
    """The flow-matching objective and sampler around ``model`` (an AudioGenModel, possibly
    wrapped by DDP / Accelerate for training). ``config`` (default: the reference, with
    ``normalize_latents`` set when a ``normalizer`` is given) and ``normalizer`` (a fitted
    LatentNormalizer, or None for raw latents) must agree."""

    def __init__(self, model: torch.nn.Module, config: FlowMatchingConfig | None = None,
                 normalizer: LatentNormalizer | None = None):
        config = config or FlowMatchingConfig(normalize_latents=normalizer is not None)
        check_config(config)
        if config.normalize_latents != (normalizer is not None):
            raise DashflowError("normalize_latents=True needs a LatentNormalizer, and a normalizer "
                                "needs normalize_latents=True")
        self.model, self.config, self.normalizer = model, config, normalizer

    @property
    def backbone(self) -> AudioGenModel:
        """The model without its training wrappers."""
        return extract_model_from_parallel(self.model)

    def to_model_space(self, latents: Tensor) -> Tensor:
        """Tokenizer latents [B, C, T] -> the float32 latents the model works on (normalised)."""
        return latents.float() if self.normalizer is None else self.normalizer.normalize(latents.float())

    def from_model_space(self, latents: Tensor) -> Tensor:
        """Inverse of :meth:`to_model_space`."""
        return latents if self.normalizer is None else self.normalizer.denormalize(latents)

    # --- training -------------------------------------------------------------------------------

    def loss(self, latents: Tensor, latent_mask: Tensor, content: Tensor, content_mask: Tensor, *,
             content_kind: str = "text", is_time_aligned: Tensor | None = None, durations: Tensor | None = None,
             instruction: Tensor | None = None, instruction_mask: Tensor | None = None,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One training loss evaluation; the (possibly wrapped) model is called once.

        latents [B, C, T] clean latents (tokenizer output transposed), latent_mask [B, T],
        content [B, L, D_in] + content_mask [B, L] (text-encoder states, or noisy latents with
        ``content_kind="audio"``), durations [B, L] seconds per token for time-aligned items.
        Returns ``loss`` (weighted total), ``flow``, ``local_duration``, ``global_duration``.
        """
        config, core = self.config, self.backbone
        x0 = self.to_model_space(latents)
        b, c, _ = x0.shape
        device = x0.device
        latent_mask = latent_mask.bool()
        lengths = latent_mask.sum(1)
        sigmas, timesteps = sample_noise_levels(b, config, channels=c, frames=lengths,
                                                generator=generator, device=device)
        noise = randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=torch.float32)
        noisy = interpolate(x0, noise, sigmas[:, None, None])
        drop = (torch.rand(b, generator=generator) < config.cfg_dropout).to(device)
        ta = time_aligned_flags(is_time_aligned, content, content_kind)
        out = self.model(noisy.to(core.dtype), timesteps, content, content_mask, latent_mask,
                         content_kind=content_kind, is_time_aligned=ta, durations=durations,
                         instruction=instruction, instruction_mask=instruction_mask, drop_condition=drop)
        flow = masked_mse(out.velocity, noise - x0, latent_mask)

        cfg = core.config
        local_pred = out.local_duration.float()
        if durations is not None and bool(ta.any()):
            m = content_mask.to(torch.float32)
            target = local_duration_target(durations.float(), cfg.frame_resolution, cfg.duration_offset)
            per_item = ((local_pred - target).pow(2) * m).sum(1) / m.sum(1).clamp(min=1)
            local = (per_item * ta).sum() / ta.sum()
        else:  # no targets: a zero that keeps the predictor in the graph (DDP needs every grad)
            local = local_pred.sum() * 0.0
        global_target = global_duration_target(lengths, core.latent_rate, cfg.duration_offset)
        global_loss = torch.nn.functional.mse_loss(out.global_duration.float(), global_target)
        total = flow + config.local_duration_weight * local + config.global_duration_weight * global_loss
        return {"loss": total, "flow": flow, "local_duration": local, "global_duration": global_loss}

    # --- sampling -------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, cond: Conditioning, *, num_steps: int = 25, guidance_scale: float = 5.0,
               negative: Conditioning | None = None, negative_scale: float = 1.0, sway_coef: float | None = -1.0,
               scheduler: SchedulerMixin | None = None,
               generator: torch.Generator | list[torch.Generator] | None = None,
               noise: Tensor | None = None, init: Tensor | None = None, strength: float = 1.0,
               keep: Tensor | None = None, callback: StepCallback | None = None,
               callback_inputs: Sequence[str] = ("latents",), skip_final_step: bool = True,
               truncate_timesteps: bool = True, progress: bool = False) -> Tensor:
        """Integrate from noise to tokenizer latents [B, C, T] (``T = cond.latent_mask.shape[1]``).

        guidance_scale 1 runs the conditional pass only (5.0 for TTA/TTM, 1.0 for SE); ``negative``
        (the negative prompt's conditioning, same batch and frames) adds its branch with weight
        ``negative_scale`` and needs guidance > 1. noise ``randn[B, C, T]`` from ``generator``
        unless ``noise`` is given; frames past an item's length are computed but masked out of
        attention (trim them with ``cond.latent_mask``). ``scheduler`` (a pipeline's component; default
        FlowMatchEulerDiscreteScheduler) is copied and set to the sway sigmas (times ``strength``).
        ``init`` [B, C, T] tokenizer latents, ``strength`` and ``keep`` [B, T] steer the result
        (module doc). ``skip_final_step`` (default) leaves out the last call when its step is a
        no-op (|sigma| < 1e-6: the sway schedule's last sigma is 0); False makes the official
        N + 1 calls. ``truncate_timesteps`` feeds the backbone ``trunc(1000 sigma)`` as the
        reference does (training only sees integer timesteps); False the exact value.
        """
        model = self.backbone
        if guidance_scale < 1:
            raise DashflowError(f"guidance_scale must be >= 1 (1 = no guidance), not {guidance_scale}")
        if negative is not None and guidance_scale == 1:
            raise DashflowError("a negative prompt needs guidance_scale > 1 (at 1 the unconditional branch is not run)")
        if not 0 < strength <= 1:
            raise DashflowError(f"strength must be in (0, 1], not {strength}")
        if (strength != 1 or keep is not None) and init is None:
            raise DashflowError("strength and keep steer init latents: pass init")
        unknown = sorted(set(callback_inputs) - set(CALLBACK_INPUTS))
        if unknown:
            raise DashflowError(f"callback tensor inputs {unknown} are not offered "
                                f"(choose from {list(CALLBACK_INPUTS)})")
        b, t = cond.latent_mask.shape
        device, dtype = model.device, model.dtype
        shape = (b, model.config.latent_dim, t)
        if noise is None:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(noise.shape) != shape:
            raise DashflowError(f"noise shape {tuple(noise.shape)} != {shape}")
        for name, tensor, want in (("init", init, shape), ("keep", keep, (b, t))):
            if tensor is not None and tuple(tensor.shape) != want:
                raise DashflowError(f"{name} shape {tuple(tensor.shape)} != {want}")
        latents = noise.to(device=device, dtype=torch.float32)
        x0 = eps = weights = None
        sigmas = sway_sigmas(num_steps, sway_coef)
        scheduler = make_scheduler(sigmas if strength == 1 else sigmas * strength, scheduler, device)
        if init is not None:
            if scheduler.order != 1 or len(scheduler.sigmas) != len(sigmas) + 1:
                raise DashflowError(f"{type(scheduler).__name__} cannot steer from init latents: use a "
                                    "first-order scheduler that takes custom sigmas (FlowMatchEulerDiscreteScheduler)")
            x0, eps = self.to_model_space(init.to(device)), latents
            latents = interpolate(x0, eps, scheduler.sigmas[0])
            weights = None if keep is None else keep.to(device, torch.float32)[:, None, :]
        if guidance_scale == 1:
            branches, batch_cond = 1, cond
        elif negative is None:
            branches, batch_cond = 2, stack_conditions(cond.null(), cond)
        else:
            branches, batch_cond = 3, stack_conditions(cond.null(), cond, negative)
        timesteps = scheduler.timesteps
        if skip_final_step and abs(float(scheduler.sigmas[-2])) < NOOP_SIGMA:
            timesteps = timesteps[:-1]
        prepared = model.prepare(batch_cond)  # what every step shares: computed once
        for i, step_t in enumerate(tqdm(timesteps, delay=1.0, disable=not progress, desc="sampling", leave=False)):
            x_in = torch.cat([latents] * branches) if branches > 1 else latents
            t_in = torch.trunc(step_t) if truncate_timesteps else step_t
            v = model.velocity(x_in.to(dtype), t_in.expand(x_in.shape[0]), batch_cond, prepared).float()
            if branches > 1:
                v_uncond, v_cond, *v_negative = v.chunk(branches)
                v = v_uncond + guidance_scale * (v_cond - v_uncond)
                if v_negative:
                    v = v - negative_scale * (v_negative[0] - v_uncond)
            latents = scheduler.step(v, step_t, latents).prev_sample
            if weights is not None:
                known = interpolate(x0, eps, scheduler.sigmas[scheduler.step_index])
                latents = weights * known + (1 - weights) * latents
            if callback is not None:
                tensors = {"latents": latents, "velocity": v}
                returned = callback(i, step_t, {name: tensors[name] for name in callback_inputs})
                if not isinstance(returned, dict):
                    raise DashflowError(f"callback_on_step_end must return a dict, not {type(returned).__name__}")
                latents = returned.get("latents", latents)
        return self.from_model_space(latents)

"""What a text-conditioned call asks for: the checks of its steering arguments (negative prompts,
long-form windows, input audio) and the :class:`Request` that ``check_inputs`` hands the call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashflow.generation.pipelines.checks import check_seconds, is_number
from dashflow.generation.pipelines.steering import MODES, Steering, check_clip, check_regions

from dashflow.errors import DashflowError

DEFAULT_STRENGTH = 0.8  # audio-to-audio without a strength (diffusers' image-to-image default)


@dataclass
class Request:
    """One call's checked arguments; every list holds one entry per output (each prompt repeated
    ``num_waveforms_per_prompt`` times)."""

    prompts: list[str]  # as the text encoder sees them
    negatives: list[str] | None
    frames: list[int | None]  # requested latent frames (None: predicted; unused with steering)
    steering: Steering | None
    window: int | None  # latent frames per window (long-form), None: one pass
    overlap: int | None
    length_requested: Any  # the length argument as given


def check_negatives(negative_prompt, negative_guidance_scale, count: int, guidance_scale: float) -> list[str] | None:
    """``negative_prompt`` (one for all ``count`` prompts, or one each) as a list, or None."""
    if not is_number(negative_guidance_scale) or negative_guidance_scale < 0:
        raise DashflowError(f"negative_guidance_scale must be a number >= 0, got {negative_guidance_scale!r}")
    if negative_prompt is None:
        return None
    if guidance_scale == 1:
        raise DashflowError("negative_prompt needs guidance_scale > 1: at 1 the negative branch is not run")
    negatives = [negative_prompt] * count if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != count:
        raise DashflowError(f"{len(negatives)} negative prompts for {count} prompts")
    return negatives


def check_window(window_length_in_s, window_overlap_in_s, latent_rate: float,
                 max_seconds: float) -> tuple[int | None, int | None]:
    """Window and overlap in latent frames (overlap default: half the window, as much context as
    new audio; on the demo a third left a burst per window in event-like sounds), or Nones."""
    if window_length_in_s is None:
        if window_overlap_in_s is not None:
            raise DashflowError("window_overlap_in_s needs window_length_in_s")
        return None, None
    check_seconds("window_length_in_s", window_length_in_s, max_seconds)
    overlap_s = window_length_in_s / 2 if window_overlap_in_s is None else window_overlap_in_s
    window = round(window_length_in_s * latent_rate)
    overlap = round(overlap_s * latent_rate) if is_number(overlap_s) else 0
    if not 0 < overlap < window:
        raise DashflowError(f"window_overlap_in_s {window_overlap_in_s!r} must be in (0, window_length_in_s) "
                            "and at least one latent frame")
    return window, overlap


def check_steering(clips: dict[str, Any], strength, inpaint_regions, length, *, sample_rate: int, latent_rate: float,
                   max_seconds: float, limit: float, min_samples: int, windowed: bool) -> Steering | None:
    """The call's input clip (``clips``: ``init_audio`` / ``inpaint_audio`` / ``continue_audio``
    -> the argument) and its mode (see :mod:`.steering`), or None. ``max_seconds``: the longest
    clip; ``limit``: the longest output; ``length``: the call's length argument."""
    given = {name: audio for name, audio in clips.items() if audio is not None}
    if len(given) > 1:
        raise DashflowError(f"pass one of {', '.join(clips)}, not {' and '.join(given)}")
    if strength is not None and "init_audio" not in given:
        raise DashflowError("strength applies to init_audio (audio-to-audio)")
    if inpaint_regions is not None and "inpaint_audio" not in given:
        raise DashflowError("inpaint_regions apply to inpaint_audio")
    if not given:
        return None
    (name, audio), = given.items()
    wav = check_clip(audio, name, sample_rate, max_seconds, min_samples)
    mode, seconds = MODES[name], wav.numel() / sample_rate
    if mode == "continue":
        if not is_number(length):
            raise DashflowError("continue_audio needs audio_length_in_s: the seconds to add (one number)")
        check_seconds("the continuation's audio_length_in_s", length, limit - seconds)
        return Steering(mode, wav, added_frames=max(1, round(length * latent_rate)))
    if length is not None:
        raise DashflowError(f"{name} sets the output's length: leave audio_length_in_s unset")
    if windowed:
        raise DashflowError("window_length_in_s applies to plain generation and continue_audio")
    if mode == "inpaint":
        return Steering(mode, wav, regions=check_regions(inpaint_regions, seconds))
    strength = DEFAULT_STRENGTH if strength is None else strength
    if not is_number(strength) or not 0 < strength <= 1:
        raise DashflowError(f"strength must be in (0, 1] (1 = ignore the init audio), got {strength!r}")
    return Steering(mode, wav, strength=float(strength))

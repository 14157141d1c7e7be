"""Argument checks the pipelines' ``check_inputs`` share: each raises one DashflowError line."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from dashflow.errors import DashflowError

OUTPUT_TYPES = ("np", "pt")


def is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_sampling(num_inference_steps: int, guidance_scale: float, sway_coef: float | None) -> None:
    """Steps (an integer >= 1), guidance (>= 1, 1 = off) and the sway coefficient (a number or None)."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise DashflowError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if not is_number(guidance_scale) or guidance_scale < 1:
        raise DashflowError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale!r}")
    if sway_coef is not None and not is_number(sway_coef):
        raise DashflowError(f"sway_coef must be a finite number or None, got {sway_coef!r}")


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise DashflowError(f"output_type must be one of {', '.join(map(repr, OUTPUT_TYPES))}, got {output_type!r}")


def check_count(name: str, value: int) -> None:
    """A whole number >= 1 (``num_waveforms_per_prompt``, ``num_samples``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DashflowError(f"{name} must be an integer >= 1, got {value!r}")


def check_seconds(name: str, value: float, upper: float) -> None:
    """A length in seconds in (0, upper]."""
    if not is_number(value) or not 0 < value <= upper:
        raise DashflowError(f"{name} {value!r} s is outside (0, {upper:g}] s")


def check_callback(callback: Callable | None, tensor_inputs: Sequence[str], offered: Sequence[str]) -> None:
    """diffusers' ``callback_on_step_end`` (a callable or None) and the tensors it asks for."""
    if callback is not None and not callable(callback):
        raise DashflowError(f"callback_on_step_end must be callable, not {type(callback).__name__}")
    unknown = [name for name in tensor_inputs if name not in offered]
    if unknown:
        raise DashflowError(f"callback_on_step_end_tensor_inputs {unknown} are not offered "
                            f"(choose from {list(offered)})")

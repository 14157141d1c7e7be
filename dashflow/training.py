"""Recipe plumbing shared by every training script: Accelerator, LR schedule, checkpoints, logs.

Checkpoints are ``<output_dir>/step_0001000/`` folders holding ``accelerator.save_state``
(models as safetensors, optimizers, schedulers, per-process RNG states), ``trainer_state.json``
(the step) and ``config.yaml`` (the resolved config). Each is written to a hidden temporary
folder and renamed into place, so a folder named ``step_*`` is always complete. The data
position is the step itself: loaders from :mod:`dashflow.data` restart exactly at a step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from omegaconf import OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from dashflow.audio import atomic_path
from dashflow.config import save_config
from dashflow.errors import DashflowError, first_line
from dashflow.outputs import check_writable

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step_"
STATE_NAME = "trainer_state.json"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"


# ----------------------------------------------------------------------------- accelerator

def build_accelerator(output_dir: str | os.PathLike, mixed_precision: str = "auto",
                      log_with: str | None = "tensorboard",
                      gradient_accumulation_steps: int = 1, cpu: bool = False) -> Accelerator:
    """An Accelerator logging to ``<output_dir>/logs`` (TensorBoard by default).

    ``mixed_precision`` "auto" means bf16 on CUDA and none elsewhere; "no", "bf16", "fp16"
    are passed through (an ``accelerate launch --mixed_precision`` flag is overridden).
    ``cpu`` forces the CPU. Schedulers step once per call (not once per process). Processes
    launched (``WORLD_SIZE``) that did not join one process group (``accelerate launch
    --multi_gpu`` on a CPU-only machine without ``ACCELERATE_USE_CPU=1``) raise DashflowError.
    Denormal floats are flushed to zero on the CPU: optimiser states and small weights decay
    into that range, where CPU arithmetic is tens of times slower (measured: 40x per GAN step).
    """
    check_writable(output_dir, folder=True, flag="train.output_dir")
    torch.set_flush_denormal(True)
    mixed_precision = str(mixed_precision).lower()
    if mixed_precision in ("false", "none"):  # YAML reads a bare `no` as false
        mixed_precision = "no"
    elif mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
    project = ProjectConfiguration(project_dir=str(output_dir),
                                   logging_dir=str(Path(output_dir) / "logs"))
    accelerator = Accelerator(mixed_precision=mixed_precision, log_with=log_with,
                              project_config=project, step_scheduler_with_optimizer=False,
                              gradient_accumulation_steps=gradient_accumulation_steps, cpu=cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        raise DashflowError(f"{launched} processes were launched but they did not form a process group, so "
                            "each would train alone; on a machine without GPUs set ACCELERATE_USE_CPU=1 "
                            "(or launch with --cpu --num_processes 1)")
    return accelerator


def init_trackers(accelerator: Accelerator, name: str, config: Any) -> None:
    """Start the trackers with the config flattened to scalar hyper-parameters."""
    raw = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    accelerator.init_trackers(name, config=_flatten(raw))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# ----------------------------------------------------------------------------- schedule

class CosineWithWarmup:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine from 1 to ``final_ratio``
    at ``total_steps`` (held there after). A plain object, so schedulers save it as numbers."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.1):
        self.total_steps, self.warmup_steps, self.final_ratio = total_steps, warmup_steps, final_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ConfiguredLambdaLR(LambdaLR):
    """A LambdaLR whose checkpoint restores only its position (the step).

    The peak LRs and the :class:`CosineWithWarmup` settings stay those of the config it was built
    from: an unchanged config resumes exactly, and a run resumed with a new ``max_steps`` or
    learning rate follows the new schedule from the step it reached (said in one warning line)
    instead of silently keeping the checkpoint's.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        configured = self.state_dict()
        changed = [f"{key} {state_dict.get(key)} -> {configured[key]}" for key in ("base_lrs", "lr_lambdas")
                   if state_dict.get(key) != configured[key]]
        super().load_state_dict({**state_dict, "base_lrs": configured["base_lrs"],
                                 "lr_lambdas": configured["lr_lambdas"]})
        lrs = [base * schedule(self.last_epoch) for base, schedule in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs
        if changed:
            logger.warning("resuming with the configured LR schedule, not the checkpoint's: %s", "; ".join(changed))


def cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                    final_ratio: float = 0.1) -> ConfiguredLambdaLR:
    """Cosine decay to ``final_ratio`` of the peak LR over ``total_steps``, after warm-up."""
    return ConfiguredLambdaLR(optimizer, CosineWithWarmup(total_steps, warmup_steps, final_ratio))


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders under ``output_dir``, oldest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name) and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def find_checkpoint(output_dir: str | os.PathLike, resume: str) -> Path | None:
    """``resume``: "" (start fresh), "latest" (newest under ``output_dir``, or none) or a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise DashflowError(f"{path}: not a checkpoint folder (no {STATE_NAME})")
    return path


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, step: int,
                    config: Any = None, keep_last: int = 3) -> Path:
    """Save everything a resume needs as ``step_XXXXXXX`` (call on every process).

    Keeps the newest ``keep_last`` checkpoints (0 keeps all). Returns the folder.
    """
    final = checkpoint_path(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps({"step": step}) + "\n")
        if config is not None:
            save_config(config, tmp / CONFIG_NAME)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if keep_last > 0:
            for old in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> int:
    """Restore models, optimizers, schedulers and RNG states from ``path``; returns its step.

    A truncated, missing or refused file (pickles never load) is one DashflowError line.
    """
    path = Path(path)
    try:
        step = int(json.loads((path / STATE_NAME).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DashflowError(f"{path / STATE_NAME}: unreadable trainer state ({exc})") from None
    try:
        accelerator.load_state(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors, torch.load(weights_only) refusals, missing files
        raise DashflowError(f"{path}: damaged checkpoint ({type(exc).__name__}: {first_line(exc)})") from None
    return step


def resume_training(accelerator: Accelerator, output_dir: str | os.PathLike, resume: str) -> int:
    """Restore a run as ``resume`` says ("" fresh, "latest", or a checkpoint folder); returns the
    step to continue from (0 when fresh).

    Folders of saves killed midway (``.step_*.tmp``) are removed first. With "latest" a damaged
    newest checkpoint is named in one warning line and the next older one is loaded instead (all
    of its state replaces whatever the damaged one had restored); no readable checkpoint at all is
    a DashflowError, as is a named checkpoint that is damaged.
    """
    if accelerator.is_main_process:
        for stale in Path(output_dir).glob(f".{CHECKPOINT_PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    candidates = ([find_checkpoint(output_dir, resume)] if resume and resume != "latest"
                  else list(reversed(list_checkpoints(output_dir))) if resume else [])
    for path in candidates:
        try:
            step = load_checkpoint(accelerator, path)
        except DashflowError as exc:
            if resume != "latest":
                raise
            if accelerator.is_main_process:
                print(f"warning: skipping {exc}", file=sys.stderr)
            continue
        accelerator.print(f"resumed from {path} at step {step}")
        return step
    if candidates:
        raise DashflowError(f"{output_dir}: none of its {len(candidates)} checkpoints can be read; "
                            f"move them away to start fresh")
    return 0


# ----------------------------------------------------------------------------- logging

class MetricsLog:
    """Append-only JSON-lines log of ``{"step": n, ...}`` on the main process.

    Opening it at ``start_step`` drops lines logged after that step by a run that died before
    its next checkpoint, so the file always reads as one uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike, start_step: int = 0, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled and self.path.is_file():
            kept = [line for line, record in _parsed_lines(self.path) if record["step"] <= start_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")


def _parsed_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of every whole line of a MetricsLog file; a line torn by a kill is dropped."""
    parsed = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            parsed.append((line, record))
    return parsed


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a :class:`MetricsLog` file."""
    return [record for _, record in _parsed_lines(Path(path))]


def _tensorboard(accelerator: Accelerator):
    if not accelerator.is_main_process:
        return None
    try:
        return accelerator.get_tracker("tensorboard", unwrap=True)
    except (ValueError, KeyError):
        return None


def log_audio(accelerator: Accelerator, tag: str, wav: torch.Tensor, step: int,
              sample_rate: int = 16000) -> None:
    """Write one clip ``wav`` [S] to TensorBoard (main process; no-op without the tracker)."""
    writer = _tensorboard(accelerator)
    if writer is not None:
        clip = wav.detach().float().cpu().clamp(-1, 1).reshape(1, -1)
        writer.add_audio(tag, clip, step, sample_rate=sample_rate)


def log_spectrogram(accelerator: Accelerator, tag: str, spec: torch.Tensor, step: int) -> None:
    """Write a log-scale spectrogram ``spec`` [F, T] (low frequencies first) as a coloured
    image (magma, low frequencies at the bottom) to TensorBoard."""
    writer = _tensorboard(accelerator)
    if writer is None:
        return
    from matplotlib import colormaps

    image = spec.detach().float().cpu().flip(0)
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
    writer.add_image(tag, colormaps["magma"](image.numpy())[..., :3], step, dataformats="HWC")

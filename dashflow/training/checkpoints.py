"""Checkpoints: ``<output_dir>/step_0001000/`` folders holding ``accelerator.save_state`` (models
as safetensors, optimizers, schedulers, per-process RNG states), ``trainer_state.json`` (the step)
and ``config.yaml`` (the resolved config). Each is written to a hidden temporary folder and
renamed into place, so a folder named ``step_*`` is always complete. The data position is the
step itself: loaders from :mod:`dashflow.data` restart exactly at a step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from dashflow.config import save_config
from dashflow.errors import DashflowError, first_line

CHECKPOINT_PREFIX = "step_"
STATE_NAME = "trainer_state.json"
CONFIG_NAME = "config.yaml"


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



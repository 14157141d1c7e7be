"""The Accelerator of a training run."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from dashflow.errors import DashflowError
from dashflow.outputs import check_writable


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



def is_due(step: int, every: int, max_steps: int) -> bool:
    """Whether a periodic action (checkpoint, samples, validation) runs after ``step``: every
    ``every`` steps (0 = never) and after the last one."""
    return every > 0 and (step % every == 0 or step == max_steps)

"""The training toolkit every recipe builds from, each piece written once.

Recipes stay explicit loops (``recipes/*.py``, read top to bottom); what they share lives here:

- ``config``: the ``train`` / ``optim`` / ``ema`` config sections and their checks;
- ``accelerator``: the Accelerator of a run (bf16 on CUDA, trackers, one process group);
- ``optim``: LR schedules that resume exactly, and one optimizer step (clip, step, schedule,
  zero, EMA) usable for every optimizer of a recipe (the tokenizer's GAN has two);
- ``ema``: the EMA of a model's parameters, saved into every checkpoint as safetensors;
- ``checkpoints``: atomic ``step_*`` folders, rotation and resume (falls back past damage);
- ``logs``: progress bar, TensorBoard scalars / audio / spectrograms, ``metrics.jsonl``;
- ``export``: the trained weights (raw and EMA) as pipelines, frozen parts written once;
- ``run``: the frame of a run (seeded Accelerator; model, optimizer, schedule and EMA prepared and
  resumed; one optimizer step over the micro-batches; due checkpoints; the export at the end).
"""

from dashflow.training.accelerator import build_accelerator, is_due
from dashflow.training.checkpoints import (
    CHECKPOINT_PREFIX,
    CONFIG_NAME,
    STATE_NAME,
    checkpoint_path,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resume_training,
    save_checkpoint,
)
from dashflow.training.config import EMAConfig, OptimConfig, TrainConfig, check_training
from dashflow.training.ema import attach_ema, load_ema, save_ema
from dashflow.training.export import (
    export_pipelines,
    gather_weights,
    model_from_weights,
)
from dashflow.training.logs import (
    METRICS_NAME,
    MetricsLog,
    RunLog,
    init_trackers,
    log_audio,
    log_spectrogram,
    read_metrics,
)
from dashflow.training.run import TrainingRun, prepare_run, split_batch, start_accelerator
from dashflow.training.optim import (
    ConfiguredLambdaLR,
    CosineWithWarmup,
    adamw,
    cosine_schedule,
    lr_schedule,
    optimizer_step,
)

__all__ = ["CHECKPOINT_PREFIX", "CONFIG_NAME", "METRICS_NAME", "STATE_NAME", "ConfiguredLambdaLR",
           "CosineWithWarmup", "EMAConfig", "MetricsLog", "OptimConfig", "RunLog", "TrainConfig", "TrainingRun", "adamw",
           "attach_ema", "build_accelerator", "check_training", "checkpoint_path", "cosine_schedule",
           "export_pipelines", "find_checkpoint", "gather_weights", "init_trackers", "is_due",
           "list_checkpoints", "load_checkpoint", "load_ema", "log_audio", "log_spectrogram", "lr_schedule",
           "model_from_weights", "optimizer_step", "prepare_run", "read_metrics", "resume_training",
           "save_checkpoint", "save_ema", "split_batch", "start_accelerator"]

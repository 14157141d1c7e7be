"""Train one DiT on several tasks at once (UniFlow-Audio): text-to-audio, text-to-music and latent
speech enhancement, each batch from one task drawn by weight.

    accelerate launch recipes/unified.py --config recipes/configs/unified/tiny.yaml \\
        tasks.0.train=audio.jsonl tasks.1.train=music.jsonl tasks.2.train=speech.jsonl \\
        tasks.2.noise=noise.jsonl model.tokenizer=TOKENIZER_DIR [dotted.key=value ...]

One optimizer step: the step's task (:class:`~dashflow.generation.training.unified.TaskMixture`,
the same on every process and after a resume), then every process takes its share of that task's
global batch and accumulates the flow-matching loss of each micro-batch: captions through the
frozen text encoder for tta / ttm, the noisy speech's latents on the time-aligned path for se,
each clip with one of its task's instruction phrasings. Losses are logged per task
(``loss_<task>``: the mean over the steps since the last log that drew it). Checkpoints resume
exactly. The raw and EMA weights are exported as one pipeline per task in one folder,
``<output_dir>/final/{raw,ema}`` (``generate --checkpoint .../ema --task ttm``, ``enhance
--checkpoint .../ema``): each task's settings in ``<task>/``, the DiT and every other shared
component once beside them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dashflow.generation.pipelines.components import save_task_pipelines
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.training.text_to_audio import build_model, load_frozen, make_pipeline, prepare_normalizer
from dashflow.generation.training.unified import (
    LOGGED,
    Instructions,
    TaskMixture,
    UnifiedConfig,
    check_unified_settings,
    instructions_of,
    mixture_batches,
    task_flow,
    task_loaders,
    unified_micro_batch_loss,
    unified_model_config,
)
from omegaconf import OmegaConf

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.training import RunLog, gather_weights, model_from_weights, prepare_run, start_accelerator


def main(argv: list[str] | None = None) -> int:
    cfg: UnifiedConfig = recipe_config(UnifiedConfig, "Train one DiT on several tasks with Accelerate.",
                                       "recipes/configs/unified", argv)
    check_unified_settings(cfg)
    accumulation = cfg.optim.gradient_accumulation_steps
    flow = OmegaConf.to_object(cfg.flow)
    tasks = {task.name: task for task in cfg.tasks}
    accelerator = start_accelerator(cfg.train, accumulation)  # same initial weights on every process

    # frozen tokenizer + text encoder; each task's instructions; trainable DiT, optimiser, schedule, EMA; resume
    frozen = load_frozen(cfg, accelerator.device)
    model = build_model(unified_model_config(cfg, frozen.tokenizer.latent_dim), frozen.tokenizer, frozen.text.encoder)
    model_config = dict(model.config)
    instructions = {name: Instructions.encode(instructions_of(task), frozen.text.encoder)
                    for name, task in tasks.items()}
    run = prepare_run(accelerator, model, cfg.optim, cfg.train, cfg, cfg.ema)

    # the task of every step; the latent normalizer (fitted on the first steps' batches); one loader
    # per task, each resumed at the batches it has served
    mixture = TaskMixture(list(tasks), [task.weight for task in cfg.tasks], cfg.train.seed)
    frozen.normalizer = prepare_normalizer(cfg, frozen.tokenizer, run.start_step > 0, accelerator.is_main_process,
                                           lambda: mixture_batches(cfg, mixture, frozen.tokenizer))
    batches = task_loaders(cfg, frozen.tokenizer, cfg.data.batch_size * accumulation,
                           mixture.batches_before(run.start_step), accelerator.process_index,
                           accelerator.num_processes)
    log = RunLog(accelerator, "unified", cfg, cfg.train.output_dir, cfg.train.max_steps, cfg.train.log_every,
                 run.start_step)

    for step in run.steps():
        name = mixture.task_at(step)
        losses, stats = run.step(next(batches[name]), lambda micro, position: unified_micro_batch_loss(
            run.model, name, micro, frozen, instructions[name], task_flow(flow, name), cfg.train.seed, step,
            position, accelerator), LOGGED)
        log.step(step, losses, averaged={f"loss_{name}": losses["loss"]}, **stats)
        run.checkpoint(step)
    log.close()

    # one pipeline per task for the raw and the EMA weights, in one folder that stores the DiT once
    written = []
    for kind, average in (("raw", None), ("ema", run.ema)) if run.ema is not None else (("raw", None),):
        weights = gather_weights(accelerator, run.model, average)
        if accelerator.is_main_process:
            trained = model_from_weights(type(accelerator.unwrap_model(run.model)), model_config, weights)
            save_task_pipelines({name: SpeechEnhancementPipeline(frozen.tokenizer, trained,
                                                                 latent_normalizer=frozen.normalizer)
                                 if name == "se" else
                                 make_pipeline(name, trained, frozen, instruction=instructions_of(task)[0])
                                 for name, task in tasks.items()}, Path(cfg.train.output_dir) / "final" / kind)
            written.append(Path(cfg.train.output_dir) / "final" / kind)
    if accelerator.is_main_process:
        accelerator.print(f"saved {', '.join(map(str, written))} (tasks {', '.join(tasks)})")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

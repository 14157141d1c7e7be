"""Train the text-to-audio or text-to-music DiT (UniFlow-Audio / Dasheng-AudioGen) on a codec's latents
(the DashengTokenizer's by default).

    accelerate launch recipes/tta.py --config recipes/configs/tta/paper.yaml \\
        data.train=audiocaps/train.jsonl model.tokenizer=TOKENIZER_DIR [dotted.key=value ...]
    accelerate launch recipes/tta.py --config recipes/configs/ttm/paper.yaml ...   # task: ttm

The config's ``task`` (``tta`` or ``ttm``) names the run and the pipeline class it is exported as;
the ``ttm`` configs also set the music instruction, prompts and data.

One optimizer step: every process takes its share of the global batch (``batch_size x
gradient_accumulation_steps`` clips), encodes the audio with the frozen tokenizer (or reads
cached latents) and the captions with the frozen text encoder, and accumulates the
flow-matching loss of each micro-batch (logit-normal sigma, CFG dropout 0.2, + 0.1 x the
duration loss); then gradient clipping, AdamW, the LR schedule and the EMA update. Every
``sample.every`` steps the fixed prompts are generated from the EMA (else the raw) weights with
the 25-step CFG sway sampler and logged as audio and log-mel images. Checkpoints resume
exactly (weights, optimizer, schedule, EMA, data position; randomness is keyed by step and
sample position); ``<output_dir>/metrics.jsonl`` holds every logged number; the raw and EMA
weights are exported as pipelines (``generate --checkpoint``) to ``<output_dir>/final/{raw,ema}``.
"""

from __future__ import annotations

import sys
from functools import partial

from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.training.data import build_train_loader
from dashflow.generation.training.text_to_audio import (
    Config,
    build_model,
    check_settings,
    load_frozen,
    log_samples,
    make_pipeline,
    micro_batch_loss,
    prepare_normalizer,
)
from omegaconf import OmegaConf

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.training import RunLog, gather_weights, is_due, model_from_weights, prepare_run, start_accelerator

LOGGED = ("loss", "flow", "global_duration")


def main(argv: list[str] | None = None) -> int:
    cfg: Config = recipe_config(Config, "Train the text-to-audio / text-to-music DiT with Accelerate.",
                                "recipes/configs/tta", argv)
    check_settings(cfg)
    accumulation = cfg.optim.gradient_accumulation_steps
    flow = OmegaConf.to_object(cfg.flow)  # a FlowMatchingConfig instance
    accelerator = start_accelerator(cfg.train, accumulation)  # same initial weights on every process

    # frozen tokenizer + text encoder; trainable DiT, optimiser, schedule, EMA; resume
    frozen = load_frozen(cfg, accelerator.device)
    model = build_model(cfg.model, frozen.tokenizer, frozen.text.encoder)
    model_config = dict(model.config)
    run = prepare_run(accelerator, model, cfg.optim, cfg.train, cfg, cfg.ema)
    frozen.normalizer = prepare_normalizer(cfg, frozen.tokenizer, run.start_step > 0, accelerator.is_main_process,
                                           lambda: build_train_loader(cfg.data.train, frozen.tokenizer,
                                                                      cfg.data.max_seconds, cfg.data.batch_size,
                                                                      cfg.data.latent_cache, cfg.train.seed))

    loader = build_train_loader(cfg.data.train, frozen.tokenizer, cfg.data.max_seconds,
                                cfg.data.batch_size * accumulation, cfg.data.latent_cache, cfg.train.seed,
                                run.start_step, accelerator.process_index, accelerator.num_processes,
                                cfg.data.num_workers)
    log = RunLog(accelerator, cfg.task, cfg, cfg.train.output_dir, cfg.train.max_steps, cfg.train.log_every,
                 run.start_step)

    batches = iter(loader)
    for step in run.steps():
        losses, stats = run.step(next(batches), lambda micro, position: micro_batch_loss(
            run.model, micro, frozen, flow, cfg.train.seed, step, position, accelerator), LOGGED)
        log.step(step, losses, **stats)

        if is_due(step, cfg.sample.every, cfg.train.max_steps):
            weights = gather_weights(accelerator, run.model, run.ema)
            if accelerator.is_main_process:
                trained = model_from_weights(AudioGenModel, model_config, weights, accelerator.device)
                log_samples(accelerator, make_pipeline(cfg.task, trained, frozen), cfg.sample, step,
                            cfg.train.output_dir)
            accelerator.wait_for_everyone()
        run.checkpoint(step)
    log.close()

    run.export_pipelines(partial(make_pipeline, cfg.task, frozen=frozen), f"{cfg.train.output_dir}/final")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

"""Train the text-to-audio DiT (UniFlow-Audio / Dasheng-AudioGen) on a codec's latents (the DashengTokenizer's by default).

    accelerate launch recipes/tta.py --config recipes/configs/tta/paper.yaml \\
        data.train=audiocaps/train.jsonl model.tokenizer=TOKENIZER_DIR [dotted.key=value ...]

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

import torch
from accelerate.utils import set_seed
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.training.data import build_train_loader, split_batch
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
from dashflow.training import (
    RunLog,
    adamw,
    attach_ema,
    build_accelerator,
    export_pipelines,
    gather_weights,
    is_due,
    lr_schedule,
    model_from_weights,
    optimizer_step,
    resume_training,
    save_checkpoint,
)

LOGGED = ("loss", "flow", "global_duration")


def main(argv: list[str] | None = None, name: str = "tta") -> int:
    cfg: Config = recipe_config(Config, f"Train the {name} DiT with Accelerate.", f"recipes/configs/{name}",
                                argv)
    check_settings(cfg)
    accum = cfg.optim.gradient_accumulation_steps
    flow = OmegaConf.to_object(cfg.flow)  # a FlowMatchingConfig instance

    accelerator = build_accelerator(cfg.train.output_dir, cfg.train.mixed_precision,
                                    gradient_accumulation_steps=accum)
    set_seed(cfg.train.seed)  # same initial weights on every process

    # frozen tokenizer + text encoder; trainable DiT, optimiser, schedule, EMA
    frozen = load_frozen(cfg, accelerator.device)
    model = build_model(cfg.model, frozen.tokenizer, frozen.text.encoder)
    model_config = dict(model.config)
    optimizer = adamw(model.parameters(), cfg.optim)
    scheduler = lr_schedule(optimizer, cfg.optim, cfg.train.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = attach_ema(accelerator, model, cfg.ema)

    # resume: weights, optimiser, schedule, EMA, RNG; the data position is the step
    start_step = resume_training(accelerator, cfg.train.output_dir, cfg.train.resume)
    prepare_normalizer(cfg, frozen, start_step > 0, accelerator.is_main_process)

    loader = build_train_loader(cfg.data.train, frozen.tokenizer, cfg.data.max_seconds,
                                cfg.data.batch_size * accum, cfg.data.latent_cache, cfg.train.seed,
                                start_step, accelerator.process_index, accelerator.num_processes,
                                cfg.data.num_workers)
    log = RunLog(accelerator, name, cfg, cfg.train.output_dir, cfg.train.max_steps, cfg.train.log_every,
                 start_step)

    batches = iter(loader)
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        totals = torch.zeros(len(LOGGED), device=accelerator.device)
        for index, micro in enumerate(split_batch(next(batches), accum)):
            position = accelerator.process_index * accum + index  # in the global batch
            with accelerator.accumulate(model):
                losses = micro_batch_loss(model, micro, frozen, flow, cfg.train.seed, step, position,
                                          accelerator)
                accelerator.backward(losses["loss"])
            totals += torch.stack([losses[key].detach() for key in LOGGED]) / accum
        grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, cfg.optim.grad_clip, ema)
        log.step(step, dict(zip(LOGGED, totals)), grad_norm=grad_norm, lr=lr)

        if is_due(step, cfg.sample.every, cfg.train.max_steps):
            weights = gather_weights(accelerator, model, ema)
            if accelerator.is_main_process:
                trained = model_from_weights(AudioGenModel, model_config, weights, accelerator.device)
                log_samples(accelerator, make_pipeline(name, trained, frozen), cfg.sample, step,
                            cfg.train.output_dir)
            accelerator.wait_for_everyone()
        if is_due(step, cfg.train.checkpoint_every, cfg.train.max_steps):
            save_checkpoint(accelerator, cfg.train.output_dir, step, cfg, cfg.train.keep_checkpoints)
    log.close()

    build = partial(make_pipeline, name, frozen=frozen)
    for folder in export_pipelines(accelerator, model, ema, build, f"{cfg.train.output_dir}/final"):
        accelerator.print(f"saved {folder}")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

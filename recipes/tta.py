"""Train the text-to-audio DiT (UniFlow-Audio / Dasheng-AudioGen) on DashengTokenizer latents.

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
from pathlib import Path

# recipes/tokenizer.py shares its name with the ``tokenizer`` package: keep this folder off the
# import path so ``import tokenizer`` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from dashflow.config import recipe_config
from dashflow.errors import DashflowError
from dashflow.training import (
    METRICS_NAME,
    MetricsLog,
    build_accelerator,
    init_trackers,
    resume_training,
    save_checkpoint,
)
from generation.train_data import build_train_loader, split_batch
from generation.training import (
    Config,
    attach_ema,
    build_model,
    check_settings,
    export_pipelines,
    gather_weights,
    load_frozen,
    log_samples,
    lr_schedule,
    make_pipeline,
    micro_batch_loss,
    model_from_weights,
    optimizer_step,
    prepare_normalizer,
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
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
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
    metrics_log = MetricsLog(f"{cfg.train.output_dir}/{METRICS_NAME}", start_step,
                             accelerator.is_main_process)
    init_trackers(accelerator, name, cfg)

    progress = tqdm(total=cfg.train.max_steps, initial=start_step, desc=name,
                    disable=not accelerator.is_local_main_process)
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
        grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, ema, cfg.optim.grad_clip)
        progress.update(1)

        if step % cfg.train.log_every == 0:  # the only place losses leave the device
            means = accelerator.reduce(totals, reduction="mean").tolist()
            values = dict(zip(LOGGED, means)) | {"grad_norm": grad_norm, "lr": lr}
            accelerator.log(values, step=step)
            metrics_log.write(step, values)
            progress.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        if cfg.sample.every and (step % cfg.sample.every == 0 or step == cfg.train.max_steps):
            weights = gather_weights(accelerator, model, ema)
            if accelerator.is_main_process:
                trained = model_from_weights(model_config, weights, accelerator.device)
                log_samples(accelerator, make_pipeline(name, trained, frozen), cfg.sample, step,
                            cfg.train.output_dir)
            accelerator.wait_for_everyone()
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.max_steps:
            save_checkpoint(accelerator, cfg.train.output_dir, step, cfg, cfg.train.keep_checkpoints)
    progress.close()

    build = partial(make_pipeline, name, frozen=frozen)
    for folder in export_pipelines(accelerator, model, ema, build, f"{cfg.train.output_dir}/final"):
        accelerator.print(f"saved {folder}")
    accelerator.end_training()
    return 0


def cli(name: str = "tta") -> int:
    """Run :func:`main` on ``sys.argv``; a DashflowError becomes one line and exit status 2."""
    try:
        return main(name=name)
    except DashflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli("tta"))

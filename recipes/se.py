"""Train a latent speech enhancer on a codec's latents (the DashengTokenizer's by default).

    accelerate launch recipes/se.py --config recipes/configs/se/denoiser.yaml \\
        data.train=train_clean.jsonl data.noise=train_noise.jsonl model.tokenizer=TOKENIZER_DIR
    accelerate launch recipes/se.py --config recipes/configs/se/flow.yaml ...   # the DiT (Model B)
    ... data.train=voicebank_train.jsonl data.noise=""                          # paired noisy/clean

One optimizer step: every process takes its share of the global batch of (noisy, clean) crops
(clean speech mixed on the fly with noise at a random SNR and optional reverberation, or a
paired manifest), encodes both with the frozen tokenizer and accumulates the loss of each
micro-batch: MSE between enhanced and clean latents (``model.kind=denoiser``) or the
flow-matching objective of the DiT conditioned on the noisy latents (``model.kind=flow``); then
gradient clipping, AdamW, the LR schedule and the EMA update. Checkpoints resume exactly;
``<output_dir>/metrics.jsonl`` holds every logged number; the raw and EMA weights are exported
as speech-enhancement pipelines (``enhance --checkpoint``) to ``<output_dir>/final/{raw,ema}``.
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from accelerate.utils import set_seed
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.training.data import split_batch
from dashflow.generation.training.speech_enhancement import (
    SEConfig,
    build_enhancer,
    check_se_settings,
    se_micro_batch_loss,
)
from omegaconf import OmegaConf

from dashflow.cli import run_guarded
from dashflow.codecs import load_codec
from dashflow.config import recipe_config
from dashflow.mixing import build_se_loader
from dashflow.training import (
    RunLog,
    adamw,
    attach_ema,
    build_accelerator,
    export_pipelines,
    is_due,
    lr_schedule,
    optimizer_step,
    resume_training,
    save_checkpoint,
)

LOGGED = {"denoiser": ("loss", "mse"), "flow": ("loss", "flow", "local_duration", "global_duration")}


def main(argv: list[str] | None = None) -> int:
    cfg: SEConfig = recipe_config(SEConfig, "Train a latent speech enhancer with Accelerate.",
                                  "recipes/configs/se", argv)
    check_se_settings(cfg)
    accum = cfg.optim.gradient_accumulation_steps
    flow = OmegaConf.to_object(cfg.flow)
    logged = LOGGED[cfg.model.kind]

    accelerator = build_accelerator(cfg.train.output_dir, cfg.train.mixed_precision,
                                    gradient_accumulation_steps=accum)
    set_seed(cfg.train.seed)  # same initial weights on every process

    # frozen tokenizer; trainable enhancer, optimiser, schedule, EMA
    tokenizer = load_codec(cfg.model.tokenizer, device=accelerator.device)
    model = build_enhancer(cfg.model, tokenizer)
    optimizer = adamw(model.parameters(), cfg.optim)
    scheduler = lr_schedule(optimizer, cfg.optim, cfg.train.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = attach_ema(accelerator, model, cfg.ema)

    # resume: weights, optimiser, schedule, EMA, RNG; the data position is the step
    start_step = resume_training(accelerator, cfg.train.output_dir, cfg.train.resume)

    loader = build_se_loader(cfg.data.train, cfg.data.noise or None, cfg.data.batch_size * accum,
                             cfg.data.max_seconds, cfg.train.seed, start_step, accelerator.process_index,
                             accelerator.num_processes, cfg.data.num_workers, tokenizer.sample_rate,
                             cfg.data.mixing)
    log = RunLog(accelerator, f"se_{cfg.model.kind}", cfg, cfg.train.output_dir, cfg.train.max_steps,
                 cfg.train.log_every, start_step)

    batches = iter(loader)
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        totals = torch.zeros(len(logged), device=accelerator.device)
        for index, micro in enumerate(split_batch(next(batches), accum)):
            position = accelerator.process_index * accum + index  # in the global batch
            with accelerator.accumulate(model):
                losses = se_micro_batch_loss(model, micro, tokenizer, cfg.model.kind, flow, cfg.train.seed,
                                             step, position, accelerator)
                accelerator.backward(losses["loss"])
            totals += torch.stack([losses[key].detach() for key in logged]) / accum
        grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, cfg.optim.grad_clip, ema)
        log.step(step, dict(zip(logged, totals)), grad_norm=grad_norm, lr=lr)

        if is_due(step, cfg.train.checkpoint_every, cfg.train.max_steps):
            save_checkpoint(accelerator, cfg.train.output_dir, step, cfg, cfg.train.keep_checkpoints)
    log.close()

    build = partial(SpeechEnhancementPipeline, tokenizer.to("cpu"))
    for folder in export_pipelines(accelerator, model, ema, build, f"{cfg.train.output_dir}/final"):
        accelerator.print(f"saved {folder}")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

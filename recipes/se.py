"""Train a latent speech enhancer on a codec's latents (the DashengTokenizer's by default).

    accelerate launch recipes/se.py --config recipes/configs/se/denoiser.yaml \\
        data.train=train_clean.jsonl data.noise=train_noise.jsonl model.tokenizer=TOKENIZER_DIR
    accelerate launch recipes/se.py --config recipes/configs/se/flow.yaml ...   # the DiT (Model B)
    ... data.train=voicebank_train.jsonl data.noise=""                          # paired noisy/clean

One optimizer step: every process takes its share of the global batch of (noisy, clean) crops
(clean speech mixed on the fly with noise at a random SNR and optional reverberation, or a
paired manifest), encodes both with the frozen tokenizer and accumulates the loss of each
micro-batch: MSE between enhanced and clean latents (``model.kind=denoiser``) or the
flow-matching objective of the DiT conditioned on the noisy latents (``model.kind=flow``; with
``flow.normalize_latents=true`` on latents normalised per channel, the normalizer fitted on the
first batches' clean latents and exported with the pipeline); then
gradient clipping, AdamW, the LR schedule and the EMA update. Checkpoints resume exactly;
``<output_dir>/metrics.jsonl`` holds every logged number; the raw and EMA weights are exported
as speech-enhancement pipelines (``enhance --checkpoint``) to ``<output_dir>/final/{raw,ema}``.
"""

from __future__ import annotations

import sys
from functools import partial

from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.training.speech_enhancement import (
    SEConfig,
    build_enhancer,
    check_se_settings,
    se_micro_batch_loss,
)
from dashflow.generation.training.text_to_audio import prepare_normalizer
from omegaconf import OmegaConf

from dashflow.cli import run_guarded
from dashflow.codecs import load_codec
from dashflow.config import recipe_config
from dashflow.mixing import build_se_loader
from dashflow.training import RunLog, prepare_run, start_accelerator

LOGGED = {"denoiser": ("loss", "mse"), "flow": ("loss", "flow", "local_duration", "global_duration")}


def main(argv: list[str] | None = None) -> int:
    cfg: SEConfig = recipe_config(SEConfig, "Train a latent speech enhancer with Accelerate.",
                                  "recipes/configs/se", argv)
    check_se_settings(cfg)
    accumulation = cfg.optim.gradient_accumulation_steps
    flow = OmegaConf.to_object(cfg.flow)
    accelerator = start_accelerator(cfg.train, accumulation)  # same initial weights on every process

    # frozen tokenizer; trainable enhancer, optimiser, schedule, EMA; resume
    tokenizer = load_codec(cfg.model.tokenizer, device=accelerator.device)
    run = prepare_run(accelerator, build_enhancer(cfg.model, tokenizer), cfg.optim, cfg.train, cfg, cfg.ema)

    def loader(batch_size: int, start_step: int, process_index: int, num_processes: int):
        return build_se_loader(cfg.data.train, cfg.data.noise or None, batch_size, cfg.data.max_seconds,
                               cfg.train.seed, start_step, process_index, num_processes, cfg.data.num_workers,
                               tokenizer.sample_rate, cfg.data.mixing)

    # flow.normalize_latents: the latent normalizer, fitted on the clean latents of the first batches
    normalizer = prepare_normalizer(cfg, tokenizer, run.start_step > 0, accelerator.is_main_process,
                                    lambda: loader(cfg.data.batch_size, 0, 0, 1))
    log = RunLog(accelerator, f"se_{cfg.model.kind}", cfg, cfg.train.output_dir, cfg.train.max_steps,
                 cfg.train.log_every, run.start_step)

    batches = iter(loader(cfg.data.batch_size * accumulation, run.start_step, accelerator.process_index,
                          accelerator.num_processes))
    for step in run.steps():
        losses, stats = run.step(next(batches), lambda micro, position: se_micro_batch_loss(
            run.model, micro, tokenizer, cfg.model.kind, flow, cfg.train.seed, step, position, accelerator,
            normalizer), LOGGED[cfg.model.kind])
        log.step(step, losses, **stats)
        run.checkpoint(step)
    log.close()

    cpu_normalizer = None if normalizer is None else normalizer.to("cpu")
    run.export_pipelines(partial(SpeechEnhancementPipeline, tokenizer.to("cpu"), latent_normalizer=cpu_normalizer),
                         f"{cfg.train.output_dir}/final")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

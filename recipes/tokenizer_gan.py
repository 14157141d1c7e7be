"""Train the DashengTokenizer (acoustic branch + Vocos decoder) as a GAN with Accelerate.

    accelerate launch recipes/tokenizer_gan.py --config recipes/configs/tokenizer/paper.yaml \\
        data.train=corpus/train.jsonl [dotted.key=value ...]

Hardware comes from the Accelerate config: ``--config_file recipes/accelerate/{single_gpu,
multi_gpu,fsdp,cpu}.yaml`` (or ``torchrun`` with ``ACCELERATE_USE_CPU=true`` for several CPU
processes, as the tests do).

One step (:func:`dashflow.tokenizer.gan.train_step`): the discriminator (MPD + multi-frequency)
takes a hinge step on real vs reconstructed crops, then the generator a step on 45 L_sem +
45 L_mel + L_adv + L_fm. Validation scores held-out clips by multi-scale mel distance (and
PESQ / STOI with ``train.speech_metrics``). Checkpoints resume exactly (step, optimizers,
schedulers, RNG, data position); ``<output_dir>/metrics.jsonl`` holds every logged number; the
trained tokenizer is exported with ``save_pretrained`` to ``<output_dir>/final``.
"""

from __future__ import annotations

import sys

import torch
from accelerate.utils import send_to_device, set_seed
from dashflow.eval.enhancement import speech_scores
from dashflow.tokenizer.gan import (
    Config,
    build_gan,
    check_settings,
    split_data,
    train_step,
    validate,
)
from dashflow.tokenizer.losses import MultiScaleMelLoss

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.data import AudioClipDataset, build_clip_loader
from dashflow.training import (
    RunLog,
    gather_weights,
    is_due,
    model_from_weights,
    resume_training,
    save_checkpoint,
    start_accelerator,
)


def main(argv: list[str] | None = None) -> int:
    cfg: Config = recipe_config(Config, "Train the DashengTokenizer or LoSATok (GAN).", "recipes/configs/tokenizer",
                                argv)
    check_settings(cfg)

    accelerator = start_accelerator(cfg.train)  # same initial weights on every process
    device = accelerator.device

    gan = build_gan(cfg, accelerator)
    tokenizer = accelerator.unwrap_model(gan.generator).tokenizer
    set_seed(cfg.train.seed, device_specific=True)  # per-process noise from here on

    # resume: weights, optimisers, schedules, RNG; the data position is the step
    start_step = resume_training(accelerator, cfg.train.output_dir, cfg.train.resume)

    train_source, val_records = split_data(cfg.data)
    val_set = AudioClipDataset(val_records, cfg.data.val_seconds, random_crop=False)
    loader = build_clip_loader(train_source, cfg.data.batch_size, cfg.data.crop_seconds,
                               cfg.train.seed, start_step, accelerator.process_index,
                               accelerator.num_processes, cfg.data.num_workers)
    log = RunLog(accelerator, "tokenizer", cfg, cfg.train.output_dir, cfg.train.max_steps, cfg.train.log_every,
                 start_step, shown="mel")

    # validation: the multi-scale mel distance whatever trains, + PESQ / STOI on request
    mel_distance = MultiScaleMelLoss().to(device)
    score_names = ("mel_distance", "pesq", "stoi") if cfg.train.speech_metrics else ("mel_distance",)

    def score(reference: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
        scores = {"mel_distance": float(mel_distance(recon[None], reference[None]))}
        if cfg.train.speech_metrics:
            scores |= speech_scores(reference.cpu().numpy(), recon.cpu().numpy())
        return scores

    def run_validation(step: int) -> None:
        metrics = validate(accelerator, gan.generator, val_set, cfg, step, score, score_names,
                           tokenizer.min_samples)
        log.write(step, metrics)
        accelerator.print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    if start_step == 0:
        run_validation(0)

    batches = iter(loader)
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        batch = send_to_device(next(batches), device)
        losses = train_step(accelerator, gan, batch["audio"], batch["length"].clamp(min=tokenizer.min_samples),
                            cfg, adversarial=step > cfg.loss.disc_start_step)
        log.step(step, losses, lr=gan.sched_g.get_last_lr()[0])

        if is_due(step, cfg.train.val_every, cfg.train.max_steps):
            run_validation(step)
        if is_due(step, cfg.train.checkpoint_every, cfg.train.max_steps):
            save_checkpoint(accelerator, cfg.train.output_dir, step, cfg, cfg.train.keep_checkpoints)
    log.close()

    # export the trained tokenizer (full weights gathered from every process, whatever sharding)
    weights = gather_weights(accelerator, gan.generator)
    if accelerator.is_main_process:
        state = {key.removeprefix("tokenizer."): value for key, value in weights.items()}
        model_from_weights(type(tokenizer), dict(tokenizer.config), state).save_pretrained(
            f"{cfg.train.output_dir}/final")
        accelerator.print(f"saved {cfg.train.output_dir}/final")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

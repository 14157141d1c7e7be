"""Train SemBo, LoSATok's semantic bottleneck, on a frozen semantic encoder's features.

    accelerate launch recipes/sembo.py --config recipes/configs/sembo/paper.yaml \\
        data.train=corpus/train.jsonl model.teacher=path/to/dashengtokenizer

One step: the frozen teacher (``model.teacher``: a DashengTokenizer folder's semantic encoder, or
a dasheng checkpoint) encodes a batch of random crops; SemBo compresses and restores its features
and takes an AdamW step on ``recon_weight`` x the normalised reconstruction loss + ``relation_weight``
x the time-relation loss (:func:`dashflow.tokenizer.sembo.sembo_loss`). Checkpoints resume exactly;
``<output_dir>/metrics.jsonl`` holds every logged number; the trained SemBo is saved to
``<output_dir>/final`` (``config.json`` + ``model.safetensors``), what ``recipes/tokenizer_gan.py
model.kind=losatok model.sembo=...`` reads.
"""

from __future__ import annotations

import sys

import torch
from accelerate.utils import send_to_device
from dashflow.tokenizer.config import FRAMES_PER_LATENT
from dashflow.tokenizer.sembo import SemanticBottleneck, SemBoConfig, check_sembo_settings, load_teacher, sembo_loss

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.data import build_clip_loader
from dashflow.spectral import frame_counts
from dashflow.training import RunLog, prepare_run, start_accelerator



def main(argv: list[str] | None = None) -> int:
    cfg: SemBoConfig = recipe_config(SemBoConfig, "Train SemBo (LoSATok's semantic bottleneck).",
                                     "recipes/configs/sembo", argv)
    check_sembo_settings(cfg)
    accelerator = start_accelerator(cfg.train)  # same initial weights on every process
    device = accelerator.device

    # frozen teacher; trainable bottleneck, optimiser, schedule; resume
    teacher = load_teacher(cfg.model.teacher).to(device)
    model = SemanticBottleneck(teacher.embed_dim, cfg.model.low_dim, cfg.model.hidden)
    run = prepare_run(accelerator, model, cfg.optim, cfg.train, cfg)
    loader = build_clip_loader(cfg.data.train, cfg.data.batch_size, cfg.data.crop_seconds, cfg.train.seed,
                               run.start_step, accelerator.process_index, accelerator.num_processes,
                               cfg.data.num_workers)
    log = RunLog(accelerator, "sembo", cfg, cfg.train.output_dir, cfg.train.max_steps, cfg.train.log_every,
                 run.start_step, shown="recon")

    def loss_of(batch: dict, position: int) -> dict:
        batch = send_to_device(batch, device)
        lengths = batch["length"]
        with torch.no_grad():
            high = teacher(batch["audio"], lengths)  # [B, T, D], zero past each clip
        frames = frame_counts(lengths, teacher.front_end.hop_length) // FRAMES_PER_LATENT
        mask = torch.arange(high.shape[1], device=device)[None] < frames[:, None]
        with accelerator.autocast():
            loss, parts = sembo_loss(run.model, high, mask, cfg.loss.recon_weight, cfg.loss.relation_weight)
        return {"loss": loss, **parts}

    logged = ("loss", "recon", "relation") if cfg.loss.relation_weight else ("loss", "recon")
    batches = iter(loader)
    for step in run.steps():
        losses, stats = run.step(next(batches), loss_of, logged)
        log.step(step, losses, **stats)
        run.checkpoint(step)
    log.close()

    run.save_final()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

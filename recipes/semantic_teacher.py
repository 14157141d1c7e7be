"""Train a semantic teacher (a Dasheng encoder + linear head, cross-entropy on clip labels) for
offline LoSATok / SemBo work where no pretrained semantic encoder can be had.

    accelerate launch recipes/semantic_teacher.py --config recipes/configs/semantic_teacher/demo.yaml \\
        data.train=runs/demo/corpus/train.jsonl

One step: random crops of labelled clips, the masked mean of the encoder's 25 Hz features, a
linear head, cross-entropy, AdamW. Checkpoints resume exactly; ``<output_dir>/metrics.jsonl``
holds the loss and the batch accuracy; the teacher is saved to ``<output_dir>/final``, which
``recipes/sembo.py model.teacher=...`` and ``tokenizer_gan.py model.kind=losatok model.teacher=...`` read.
"""

from __future__ import annotations

import sys

import torch.nn.functional as F
from accelerate.utils import send_to_device, set_seed
from dashflow.tokenizer.teacher import SemanticTeacher, TeacherConfig, check_teacher_settings, label_tensor

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.data import build_clip_loader
from dashflow.manifests import read_manifest
from dashflow.training import (
    RunLog,
    adamw,
    build_accelerator,
    is_due,
    lr_schedule,
    optimizer_step,
    resume_training,
    save_checkpoint,
)


def main(argv: list[str] | None = None) -> int:
    cfg: TeacherConfig = recipe_config(TeacherConfig, "Train a semantic teacher (supervised Dasheng encoder).",
                                       "recipes/configs/semantic_teacher", argv)
    records = read_manifest(cfg.data.train)
    labels = check_teacher_settings(cfg, records)
    by_id = {r["audio_id"]: r for r in records}

    accelerator = build_accelerator(cfg.train.output_dir, cfg.train.mixed_precision)
    set_seed(cfg.train.seed)  # same initial weights on every process
    model = SemanticTeacher(labels, cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads)
    optimizer = adamw(model.parameters(), cfg.optim)
    scheduler = lr_schedule(optimizer, cfg.optim, cfg.train.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # resume: weights, optimiser, schedule, RNG; the data position is the step
    start_step = resume_training(accelerator, cfg.train.output_dir, cfg.train.resume)
    loader = build_clip_loader(records, cfg.data.batch_size, cfg.data.crop_seconds, cfg.train.seed, start_step,
                               accelerator.process_index, accelerator.num_processes, cfg.data.num_workers)
    log = RunLog(accelerator, "semantic_teacher", cfg, cfg.train.output_dir, cfg.train.max_steps,
                 cfg.train.log_every, start_step, shown="accuracy")

    batches = iter(loader)
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        batch = next(batches)
        target = label_tensor(batch, labels, by_id).to(accelerator.device)
        batch = send_to_device(batch, accelerator.device)
        with accelerator.autocast():
            logits = model(batch["audio"], batch["length"])
            loss = F.cross_entropy(logits.float(), target)
        accelerator.backward(loss)
        grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, cfg.optim.grad_clip)
        accuracy = (logits.argmax(-1) == target).float().mean()
        log.step(step, {"loss": loss.detach(), "accuracy": accuracy.detach()}, grad_norm=grad_norm, lr=lr)
        if is_due(step, cfg.train.checkpoint_every, cfg.train.max_steps):
            save_checkpoint(accelerator, cfg.train.output_dir, step, cfg, cfg.train.keep_checkpoints)
    log.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(f"{cfg.train.output_dir}/final")
        accelerator.print(f"saved {cfg.train.output_dir}/final")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

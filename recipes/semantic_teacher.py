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
from accelerate.utils import send_to_device
from dashflow.tokenizer.teacher import SemanticTeacher, TeacherConfig, check_teacher_settings, label_tensor

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.data import build_clip_loader
from dashflow.manifests import read_manifest
from dashflow.training import RunLog, prepare_run, start_accelerator


def main(argv: list[str] | None = None) -> int:
    cfg: TeacherConfig = recipe_config(TeacherConfig, "Train a semantic teacher (supervised Dasheng encoder).",
                                       "recipes/configs/semantic_teacher", argv)
    records = read_manifest(cfg.data.train)
    labels = check_teacher_settings(cfg, records)
    by_id = {r["audio_id"]: r for r in records}

    accelerator = start_accelerator(cfg.train)  # same initial weights on every process
    model = SemanticTeacher(labels, cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads)
    run = prepare_run(accelerator, model, cfg.optim, cfg.train, cfg)  # + resume
    loader = build_clip_loader(records, cfg.data.batch_size, cfg.data.crop_seconds, cfg.train.seed, run.start_step,
                               accelerator.process_index, accelerator.num_processes, cfg.data.num_workers)
    log = RunLog(accelerator, "semantic_teacher", cfg, cfg.train.output_dir, cfg.train.max_steps,
                 cfg.train.log_every, run.start_step, shown="accuracy")

    def loss_of(batch: dict, position: int) -> dict:
        target = label_tensor(batch, labels, by_id).to(accelerator.device)
        batch = send_to_device(batch, accelerator.device)
        with accelerator.autocast():
            logits = run.model(batch["audio"], batch["length"])
            loss = F.cross_entropy(logits.float(), target)
        return {"loss": loss, "accuracy": (logits.argmax(-1) == target).float().mean()}

    batches = iter(loader)
    for step in run.steps():
        losses, stats = run.step(next(batches), loss_of, ("loss", "accuracy"))
        log.step(step, losses, **stats)
        run.checkpoint(step)
    log.close()

    run.save_final()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

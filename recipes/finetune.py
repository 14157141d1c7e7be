"""Adapt a trained text-to-audio / text-to-music pipeline to new sounds: LoRA (peft) or full fine-tuning.

    accelerate launch recipes/finetune.py --config recipes/configs/finetune/lora.yaml \\
        base=generation/demo/pipeline data.train=my_sounds.jsonl [dotted.key=value ...]

The base pipeline's codec and text encoder stay frozen; its DiT gets LoRA adapters on the
attention and feed-forward projections (``mode: lora``, the only trainable weights) or is trained
whole (``mode: full``). One optimizer step: the flow-matching loss of each micro-batch, captions
formatted and the instruction chosen as the base pipeline does when sampling, then clipping,
AdamW, the LR schedule (and the EMA, full mode). ``data.replay`` mixes in clips of what the base
already makes (``data.replay_fraction`` of the draws) so that it keeps making them. Checkpoints
resume exactly. The result:
``<output_dir>/final/lora.safetensors`` (the adapter, with the base's weights hash and the LoRA
settings: ``generate --lora``, ``pipe.load_lora_weights``), or a pipeline folder per weight kind
``<output_dir>/final/{raw,ema}`` (full mode: ``generate --checkpoint``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dashflow.generation.pipelines.lora import save_lora
from dashflow.generation.training.data import build_train_loader
from dashflow.generation.training.finetune import (
    FinetuneConfig,
    check_finetune_settings,
    format_batch,
    load_base,
    lora_settings,
    trainable_model,
    trainable_parameters,
    training_records,
)
from dashflow.generation.training.text_to_audio import micro_batch_loss
from omegaconf import OmegaConf

from dashflow.cli import run_guarded
from dashflow.config import recipe_config
from dashflow.training import RunLog, prepare_run, start_accelerator

LOGGED = ("loss", "flow", "global_duration")


def main(argv: list[str] | None = None) -> int:
    cfg: FinetuneConfig = recipe_config(FinetuneConfig, "Fine-tune a pipeline's DiT (LoRA or full) with Accelerate.",
                                        "recipes/configs/finetune", argv)
    check_finetune_settings(cfg)
    accumulation = cfg.optim.gradient_accumulation_steps
    accelerator = start_accelerator(cfg.train, accumulation)

    # the base pipeline: frozen codec, text encoder and normalizer; its DiT adapted; resume
    pipe, frozen = load_base(cfg, accelerator.device)
    flow = OmegaConf.to_object(cfg.flow)
    model = trainable_model(pipe, cfg)
    accelerator.print(f"{cfg.mode}: {trainable_parameters(model):,} trainable parameters")
    run = prepare_run(accelerator, model, cfg.optim, cfg.train, cfg, cfg.ema if cfg.mode == "full" else None)

    loader = build_train_loader(training_records(cfg.data, cfg.train.seed), frozen.tokenizer, cfg.data.max_seconds,
                                cfg.data.batch_size * accumulation, cfg.data.latent_cache, cfg.train.seed,
                                run.start_step, accelerator.process_index, accelerator.num_processes,
                                cfg.data.num_workers)
    log = RunLog(accelerator, f"finetune_{cfg.mode}", cfg, cfg.train.output_dir, cfg.train.max_steps,
                 cfg.train.log_every, run.start_step)

    def loss_of(micro: dict, position: int) -> dict:
        instruction = pipe.instruction_states(len(micro["caption"]), pipe.transformer.dtype)
        return micro_batch_loss(run.model, format_batch(pipe, micro), frozen, flow, cfg.train.seed, step, position,
                                accelerator, None if instruction[0] is None else instruction)

    batches = iter(loader)
    for step in run.steps():
        losses, stats = run.step(next(batches), loss_of, LOGGED)
        log.step(step, losses, **stats)
        run.checkpoint(step)
    log.close()

    if cfg.mode == "lora":
        if accelerator.is_main_process:
            path = save_lora(accelerator.unwrap_model(run.model),
                             Path(cfg.train.output_dir) / "final" / "lora.safetensors", lora_settings(cfg))
            accelerator.print(f"saved {path}")
        accelerator.end_training()
        return 0
    run.export_pipelines(lambda trained: type(pipe)(**{**pipe.components, "transformer": trained},
                                                    prompt_template=pipe.config.prompt_template,
                                                    instruction=pipe.config.instruction),
                         f"{cfg.train.output_dir}/final")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

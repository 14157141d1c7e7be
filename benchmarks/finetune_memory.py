"""What adapting the full-size model asks of a machine: one LoRA step and one full fine-tuning step
of the Dasheng-AudioGen layout (``AudioGenModel`` preset ``audiogen``, random weights) on CPU.

    python -m benchmarks.finetune_memory [--seconds 4] [--out benchmarks/results/finetune_memory.jsonl]

Each mode runs in its own process (so each peak is its own): the DiT is built in bfloat16 (the
base weights as a GPU run would hold them) with its random initialisation; then one flow-matching step (batch 1, ``--seconds`` of 1280-d latents, 32 text tokens,
bf16 autocast) with AdamW:

- ``lora``: the base frozen, rank-16 adapters (``recipes/configs/finetune``'s targets, float32);
- ``full``: every weight trained, bf16 weights, gradients and AdamW states (the least a full step
  can hold; fp32 master weights + AdamW would be 16 bytes a parameter, reported as computed).

Reports trainable parameters, the process's peak resident memory and the step's wall time, one
JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def one_step(mode: str, seconds: float) -> dict:
    from dashflow.generation.model.audiogen import AudioGenModel
    from dashflow.generation.pipelines.lora import LoraSettings, add_lora
    from dashflow.generation.sampling.cfm import FlowMatching
    from dashflow.generation.sampling.flow import FlowMatchingConfig

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 with its own random init (buffers included)
    model = AudioGenModel.from_preset("audiogen")
    torch.set_default_dtype(torch.float32)
    total = sum(p.numel() for p in model.parameters())
    if mode == "lora":
        model.requires_grad_(False)
        add_lora(model, LoraSettings(rank=16, alpha=16))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
    frames = int(seconds * model.latent_rate)
    latents = torch.randn(1, model.config.latent_dim, frames)
    text = torch.randn(1, 32, model.content_encoder.text_encoder.proj.in_features)
    ones = torch.ones(1, frames, dtype=torch.bool)
    tic = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = FlowMatching(model, FlowMatchingConfig()).loss(latents, ones, text, torch.ones(1, 32, dtype=torch.bool),
                                                              generator=torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    optimizer.step()
    return {"mode": mode, "preset": "audiogen", "parameters": total,
            "trainable_parameters": sum(p.numel() for p in trainable), "clip_seconds": seconds,
            "step_seconds": round(time.perf_counter() - tic, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
            "loss_finite": bool(torch.isfinite(loss)),
            "fp32_master_adamw_gib_computed": round(total * 16 / 2 ** 30, 1) if mode == "full" else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/finetune_memory.jsonl"))
    parser.add_argument("--mode", choices=("lora", "full"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(one_step(args.mode, args.seconds)))
        return 0
    rows = []
    for mode in ("lora", "full"):
        result = subprocess.run([sys.executable, "-m", "benchmarks.finetune_memory", "--mode", mode, "--seconds",
                                 str(args.seconds)], capture_output=True, text=True)
        rows.append(json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0 else
                    {"mode": mode, "error": result.stderr.strip().splitlines()[-1][:300]})
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as file:
        for row in rows:
            file.write(json.dumps({**row, "date": time.strftime("%Y-%m-%d"), "device": "cpu"}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

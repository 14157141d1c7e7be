"""Tokenizer GAN training step: steps/s and peak memory of the recipe's own ``train_step``.

    python -m benchmarks.tokenizer_train_step                       # paper, cuda, bf16, 8 x 2 s
    python -m benchmarks.tokenizer_train_step --preset tiny --batch 2 --repeats 2   # CPU check

One step = generator forward (frozen semantic encoder included), a discriminator hinge step
(MPD + multi-frequency) and a generator step with mel, semantic, adversarial and
feature-matching losses: exactly the recipe's ``dashflow.tokenizer.gan.train_step`` with ``recipes/tokenizer_gan.py``'s
``paper`` (or ``tiny``) config, random weights, and random-noise audio crops. Mixed precision
is bf16 on CUDA (float32 on CPU) through Accelerate. One JSON line per run is printed and
appended to benchmarks/results/tokenizer_train.jsonl (``peak_mem_gib``: CUDA allocator peak;
``peak_rss_gib``: the process's peak resident memory, the only figure on CPU).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
from dashflow.tokenizer import gan as gan_pieces

from benchmarks.common import record
from dashflow.config import load_config
from dashflow.training import build_accelerator

RESULTS = ROOT / "benchmarks" / "results" / "tokenizer_train.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "tiny"],
                        help="recipe config (tokenizer + discriminator size)")
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--seconds", type=float, default=2.0, help="crop length")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps")
    parser.add_argument("--cpu", action="store_true", help="force the CPU even with CUDA")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    overrides = ["data.train=unused.jsonl", f"train.mixed_precision={'bf16' if cuda else 'no'}",
                 f"model.gradient_checkpointing={args.gradient_checkpointing}"]
    cfg = load_config(gan_pieces.Config, ROOT / "recipes" / "configs" / "tokenizer" / f"{args.preset}.yaml",
                      overrides)
    with tempfile.TemporaryDirectory() as scratch:
        accelerator = build_accelerator(scratch, cfg.train.mixed_precision, log_with=None,
                                        cpu=not cuda)
        device = accelerator.device
        gan = gan_pieces.build_gan(cfg, accelerator)
        tokenizer = accelerator.unwrap_model(gan.generator).tokenizer
        samples = round(args.seconds * tokenizer.sample_rate)
        wav = 0.1 * torch.randn(args.batch, samples, generator=torch.Generator().manual_seed(0))
        wav, lengths = wav.to(device), torch.full((args.batch,), samples, device=device)

        def step() -> None:
            logs = gan_pieces.train_step(accelerator, gan, wav, lengths, cfg, adversarial=True)
            float(logs["loss_g"].detach())  # wait for the step to finish (also on CUDA)

        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        count = lambda params: sum(p.numel() for p in params)
        values = {
            "benchmark": "tokenizer_train_step", "preset": args.preset, "batch": args.batch,
            "crop_seconds": args.seconds, "device": torch.cuda.get_device_name(device) if cuda
            else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "mixed_precision": accelerator.mixed_precision,
            "gradient_checkpointing": args.gradient_checkpointing,
            "step_s": round(step_s, 4), "steps_per_s": round(1 / step_s, 3),
            "clip_seconds_per_s": round(args.batch * args.seconds / step_s, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "trainable_params_m": round(count(tokenizer.trainable_parameters()) / 1e6, 2),
            "frozen_params_m": round(count(tokenizer.semantic_encoder.parameters()) / 1e6, 2),
            "discriminator_params_m": round(count(gan.discriminator.parameters()) / 1e6, 2),
            "warmup": args.warmup, "repeats": args.repeats, "torch": torch.__version__,
        }
    record(args.results, values)
    return 0


if __name__ == "__main__":
    sys.exit(main())

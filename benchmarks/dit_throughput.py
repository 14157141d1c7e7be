"""DiT training throughput, model FLOPs utilisation and peak memory.

    python -m benchmarks.dit_throughput                                  # paper preset, cuda, bf16
    python -m benchmarks.dit_throughput --preset tiny --device cpu --batch 4 --repeats 2

Training: full AdamW steps of ``FlowMatching.loss`` on 10 s clips (250 latent frames) with
random weights and inputs, bf16 autocast over float32 weights on CUDA (float32 on CPU), once
without and once with per-block gradient checkpointing. Sampling latency, end to end and in the
dtype ``generate`` loads, is ``benchmarks/generate_latency.py``'s.

FLOPs: ``flops_per_sample`` = 3 x the forward FLOPs that ``torch.utils.flop_counter`` counts
(matmuls, convolutions, SDPA) in one clip's training forward, the whole ``FlowMatching.loss``:
content adapter, context and time-aligned projections included (backward = 2 x forward;
recomputation under gradient checkpointing is not counted, as usual for MFU).
MFU = flops_per_sample x samples/s / the device's peak dense FLOP/s in the dtype the matmuls
run in: bf16 tensor cores under autocast, plain fp32 with ``--no-autocast`` (``--peak-tflops``
overrides; none on CPU). One JSON line per measurement is printed and appended to
benchmarks/results/dit.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.sampling.cfm import FlowMatching

from benchmarks.common import record

RESULTS = ROOT / "benchmarks" / "results" / "dit.jsonl"
# dense peak TFLOP/s by device-name substring, most specific first (NVIDIA data sheets)
PEAK_TFLOPS = {"bf16": {"H100 NVL": 835.5, "H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0,
                        "L40S": 362.1},
               "fp32": {"H100 NVL": 60.0, "H100 PCIe": 51.2, "H100": 66.9, "H200": 66.9, "A100": 19.5,
                        "L40S": 91.6}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="paper, audiogen, small or tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16, help="training clips per step")
    parser.add_argument("--frames", type=int, default=250, help="latent frames per clip (250 = 10 s)")
    parser.add_argument("--text-tokens", type=int, default=32, help="caption length in text-encoder tokens")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="timed training steps")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak dense TFLOP/s in the run's dtype")
    parser.add_argument("--no-autocast", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    times = []
    for i in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_tflops(args: argparse.Namespace, device: torch.device, dtype: str) -> float | None:
    if args.peak_tflops is not None or device.type != "cuda":
        return args.peak_tflops
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS[dtype].items() if k in name), None)



def make_batch(model: AudioGenModel, batch: int, args: argparse.Namespace, device: torch.device):
    cfg = model.config
    latents = torch.randn(batch, cfg.latent_dim, args.frames, device=device)
    text = torch.randn(batch, args.text_tokens, cfg.text_embed_dim or cfg.content_dim, device=device)
    return (latents, torch.ones(batch, args.frames, dtype=torch.bool, device=device), text,
            torch.ones(batch, args.text_tokens, dtype=torch.bool, device=device))


def forward_flops_per_sample(model: AudioGenModel, args: argparse.Namespace, device: torch.device) -> float:
    """FLOPs of one clip's training forward (the whole flow-matching loss)."""
    counter = FlopCounterMode(display=False)
    with counter:  # (FlopCounterMode's module tracker fails under no_grad)
        FlowMatching(model).loss(*make_batch(model, 1, args, device), generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure_training(model: AudioGenModel, args: argparse.Namespace, device: torch.device, autocast,
                     checkpointing: bool) -> dict:
    model.train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    else:
        model.disable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch(model, args.batch, args, device)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with autocast():
            loss = FlowMatching(model).loss(*batch, generator=generator)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed(step, device, args.warmup, args.repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"step_s": step_s, "peak_mem_gib": peak}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with device:
        model = AudioGenModel.from_preset(args.preset)
    use_autocast = device.type == "cuda" and not args.no_autocast
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_autocast else contextlib.nullcontext
    peak = peak_tflops(args, device, "bf16" if use_autocast else "fp32")
    cfg = model.config
    common = {
        "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "dtype": "bf16-autocast" if use_autocast else "float32", "frames": args.frames,
        "text_tokens": args.text_tokens, "width": cfg.dit_embed_dim, "depth": cfg.dit_depth,
        "params_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    with autocast():
        flops = 3 * forward_flops_per_sample(model, args, device)

    records = []
    for checkpointing in (False, True):
        result = measure_training(model, args, device, autocast, checkpointing)
        samples_per_s = args.batch / result["step_s"]
        achieved = flops * samples_per_s
        records.append({
            "benchmark": "dit_train", "batch": args.batch, "grad_checkpointing": checkpointing,
            "step_s": round(result["step_s"], 4), "samples_per_s": round(samples_per_s, 2),
            "flops_per_sample": flops, "achieved_tflops": round(achieved / 1e12, 4),
            "peak_tflops": peak, "mfu": None if peak is None else round(achieved / (peak * 1e12), 4),
            "peak_mem_gib": None if result["peak_mem_gib"] is None else round(result["peak_mem_gib"], 2)})
    for values in records:
        record(args.results, {**values, **common})
    return 0


if __name__ == "__main__":
    sys.exit(main())

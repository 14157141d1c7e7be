"""Real-time factor of DashengTokenizer encode and decode on 10 s clips.

    python -m benchmarks.tokenizer_rtf                                # full size, cuda, batch 1 and 32
    python -m benchmarks.tokenizer_rtf --preset tiny --device cpu     # quick CPU smoke run

Weights are random (timing does not depend on them) unless ``--checkpoint`` is given. On CUDA
the model runs under bf16 autocast (front ends and ISTFT head stay float32, as in the model).
Prints one JSON line per (stage, batch) and appends it to benchmarks/results/tokenizer_rtf.jsonl.
RTF = wall time / seconds of audio processed (lower is faster; < 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
from dashflow.tokenizer.model import DashengTokenizer

from benchmarks.common import record

RESULTS = ROOT / "benchmarks" / "results" / "tokenizer_rtf.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="paper (official size), base, 1.2b or tiny")
    parser.add_argument("--checkpoint", default=None, help="load weights from this folder / hub id instead")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median kept)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-autocast", action="store_true", help="run float32 on CUDA too")
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace, device: torch.device) -> DashengTokenizer:
    if args.checkpoint:
        return DashengTokenizer.from_pretrained(args.checkpoint, device=device)
    with device:  # initialise directly on the target device
        return DashengTokenizer.from_preset(args.preset).eval()


def timed(fn, device: torch.device, warmup: int, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    result = None
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), result



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args, device)
    use_autocast = device.type == "cuda" and not args.no_autocast
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_autocast else contextlib.nullcontext
    samples = int(args.seconds * model.sample_rate)
    common = {
        "benchmark": "tokenizer_rtf", "preset": args.checkpoint or args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(), "dtype": "bf16-autocast" if use_autocast else "float32",
        "clip_seconds": args.seconds, "torch": torch.__version__,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "threads": torch.get_num_threads(),
    }
    for batch in args.batch_sizes:
        wav = 0.1 * torch.randn(batch, samples, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode(), autocast():
            encode_s, encoding = timed(partial(model.encode, wav), device, args.warmup, args.repeats)
            decode_s, _ = timed(partial(model.decode, encoding.latents), device, args.warmup, args.repeats)
        audio_s = batch * args.seconds
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        for stage, seconds in (("encode", encode_s), ("decode", decode_s)):
            record(args.results, {**common, "stage": stage, "batch": batch, "latents": encoding.latents.shape[1],
                                  "time_s": round(seconds, 5), "rtf": round(seconds / audio_s, 6),
                                  "x_realtime": round(audio_s / seconds, 1),
                                  "peak_mem_gib": None if peak is None else round(peak, 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

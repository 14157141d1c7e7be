"""What the sampler's per-generation constants and the skipped no-op call buy, as a ratio in one run.

    python -m benchmarks.sampling_constants --presets small paper --frames 50 --repeats 3   # CPU

For each DiT preset (random weights, one text prompt of 32 tokens, CFG 5.0, 25 sway steps) the
same sampling runs two ways, alternated: ``per_call`` recomputes in every model call what only
depends on the conditioning (embedded context, each block's time-aligned projection and
cross-attention keys / values, the mask checks) and makes the official 26th call, as the sampler
did before; ``prepared`` computes those once per generation and skips the call whose step is
0 x v. Reported: median seconds of each, their ratio, and the largest difference between the two
results (0 means bit-identical). One JSON line per preset, appended to
benchmarks/results/sampling_constants.jsonl.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.sampling.cfm import FlowMatching

from benchmarks.common import record

RESULTS = Path(__file__).resolve().parent / "results" / "sampling_constants.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=250, help="latent frames (250 = 10 s)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def run(model: AudioGenModel, cond, args: argparse.Namespace, prepared: bool) -> tuple[float, torch.Tensor]:
    """Seconds of one sampling, and its latents."""
    if not prepared:
        model.prepare = lambda _cond: None  # every call computes its conditioning itself
    try:
        start = time.perf_counter()
        latents = FlowMatching(model).sample(cond, num_steps=args.steps, guidance_scale=5.0, skip_final_step=prepared,
                                             generator=torch.Generator().manual_seed(0))
        if latents.device.type == "cuda":
            torch.cuda.synchronize(latents.device)
        return time.perf_counter() - start, latents
    finally:
        model.__dict__.pop("prepare", None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    for preset in args.presets:
        torch.manual_seed(0)
        model = AudioGenModel.from_preset(preset).to(device).eval()
        text = torch.randn(1, 32, model.config.text_embed_dim or model.config.content_dim, device=device)
        with torch.inference_mode():
            cond = model.condition(text, torch.ones(1, 32, dtype=torch.bool, device=device),
                                   latent_lengths=args.frames)
            run(model, cond, args, prepared=True)  # warm-up
            times: dict[bool, list[float]] = {False: [], True: []}
            outputs = {}
            for _ in range(args.repeats):
                for prepared in (False, True):
                    seconds, outputs[prepared] = run(model, cond, args, prepared)
                    times[prepared].append(seconds)
        per_call, once = statistics.median(times[False]), statistics.median(times[True])
        record(args.results, {
            "benchmark": "sampling_constants", "preset": preset, "device": str(device),
            "device_name": platform.processor() or platform.machine() if device.type == "cpu"
            else torch.cuda.get_device_name(device), "frames": args.frames, "steps": args.steps,
            "per_call_s": round(per_call, 3), "prepared_s": round(once, 3), "speedup": round(per_call / once, 3),
            "max_abs_diff": float((outputs[True] - outputs[False]).abs().max()),
            "threads": torch.get_num_threads(), "torch": torch.__version__})
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())

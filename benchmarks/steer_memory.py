"""One generation in a fresh process, for ``benchmarks/steer.py``'s memory stage: prints one JSON
line with its peak resident memory.

    python -m benchmarks.steer_memory --seconds 120 --window 6     # long-form, 6 s windows
    python -m benchmarks.steer_memory --seconds 60                 # one pass

``rss_loaded_mib``: resident memory once the demo pipeline is loaded and has run once; ``peak_mib``:
the process's high-water mark (Linux ``VmHWM``, reset after loading) over the generation;
``output_mib``: the returned audio itself (float32), which grows with the duration whatever the
method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from dashflow.generation.pipelines.audio import load_pipeline

from benchmarks.common import ROOT


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--window", type=float, default=None, help="window seconds (default: one pass)")
    parser.add_argument("--pipeline", type=Path, default=ROOT / "generation" / "demo" / "pipeline")
    parser.add_argument("--prompt", default="rock music")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    pipe(args.prompt, 1.0, num_inference_steps=2, seed=0)  # first-call allocations, as for every length
    loaded = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    start = time.perf_counter()
    result = pipe(args.prompt, args.seconds, window_length_in_s=args.window, seed=0)
    wall = time.perf_counter() - start
    print(json.dumps({"seconds": args.seconds, "windowed": args.window is not None, "window_s": args.window,
                      "rss_loaded_mib": round(loaded, 1), "peak_mib": round(status_mib("VmHWM"), 1),
                      "output_mib": round(result.audios.nbytes / 2 ** 20, 1), "wall_s": round(wall, 1),
                      "device": "cpu", "threads": 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

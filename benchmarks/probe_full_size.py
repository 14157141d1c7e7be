"""One probe task end to end with the full-size DashengTokenizer (official layout, random weights).

    python -m benchmarks.probe_full_size --folder /tmp/official --task data/probe_tasks/speaker_gender.jsonl

Writes random weights at the official size (``paper``: 805 M parameters) as the hub ships them:
``config.json`` with ``model_type: dashengtokenizer`` and the official fields, ``model.safetensors``
without dashflow metadata, so ``load_codec`` takes the official path. Then ``dashflow probe`` runs
in a child process on the task; its wall time and peak resident memory (``ru_maxrss`` of the child)
are appended to benchmarks/results/probe_full_size.jsonl. The scores of random weights mean nothing;
the run shows the path works at full size and what it costs on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import record
from benchmarks.load_time import write_official

RESULTS = Path(__file__).resolve().parent / "results" / "probe_full_size.jsonl"
OFFICIAL_FIELDS = ("embed_dim", "depth", "num_heads", "n_mels_patch", "hop_length", "upsample_tokens",
                   "decoder_embed_dim", "decoder_depth", "decoder_intermediate_size", "istft_n_fft", "istft_hop")


def official_config(folder: Path) -> None:
    """Rewrite ``config.json`` as the hub's: transformers' model_type and architectures, no diffusers keys."""
    config = json.loads((folder / "config.json").read_text())
    official = {"model_type": "dashengtokenizer", "architectures": ["DashengTokenizerModel"],
                **{k: config[k] for k in OFFICIAL_FIELDS}}
    (folder / "config.json").write_text(json.dumps(official, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="where the official-format folder goes")
    parser.add_argument("--task", required=True, help="probe-task manifest")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    folder = args.folder / "tokenizer"
    write_official("tokenizer", folder)
    official_config(folder)
    out = args.folder / "probe"
    command = [sys.executable, "-m", "dashflow.cli", "probe", "--task", args.task, "--encoder",
               f"full={folder}", "--out", str(out), "--cache", "", "--device", args.device]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return done.returncode
    results = json.loads((out / "probe.json").read_text())
    task = next(iter(results["tasks"]))
    scores = results["encoders"]["full"]["scores"][task]
    record(args.results, {"benchmark": "probe_full_size", "task": task, "clips": results["tasks"][task]["clips"],
                          "parameters": results["encoders"]["full"]["parameters"], "device": args.device,
                          "wall_s": round(wall, 1), "peak_rss_gib": round(
                              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, 2),
                          "test_accuracy_random_weights": scores["test"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

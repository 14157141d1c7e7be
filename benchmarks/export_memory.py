"""Peak memory and disk of exporting a run's raw + EMA pipelines, frozen parts at full size.

    python -m benchmarks.export_memory            # paper-size tokenizer (3.2 GB, frozen), small DiT, CPU

What ``recipes/tta.py`` does at its end (``dashflow.training.export_pipelines``): gather the
weights, build standalone models, save ``final/raw`` and ``final/ema``. Reports the process's
peak resident memory before and after the export, the export time and the folder's size on disk
(hard links counted once). One JSON line, appended to benchmarks/results/export_memory.jsonl.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.training.text_to_audio import (
    Frozen,
    TextConditioner,
    make_pipeline,
)
from dashflow.text_encoders import load_text_encoder
from dashflow.tokenizer.model import DashengTokenizer

from benchmarks.common import record
from dashflow.training import EMAConfig, attach_ema, build_accelerator, export_pipelines

RESULTS = Path(__file__).resolve().parent / "results" / "export_memory.jsonl"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer-preset", default="paper")
    parser.add_argument("--dit-preset", default="small")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        accelerator = build_accelerator(tmp, "no", log_with=None, cpu=True)
        torch.manual_seed(0)
        with torch.device("meta"):
            tokenizer = DashengTokenizer.from_preset(args.tokenizer_preset)
        tokenizer = tokenizer.to_empty(device="cpu").requires_grad_(False).eval()
        with torch.no_grad():
            for param in tokenizer.parameters():  # real pages, as a loaded tokenizer has
                param.normal_(0, 0.02)
        encoder = load_text_encoder("minilm")
        model = AudioGenModel.from_preset(args.dit_preset, latent_dim=tokenizer.latent_dim, text_embed_dim=encoder.dim)
        model = accelerator.prepare(model)
        ema = attach_ema(accelerator, model, EMAConfig())
        frozen = Frozen(tokenizer, TextConditioner(encoder))
        before, start = peak_gib(), time.perf_counter()
        export_pipelines(accelerator, model, ema, partial(make_pipeline, "tta", frozen=frozen), f"{tmp}/final")
        seconds = time.perf_counter() - start
        disk = subprocess.run(["du", "-sm", f"{tmp}/final"], capture_output=True, text=True, check=True).stdout
        record(args.results, {"benchmark": "export_memory", "tokenizer": args.tokenizer_preset, "dit": args.dit_preset,
                              "peak_before_gib": round(before, 2), "peak_after_gib": round(peak_gib(), 2),
                              "export_s": round(seconds, 1), "disk_mb": int(disk.split()[0])})
    return 0


if __name__ == "__main__":
    sys.exit(main())

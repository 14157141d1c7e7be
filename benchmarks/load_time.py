"""Load time of full-size official-format folders, weights hash included, first and second time.

    python -m benchmarks.load_time --folder /tmp/official     # writes the folders once, then times

Writes random weights at the official sizes in the official layout (``config.json`` +
``model.safetensors`` with no dashflow metadata, as downloaded from the hub): the DashengTokenizer
(``paper``, 805 M parameters) and the Dasheng-AudioGen DiT (``audiogen``, 2.19 B). Each load runs
in a fresh process: ``from_pretrained`` then ``weights_hash()`` (what ``generate`` records in every
sidecar), once with an empty hash cache and once more (the file-identity cache answers). One JSON
line per (model, run), appended to benchmarks/results/load_time.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import record

RESULTS = Path(__file__).resolve().parent / "results" / "load_time.jsonl"
MODELS = {"tokenizer": ("dashflow.tokenizer.model", "DashengTokenizer", "paper"),
          "audiogen": ("dashflow.generation.model.audiogen", "AudioGenModel", "audiogen")}
CHILD = """
import importlib, sys, time
start = time.perf_counter()
cls = getattr(importlib.import_module({module!r}), {name!r})
imported = time.perf_counter()
model = cls.from_pretrained({folder!r})
loaded = time.perf_counter()
model.weights_hash()
print(imported - start, loaded - imported, time.perf_counter() - loaded)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="where the official-format folders go")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def write_official(key: str, folder: Path) -> None:
    """Random full-size weights in the official layout (no weights-hash metadata)."""
    if (folder / "model.safetensors").is_file():
        return
    import importlib

    import torch
    from safetensors.torch import save_file

    module, name, preset = MODELS[key]
    cls = getattr(importlib.import_module(module), name)
    with torch.device("meta"):
        model = cls.from_preset(preset)
    generator = torch.Generator().manual_seed(0)
    state = {k: 0.02 * torch.randn(v.shape, generator=generator) if v.is_floating_point()
             else torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = args.folder / "hash_cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HOME": str(cache)}  # an empty hash cache for the first load
    for key in args.models:
        folder = args.folder / key
        write_official(key, folder)
        size_gb = (folder / "model.safetensors").stat().st_size / 1e9
        module, name, _ = MODELS[key]
        for run in ("first", "second"):
            code = CHILD.format(module=module, name=name, folder=str(folder))
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            wall = time.perf_counter() - start
            imports, load, hashing = (float(x) for x in done.stdout.split()[-3:])
            record(args.results, {"benchmark": "load_time", "model": key, "run": run, "file_gb": round(size_gb, 2),
                                  "wall_s": round(wall, 2), "import_s": round(imports, 2), "load_s": round(load, 2),
                                  "hash_s": round(hashing, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

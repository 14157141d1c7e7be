"""Measure the demo text-to-audio model against its corpus's held-out clips.

    python recipes/demo/evaluate.py --corpus runs/demo/corpus --classifier runs/demo/classifier \
        --pipeline generation/demo/pipeline --baseline-tokenizer OLD_TOKENIZER --out runs/demo/eval

1. Generates every class's canonical prompt (``summary.json``) at seeds 0, 1, 2 with the default
   settings of ``generate`` (25 steps, CFG 5, duration predicted), one seed for all prompts of a
   batch, into ``out/generated`` (WAV + settings sidecar).
2. Scores them with ``dashflow eval --classifier`` against held-out real clips (top-1 against the
   prompted class, FD in the classifier's embedding, prompt separation) into ``out/report``; the
   classifier's own top-1 on real clips it never saw (``train-classifier --test-manifest``, the
   generator's training clips) goes into ``out/results.json`` beside it.
3. Reconstructs held-out clips with the pipeline's tokenizer (and ``--baseline-tokenizer``):
   Mel-16k distance (``eval.reconstruction.mel_distance``), the log-mel correlations of the
   generated clips (same prompt / same seed) and the default dog clip's length and number of
   events, all in ``out/results.json``.
4. Draws spectrogram grids: ``generated_vs_heldout.png`` (one generated clip per class beside a
   real held-out clip) and ``tokenizer_reconstructions.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from dashflow.eval.events import count_events
from dashflow.eval.inhouse import InhouseClassifier
from dashflow.eval.reconstruction import mel_distance
from dashflow.eval.plots import log_mel_image
from dashflow.generation.pipelines.audio import load_pipeline

from dashflow.audio import load_audio, save_audio
from dashflow.cli import write_sidecar
from dashflow.codecs import load_codec, reconstruct
from dashflow.manifests import read_manifest

SEEDS = (0, 1, 2)
REFERENCE_PER_CLASS = 6


def generate_set(pipeline_dir: Path, prompts: dict[str, str], out: Path) -> list[dict]:
    """Every prompt at every seed of SEEDS; returns the sidecars written."""
    pipe = load_pipeline(pipeline_dir)
    labels = list(prompts)
    written = []
    for seed in SEEDS:
        result = pipe([prompts[label] for label in labels], num_inference_steps=25, guidance_scale=5.0,
                      seed=[seed] * len(labels))
        for j, label in enumerate(labels):
            path = out / f"{label.replace(' ', '_')}_seed{seed}.wav"
            save_audio(path, result.audios[j, :result.lengths[j]], result.sample_rate)
            sidecar = {"output": path.name, "prompt": prompts[label], "label": label, "seed": seed,
                       "steps": 25, "cfg": 5.0, "duration": result.lengths[j] / result.sample_rate,
                       "checkpoint": str(pipeline_dir)}
            write_sidecar(path, sidecar)
            written.append(sidecar)
    return written


def logmel_correlations(sidecars: list[dict], folder: Path) -> dict[str, float]:
    """Mean Pearson correlation of log-mel images (cut to the shorter clip) over pairs of one
    prompt at two seeds and of two prompts at one seed: the measure issue 9 was filed with."""
    images = {(s["label"], s["seed"]): log_mel_image(load_audio(folder / s["output"]).numpy(), 16000)
              for s in sidecars}
    same_prompt, same_seed = [], []
    keys = list(images)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if (a[0] == b[0]) == (a[1] == b[1]):
                continue
            frames = min(images[a].shape[1], images[b].shape[1])
            r = float(np.corrcoef(images[a][:, :frames].ravel(), images[b][:, :frames].ravel())[0, 1])
            (same_prompt if a[0] == b[0] else same_seed).append(r)
    return {"same_prompt": float(np.mean(same_prompt)), "same_seed": float(np.mean(same_seed)),
            "separation": float(np.mean(same_prompt) - np.mean(same_seed))}


def reconstruction_scores(tokenizers: dict[str, Path], clips: list[dict]) -> dict[str, dict]:
    """Mean Mel-16k distance of each tokenizer over ``clips``; keeps the reconstructions' audio."""
    scores, audio = {}, {}
    for name, folder in tokenizers.items():
        model = load_codec(folder)
        distances = []
        for record in clips:
            wav = load_audio(record["audio"])
            with torch.no_grad():
                recon = reconstruct(model, wav).numpy()
            distances.append(mel_distance(recon, wav.numpy()))
            audio[(name, record["audio_id"])] = recon
        scores[name] = {"folder": str(folder), "mel16k": float(np.mean(distances)), "clips": len(clips)}
    return {"scores": scores, "audio": audio}


def spectrogram_grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path) -> None:
    """One row per entry of ``rows`` (title, [(column title, wav [S])]) as log-mel images."""
    columns = max(len(cells) for _, cells in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 1.5 * len(rows)), squeeze=False)
    for r, (title, cells) in enumerate(rows):
        for c, (column, wav) in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(log_mel_image(wav, 16000), origin="lower", aspect="auto", cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}: {column}" if c == 0 else column, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--pipeline", type=Path, default=Path("generation/demo/pipeline"))
    parser.add_argument("--baseline-tokenizer", type=Path, help="a tokenizer to compare reconstructions with")
    parser.add_argument("--out", type=Path, default=Path("runs/demo/eval"))
    args = parser.parse_args()

    summary = json.loads((args.corpus / "summary.json").read_text())
    prompts = summary["prompts"]
    heldout = read_manifest(args.corpus / "heldout.jsonl")
    reference = [r for label in prompts for r in [x for x in heldout if x["label"] == label][:REFERENCE_PER_CLASS]]
    generated_dir, reference_dir = args.out / "generated", args.out / "heldout"
    reference_dir.mkdir(parents=True, exist_ok=True)
    for record in reference:
        target = reference_dir / Path(record["audio"]).name
        if not target.exists():
            target.hardlink_to(record["audio"])

    sidecars = generate_set(args.pipeline, prompts, generated_dir)
    dog = next(s for s in sidecars if s["label"] == "dog" and s["seed"] == 0)
    dog_wav = load_audio(generated_dir / dog["output"]).numpy()
    subprocess.run([sys.executable, "-m", "dashflow.cli", "eval", "--generated", str(generated_dir),
                    "--reference", str(reference_dir), "--classifier", str(args.classifier),
                    "--metrics", "inhouse", "--no-cache", "--out", str(args.out / "report")], check=True)

    tokenizers = {"demo tokenizer": args.pipeline / "tokenizer"}
    if args.baseline_tokenizer:
        tokenizers["baseline"] = args.baseline_tokenizer
    recon = reconstruction_scores(tokenizers, reference)
    results = {"classifier": InhouseClassifier.load(args.classifier).record["validation"],
               "reconstruction": recon["scores"], "logmel_correlation": logmel_correlations(sidecars, generated_dir),
               "dog_seed0": {"seconds": round(dog["duration"], 2), "events": count_events(dog_wav)}}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    rows = []
    for label in prompts:
        real = next(r for r in reference if r["label"] == label)
        fake = generated_dir / f"{label.replace(' ', '_')}_seed0.wav"
        rows.append((label, [("generated", load_audio(fake).numpy()), ("held-out real", load_audio(real["audio"]).numpy())]))
    spectrogram_grid(rows, args.out / "generated_vs_heldout.png")
    rows = []
    for label in prompts:
        real = next(r for r in reference if r["label"] == label)
        cells = [("original", load_audio(real["audio"]).numpy())]
        cells += [(name, recon["audio"][(name, real["audio_id"])]) for name in tokenizers]
        rows.append((label, cells))
    spectrogram_grid(rows, args.out / "tokenizer_reconstructions.png")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

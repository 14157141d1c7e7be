"""Is a low-dimensional latent space easier for the DiT? Demo-scale DiT arms, one per latent space.

    python -m benchmarks.losatok_dit --corpus data/probe_tasks/demo_corpus \
        --classifier runs/steer/classifier --arm demo=runs/losatok_demo/dit/demo \
        --arm losatok=runs/losatok_demo/dit/losatok --out benchmarks/results/losatok_demo

Each ``--arm NAME=RUN`` is an ``output_dir`` of ``recipes/tta.py`` trained with the same DiT, steps
and data (``recipes/demo/losatok.sh``), its checkpoints kept. At every checkpoint the EMA weights
are put into the run's exported pipeline (``final/ema``: the frozen codec, text encoder and
normaliser are the same at every step) and every class's canonical prompt of the corpus is
generated at the curve's seeds with ``generate``'s defaults (25 steps, CFG 5, duration predicted),
then scored with the in-house classifier: top-1 against the prompted class, the Frechet distance
of its embeddings to held-out real clips, and prompt separation (cosine of same-prompt pairs minus
that of same-seed pairs). The final step is scored at three seeds. Writes ``dit_arms.json``,
``dit_arms.md`` and ``dit_curves.png``, reading each codec's reconstruction and probe scores from
``codec_bench.json`` in ``--out`` when ``benchmarks.losatok_demo`` has written it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from dashflow.eval.frechet import frechet_distance_of
from dashflow.eval.inhouse import InhouseClassifier, prompt_separation, top1_by_class
from dashflow.generation.pipelines.audio import load_pipeline
from safetensors.torch import load_file

from dashflow.audio import load_audio
from dashflow.manifests import read_manifest
from dashflow.training.checkpoints import STATE_NAME, list_checkpoints
from dashflow.training.ema import EMA_NAME

CURVE_SEEDS = (0, 1)
FINAL_SEEDS = (0, 1, 2)
REFERENCE_PER_CLASS = 6


def score_step(pipe, classifier: InhouseClassifier, prompts: dict[str, str], seeds: tuple[int, ...],
               reference: np.ndarray) -> dict:
    """Generate every prompt at every seed with ``pipe``; top-1, FD to ``reference`` [N, E] and prompt
    separation in the classifier's embedding."""
    labels, clips, seed_of = list(prompts), [], []
    for seed in seeds:
        result = pipe([prompts[label] for label in labels], num_inference_steps=25, guidance_scale=5.0,
                      seed=[seed] * len(labels))
        clips += [result.audios[j, :result.lengths[j]] for j in range(len(labels))]
        seed_of += [seed] * len(labels)
    true = labels * len(seeds)
    logits = classifier.predict(clips)
    top1 = top1_by_class([classifier.labels[i] for i in logits.argmax(axis=1)], true)
    embeddings = classifier.embed(clips)
    return {"top1": top1["overall"], "per_class": {k: v[0] / v[1] for k, v in top1["per_class"].items()},
            "fd": frechet_distance_of(embeddings, reference),
            "separation": prompt_separation(embeddings, true, seed_of)["separation"],
            "seconds": float(np.mean([len(c) for c in clips]) / result.sample_rate), "seeds": list(seeds)}


def score_arm(run: Path, classifier: InhouseClassifier, prompts: dict[str, str], reference: np.ndarray) -> dict:
    """Every kept checkpoint of ``run`` scored at CURVE_SEEDS, the last one also at FINAL_SEEDS."""
    pipe = load_pipeline(run / "final" / "ema")
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    names = {name for name, _ in transformer.named_parameters()}
    curve = []
    checkpoints = list_checkpoints(run)
    for checkpoint in checkpoints:
        ema = load_file(str(checkpoint / EMA_NAME))
        if set(ema) != names:
            raise SystemExit(f"{checkpoint}: EMA weights are not this pipeline's transformer's")
        transformer.load_state_dict(ema, strict=False)  # parameters only; buffers are the export's
        step = json.loads((checkpoint / STATE_NAME).read_text())["step"]
        start = time.perf_counter()
        row = {"step": step, **score_step(pipe, classifier, prompts, CURVE_SEEDS, reference)}
        print(f"{run.name} step {step}: top-1 {row['top1']:.3f}, FD {row['fd']:.2f}, separation "
              f"{row['separation']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        curve.append(row)
    final = score_step(pipe, classifier, prompts, FINAL_SEEDS, reference)
    config = transformer.config
    return {"run": str(run), "latent_dim": config.latent_dim,
            "dit_parameters": sum(p.numel() for p in transformer.parameters()),
            "steps": curve[-1]["step"] if curve else None, "final": final, "curve": curve}


def codec_rows(codec_bench: Path, names: dict[str, str]) -> dict[str, dict]:
    """Each arm's codec in the codec benchmark (``names``: arm -> encoder name): reconstruction
    (Mel-16k, STFT-16k, PESQ, STOI) and probe means (linear, k-NN), when benchmarked."""
    if not codec_bench.is_file():
        return {}
    encoders = json.loads(codec_bench.read_text())["encoders"]
    rows = {}
    for arm, name in names.items():
        if name not in encoders:
            continue
        entry = encoders[name]
        audio, speech = entry["reconstruction"].get("audio", {}), entry["reconstruction"].get("speech", {})
        probes = entry["probes"].values()
        rows[arm] = {"mel16k": audio.get("mel_distance"), "stft16k": audio.get("stft_distance"),
                     "pesq": speech.get("pesq"), "stoi": speech.get("stoi"),
                     "probe_mean": 100 * float(np.mean([p["test"] for p in probes])),
                     "knn_mean": (100 * float(np.mean([p["knn"] for p in probes]))
                                  if all("knn" in p for p in probes) else None)}
    return rows


def plot_curves(arms: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, arm in arms.items():
        steps = [row["step"] for row in arm["curve"]]
        for ax, key in zip(axes, ("top1", "fd", "separation")):
            ax.plot(steps, [row[key] for row in arm["curve"]], marker="o", label=f"{name} ({arm['latent_dim']}-d)")
    for ax, title in zip(axes, ("in-house top-1 (higher is better)", "FD, classifier embedding (lower)",
                                "prompt separation (higher)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("DiT training step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(arms: dict[str, dict], codecs: dict[str, dict]) -> str:
    lines = ["| arm | latent dim | DiT params | steps | top-1 | FD | separation | Mel-16k | STFT-16k | PESQ | "
             "STOI | probe mean | k-NN mean |", "|" + "---|" * 13]
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    for name, arm in arms.items():
        final, codec = arm["final"], codecs.get(name, {})
        lines.append(f"| {name} | {arm['latent_dim']} | {arm['dit_parameters'] / 1e6:.2f} M | {arm['steps']} | "
                     f"{final['top1'] * 100:.1f} | {final['fd']:.2f} | {final['separation']:.3f} | "
                     f"{fmt(codec.get('mel16k'), '.3f')} | {fmt(codec.get('stft16k'), '.3f')} | "
                     f"{fmt(codec.get('pesq'), '.2f')} | {fmt(codec.get('stoi'), '.3f')} | "
                     f"{fmt(codec.get('probe_mean'), '.1f')} | {fmt(codec.get('knn_mean'), '.1f')} |")
    lines += ["", "Training curve (top-1 % / FD / separation, seeds " + ", ".join(map(str, CURVE_SEEDS)) + "):", "",
              "| step | " + " | ".join(arms) + " |", "|" + "---|" * (len(arms) + 1)]
    steps = sorted({row["step"] for arm in arms.values() for row in arm["curve"]})
    for step in steps:
        cells = []
        for arm in arms.values():
            row = next((r for r in arm["curve"] if r["step"] == step), None)
            cells.append("–" if row is None else f"{row['top1'] * 100:.1f} / {row['fd']:.2f} / {row['separation']:.3f}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="the demo corpus (summary.json, heldout.jsonl)")
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--arm", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--codec-name", action="append", default=[], metavar="ARM=ENCODER",
                        help="the codec benchmark's encoder name of an arm's codec (default: the arm's name)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    prompts = json.loads((args.corpus / "summary.json").read_text())["prompts"]
    classifier = InhouseClassifier.load(args.classifier)
    heldout = read_manifest(args.corpus / "heldout.jsonl")
    reference = [r["audio"] for label in prompts for r in [x for x in heldout if x["label"] == label][:REFERENCE_PER_CLASS]]
    reference_embeddings = classifier.embed([load_audio(path).numpy() for path in reference])

    runs = dict(spec.split("=", 1) for spec in args.arm)
    args.out.mkdir(parents=True, exist_ok=True)
    arms = {}
    for name, run in runs.items():  # an arm scored before, on the same checkpoints, is read back
        saved = args.out / f"dit_arm_{name}.json"
        steps = [int(p.name.removeprefix("step_")) for p in list_checkpoints(run)]
        previous = json.loads(saved.read_text()) if saved.is_file() else None
        if previous is None or [row["step"] for row in previous["curve"]] != steps:
            previous = score_arm(Path(run), classifier, prompts, reference_embeddings)
            saved.write_text(json.dumps(previous, indent=2) + "\n")
        arms[name] = previous
    codecs = codec_rows(args.out / "codec_bench.json", {**{n: n for n in runs}, **dict(s.split("=", 1) for s in args.codec_name)})
    result = {"classifier": str(args.classifier), "reference_clips": len(reference), "arms": arms, "codecs": codecs}
    (args.out / "dit_arms.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "dit_arms.md").write_text(markdown(arms, codecs))
    plot_curves(arms, args.out / "dit_curves.png")
    print(markdown(arms, codecs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Teaching the demo model sounds it never heard: LoRA adapters and full fine-tuning, measured.

    python -m benchmarks.finetune_demo --base generation/demo/pipeline --corpus DEMO_CORPUS \\
        --new-corpus runs/finetune_demo/corpus --classifier runs/finetune_demo/classifier \\
        --adapter cow=runs/finetune_demo/lora_cow --adapter sheep=runs/finetune_demo/lora_sheep \\
        --full runs/finetune_demo/full --out benchmarks/results/finetune_demo

``recipes/demo/finetune.sh`` trains what this reads: one LoRA run per new class (``--adapter
LABEL=RUN``, its ``final/lora.safetensors``) and a full fine-tune on all of them (``--full RUN``, its
``final/ema`` pipeline). Every prompt is generated with ``generate``'s defaults (25 steps, CFG 5,
duration predicted) at seeds 0, 1, 2 (one batch per seed) and judged by the in-house classifier
retrained with the new classes on held-out source recordings only: top-1 against the prompted class.

Prompts: every old class's canonical prompt (the model card's 66 clips) and every phrasing of each
new class. Models: the base; each adapter alone; all adapters stacked (weight 1 each); the full
fine-tune. Checks: the base with the adapters unloaded gives the base's output bit for bit (every
prompt, every seed); the stacked adapters fused give the unfused output within 1e-4.
Writes ``results.json`` and ``report.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from dashflow.eval.inhouse import InhouseClassifier, top1_by_class
from dashflow.generation.pipelines.audio import load_pipeline
from dashflow.generation.pipelines.lora import read_lora

from benchmarks.common import git_commit, write_report
from dashflow.demo_corpus import NEW_SFX

SEEDS = (0, 1, 2)
CARD_TOP1 = 0.909  # the bundled model card's old-class top-1 (22 prompts x 3 seeds, its own classifier)
FUSE_TOLERANCE = 1e-4


def generate(pipe, prompts: list[str]) -> list[list[np.ndarray]]:
    """Every prompt at every seed of SEEDS, one batch per seed: clips[seed index][prompt index]."""
    outputs = []
    for seed in SEEDS:
        result = pipe(prompts, num_inference_steps=25, guidance_scale=5.0, seed=[seed] * len(prompts))
        outputs.append([result.audios[j, :result.lengths[j]] for j in range(len(prompts))])
    return outputs


def scores(classifier: InhouseClassifier, clips: list[list[np.ndarray]], labels: list[str],
           new: list[str]) -> dict:
    """Top-1 of every new class and of the old classes together, with the per-class counts."""
    flat = [clip for per_seed in clips for clip in per_seed]
    true = labels * len(clips)
    logits = classifier.predict(flat)
    predicted = [classifier.labels[i] for i in logits.argmax(axis=1)]
    per_class = top1_by_class(predicted, true)["per_class"]
    old = [i for i, t in enumerate(true) if t not in new]
    known = [j for j, label in enumerate(classifier.labels) if label not in new]  # the card's judge's labels
    among_old = [classifier.labels[known[k]] for k in logits[np.ix_(old, known)].argmax(axis=1)]
    return {**{label: per_class[label][0] / per_class[label][1] for label in new},
            "old": float(np.mean([predicted[i] == true[i] for i in old])),
            "old_among_old_labels": float(np.mean([p == true[i] for p, i in zip(among_old, old)])),
            "per_class": {label: list(counts) for label, counts in per_class.items()},
            "confusions": sorted({f"{t} -> {p}" for p, t in zip(predicted, true) if t in new and p != t})}


def max_difference(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> float:
    return max(float(np.abs(x - y).max()) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def identical(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return all(np.array_equal(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def run_facts(run: Path) -> dict:
    wall = run / "wall_seconds"
    return {"run": str(run), "wall_seconds": int(wall.read_text()) if wall.exists() else None}


def report(results: dict) -> str:
    new = results["new_classes"]
    lines = ["# Teaching the demo model new sounds (LoRA and full fine-tuning)", "",
             (f"Commit {results['commit']}. Base: `{results['base']}`; new classes: {', '.join(new)} "
             f"({results['new_prompts']} prompts each x {len(SEEDS)} seeds); old classes: "
             f"{results['old_classes']} canonical prompts x {len(SEEDS)} seeds. Judge: the in-house classifier "
             f"retrained with the new classes on held-out source recordings "
             f"(its top-1 on real clips it never saw: {results['classifier_top1']:.1%})."), "",
             "| model | " + " | ".join(f"{label} top-1" for label in new) + " | old top-1 | old top-1, old labels only | trainable params "
             "| file | wall (2 CPU cores) |",
             "|---|" + "---|" * (len(new) + 5)]
    for name, row in results["models"].items():
        size = f"{row['bytes'] / 1e6:.2f} MB" if row.get("bytes") else "-"
        wall = f"{row['wall_seconds'] / 60:.1f} min" if row.get("wall_seconds") else "-"
        params = f"{row['trainable_parameters']:,}" if row.get("trainable_parameters") else "-"
        lines.append(f"| {name} | " + " | ".join(f"{row['scores'][label]:.1%}" for label in new)
                     + f" | {row['scores']['old']:.1%} | {row['scores']['old_among_old_labels']:.1%} | {params} | {size} "
                     f"| {wall} |")
    checks = results["checks"]
    lines += ["", f"- The card's old-class top-1 (its 22-class classifier): {CARD_TOP1:.1%}.",
              (f"- Adapters unloaded: output bit-identical to the base: **{checks['unloaded_identical']}** "
              f"(every prompt, seeds {', '.join(map(str, SEEDS))})."),
              (f"- Stacked adapters fused vs unfused: max |difference| {checks['fused_max_difference']:.2e} "
              f"(seeds {', '.join(map(str, SEEDS))}; tolerance {FUSE_TOLERANCE:g})."), "",
              "Misclassified new-class clips (prompted -> judged):", ""]
    for name, row in results["models"].items():
        lines.append(f"- {name}: {', '.join(row['scores']['confusions']) or 'none'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("generation/demo/pipeline"))
    parser.add_argument("--corpus", type=Path, required=True, help="the demo corpus (its canonical prompts)")
    parser.add_argument("--new-corpus", type=Path, required=True, help="build_corpus.py --new-classes output")
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--adapter", action="append", required=True, metavar="LABEL=RUN")
    parser.add_argument("--full", type=Path, required=True, help="the full fine-tuning run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/finetune_demo"))
    args = parser.parse_args(argv)

    old_prompts = json.loads((args.corpus / "summary.json").read_text())["prompts"]
    new = list(json.loads((args.new_corpus / "summary.json").read_text())["prompts"])
    adapters = {label: Path(run) for label, run in (spec.split("=", 1) for spec in args.adapter)}
    items = [(label, prompt) for label, prompt in old_prompts.items()] + [
        (label, prompt) for label in new for prompt in NEW_SFX[label][0]]
    labels, prompts = [label for label, _ in items], [prompt for _, prompt in items]
    classifier = InhouseClassifier.load(args.classifier)
    missing = [label for label in set(labels) if label not in classifier.labels]
    if missing:
        raise SystemExit(f"{args.classifier} does not know {', '.join(sorted(missing))}")

    pipe = load_pipeline(args.base)
    pipe.set_progress_bar_config(disable=True)
    models, outputs = {}, {}

    def measure(name: str, model, **facts) -> None:
        outputs[name] = generate(model, prompts)
        models[name] = {"scores": scores(classifier, outputs[name], labels, new), **facts}
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in models[name]["scores"].items()
                                      if isinstance(v, float)), flush=True)

    measure("base", pipe)
    for label, run in adapters.items():
        path = run / "final" / "lora.safetensors"
        pipe.load_lora_weights(path, adapter_name=label)
        tensors, _ = read_lora(path)
        measure(f"LoRA {label}", pipe, **run_facts(run), bytes=path.stat().st_size,
                trainable_parameters=sum(t.numel() for t in tensors.values()))
        pipe.unload_lora_weights()
    for label, run in adapters.items():
        pipe.load_lora_weights(run / "final" / "lora.safetensors", adapter_name=label)
    measure("LoRA " + " + ".join(adapters), pipe)
    pipe.fuse_lora()
    fused = generate(pipe, prompts)
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    unloaded = generate(pipe, prompts)
    checks = {"unloaded_identical": identical(unloaded, outputs["base"]),
              "fused_max_difference": max_difference(fused, outputs["LoRA " + " + ".join(adapters)])}

    full = load_pipeline(args.full / "final" / "ema")
    full.set_progress_bar_config(disable=True)
    measure("full fine-tune", full, **run_facts(args.full), bytes=folder_bytes(args.full / "final" / "ema" / "transformer"),
            trainable_parameters=sum(p.numel() for p in full.transformer.parameters()))

    results = {"commit": git_commit(), "base": str(args.base), "new_classes": new,
               "new_prompts": len(NEW_SFX[new[0]][0]), "old_classes": len(old_prompts), "seeds": list(SEEDS),
               "classifier": str(args.classifier),
               "classifier_top1": classifier.record["validation"]["top1"],
               "models": models, "checks": checks}
    write_report(args.out, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

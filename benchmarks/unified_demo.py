"""One DiT for three tasks against one DiT per task at the same steps, on the demo data.

    python -m benchmarks.unified_demo --corpus DEMO_CORPUS --se-corpus SE_CORPUS --classifier CLASSIFIER \\
        --work runs/unified_demo [--reference demo22=runs/losatok_demo/dit/demo] --out benchmarks/results/unified_demo

Reads the arms ``recipes/demo/unified.sh`` trains under ``--work`` (``unified``: text-to-audio +
text-to-music + speech enhancement; ``tta``, ``ttm``, ``se``: one task each, as many steps;
``tta_share``, ``ttm_share``, ``se_share``: one task each for its share of the unified arm's
steps, together as many; whichever have ``final/ema``). A ``--reference NAME=RUN`` is a single
text-to-audio run trained on every class of the corpus, sounds and music alike (its one pipeline
is scored on both class sets).

- Text: every class's canonical prompt at seeds 0, 1, 2 with ``generate``'s defaults (25 steps,
  CFG 5, duration predicted) through the arm's pipeline for the class's task (sounds: tta, the
  music styles and solo instruments: ttm), judged by the in-house classifier: top-1 against the
  prompted class, FD of the classifier embeddings against 6 held-out clips per class, prompt
  separation. Also ``solo piano`` through each ttm pipeline: what the classifier hears.
- Speech enhancement: ``enhance`` with its defaults (mask output, 4 samples averaged) on the SE
  corpus's test set (speakers and noise recordings no run trained on), scored against the clean
  clips: SI-SDR, wide-band PESQ, STOI and DNSMOS OVRL of the noisy input, of every arm with the
  se task and of the bundled enhancer; SI-SDR also per band of input SNR. The same on the
  corpus's validation set (voices no arm trained on, in training noise), where it has one: the
  numbers a model is chosen by.

Each arm's scores are kept in ``arm_<name>.json`` in ``--out`` with its weights' hash, and read
back while the arm's export is absent or unchanged; so are the noisy input's and the bundled
enhancer's (``enhancement_reference.json``). Writes ``results.json``, ``report.md`` and
``summary.png`` (top-1 per arm, SI-SDR by input SNR).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from dashflow.eval.enhancement import dnsmos, si_sdr, speech_scores
from dashflow.eval.inhouse import InhouseClassifier
from dashflow.generation.pipelines.audio import load_pipeline

from benchmarks.common import git_commit, write_report
from benchmarks.losatok_dit import FINAL_SEEDS, REFERENCE_PER_CLASS, score_step
from dashflow.audio import load_audio
from dashflow.cli import file_sha256
from dashflow.manifests import read_manifest
from dashflow.training import STATE_NAME, list_checkpoints, read_metrics

ARMS = ("unified", "tta", "ttm", "se", "tta_share", "ttm_share", "se_share")
BUNDLED_ENHANCER = Path("generation/demo/enhancer")
PIANO_PROMPT = "solo piano"


def class_sets(corpus: Path) -> dict[str, list[str]]:
    """tta / ttm -> the labels of the corpus's task manifests (sounds / music and instruments)."""
    return {task: sorted({r["label"] for r in read_manifest(corpus / f"train_{task}.jsonl")}) for task in ("tta", "ttm")}


def text_scores(export: Path, tasks: list[str], classifier: InhouseClassifier, prompts: dict[str, str],
                classes: dict[str, list[str]], references: dict[str, np.ndarray]) -> dict:
    """Every class set of ``classes`` through the pipeline of its task (``tasks``: the export's
    text tasks); a plain pipeline folder (``--reference``) scores every set with itself."""
    scores, single = {}, (export / "model_index.json").is_file()  # one pipeline for every class
    for task, labels in classes.items():
        if not single and task not in tasks:
            continue
        pipe = load_pipeline(export, task=None if single else task)
        pipe.set_progress_bar_config(disable=True)
        scores[task] = score_step(pipe, classifier, {label: prompts[label] for label in labels}, FINAL_SEEDS,
                                  references[task])
        if task == "ttm":
            result = pipe([PIANO_PROMPT] * len(FINAL_SEEDS), seed=list(FINAL_SEEDS))
            clips = [result.audios[j, :result.lengths[j]] for j in range(len(FINAL_SEEDS))]
            scores["solo_piano"] = [classifier.labels[i] for i in classifier.predict(clips).argmax(axis=1)]
        print(f"{export}: {task} top-1 {scores[task]['top1']:.3f}, FD {scores[task]['fd']:.1f}", flush=True)
    return scores


def enhancement_scores(checkpoint: Path, test: list[dict], out: Path) -> dict[str, float]:
    """``enhance`` (defaults) over the test set's noisy clips, scored against the clean ones."""
    noisy_dir = Path(test[0]["noisy"]).parent
    subprocess.run([sys.executable, "-m", "dashflow.generation.cli.enhance", str(noisy_dir), "-o", str(out),
                    "--checkpoint", str(checkpoint), "--device", "cpu", "--quiet"], check=True)
    return speech_means([(r["audio"], out / Path(r["noisy"]).name) for r in test])


def load_pair(clean_path: str | Path, estimate_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A clean clip and its estimate [S], cut to the shorter."""
    clean, estimate = load_audio(clean_path).numpy(), load_audio(estimate_path).numpy()
    size = min(clean.size, estimate.size)
    return clean[:size], estimate[:size]


def speech_means(pairs: list[tuple[str | Path, str | Path]]) -> dict[str, float]:
    """Mean SI-SDR, PESQ, STOI and DNSMOS OVRL over (clean, estimate) file pairs."""
    rows = []
    for clean_path, estimate_path in pairs:
        clean, estimate = load_pair(clean_path, estimate_path)
        rows.append({"si_sdr": si_sdr(clean, estimate), **speech_scores(clean, estimate),
                     "dnsmos_ovrl": dnsmos(estimate)["ovrl"]})
    return {key: float(np.mean([row[key] for row in rows if key in row])) for key in rows[0]} | {"clips": len(rows)}


def si_sdr_by_snr(test: list[dict], folder: Path | None) -> dict[str, float]:
    """Mean SI-SDR per band of input SNR (``snr_db`` of the test manifest) of the estimates in
    ``folder`` (``enhance``'s outputs), or of the noisy clips themselves (``None``)."""
    bands: dict[str, list[float]] = {f"{low}..{low + 5} dB": [] for low in range(-5, 20, 5)}
    for row in test:
        low = min(15, 5 * int(np.floor(row["snr_db"] / 5)))
        bands[f"{low}..{low + 5} dB"].append(si_sdr(*load_pair(row["audio"], folder / Path(row["noisy"]).name
                                                                if folder else row["noisy"])))
    return {band: float(np.mean(values)) for band, values in bands.items() if values}


def scores_table(reference: dict, arms: dict, key: str) -> dict[str, dict]:
    """One set's rows in report order: the noisy input, every arm scored on it (``arm[key]``), the
    bundled enhancer (``reference``: their scores on that set; empty when it was not scored)."""
    if not reference:
        return {}
    return ({"noisy input": reference["noisy input"]} | {name: arm[key] for name, arm in arms.items() if key in arm}
            | {"bundled enhancer": reference["bundled enhancer"]})


def trained_steps(run: Path) -> int:
    """The step of the run's newest checkpoint, or its last logged step where it kept none."""
    found = list_checkpoints(run)
    return (json.loads((found[-1] / STATE_NAME).read_text())["step"] if found
            else read_metrics(run / "metrics.jsonl")[-1]["step"])


def weights_hash(export: Path) -> str:
    """The first 16 hex digits of the sha256 of every trained weights file of an export."""
    files = sorted(export.rglob("transformer/*.safetensors")) + sorted(export.rglob("enhancer/*.safetensors"))
    return " ".join(file_sha256(path)[:16] for path in files)


def report(results: dict) -> str:
    lines = ["# One DiT for three tasks against one DiT per task (demo scale)", "",
             (f"Commit {results['commit']}. Every arm: the demo DiT (8.0 M parameters); judged by the in-house "
             f"classifier (`{results['classifier']}`). Sounds: {', '.join(results['classes']['tta'])}. "
             f"Music: {', '.join(results['classes']['ttm'])}."), "",
             ("`tta`, `ttm`, `se`: one task each for as many steps as the unified arm; `tta_share`, `ttm_share`, "
              "`se_share`: one task each for its share of them (weight / sum of weights), so the three together "
              "train as many steps as the unified arm. Other rows: references named on the command line."), "",
             ("| arm | tasks | steps | sounds top-1 | sounds FD | sounds sep. | music top-1 | music FD | music sep. "
             "| `solo piano` heard as |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, arm in results["arms"].items():
        text = arm.get("text", {})
        cells = [" + ".join(arm["tasks"]), str(arm["steps"])]
        for task in ("tta", "ttm"):
            row = text.get(task)
            cells += ([f"{row['top1']:.1%}", f"{row['fd']:.1f}", f"{row['separation']:.2f}"] if row else ["-"] * 3)
        cells.append(", ".join(text.get("solo_piano", [])) or "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for title, rows in (("the SE corpus's test set (unseen speakers and noises", results["enhancement"]),
                        (("the SE corpus's validation set (two voices no arm trained on, in training noise; "
                          "where models are chosen"), results.get("validation", {}))):
        if rows:
            lines += ["", f"Speech enhancement on {title}; `enhance` defaults):", "",
                      "| input / arm | SI-SDR (dB) | PESQ | STOI | DNSMOS OVRL |", "|---|---|---|---|---|"]
            lines += [f"| {name} | {row['si_sdr']:.2f} | {row.get('pesq', float('nan')):.2f} | "
                      f"{row.get('stoi', float('nan')):.3f} | {row['dnsmos_ovrl']:.2f} |" for name, row in rows.items()]
    bands = list(next(iter(results["si_sdr_by_snr"].values())))
    lines += ["", "SI-SDR (dB) by the input's SNR (the test set's clips in each band):", "",
              "| input / arm | " + " | ".join(bands) + " |", "|---|" + "---|" * len(bands)]
    lines += [f"| {name} | " + " | ".join(f"{row[band]:.2f}" for band in bands) + " |"
              for name, row in results["si_sdr_by_snr"].items()]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Left: sounds and music top-1 per arm; right: SI-SDR by the input's SNR band per input / arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (text_axis, snr_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [name for name, arm in results["arms"].items() if arm.get("text")]
    for offset, (task, label) in enumerate((("tta", "sounds"), ("ttm", "music"))):
        values = [100 * results["arms"][name]["text"].get(task, {}).get("top1", 0.0) for name in names]
        text_axis.bar(np.arange(len(names)) + 0.4 * offset - 0.2, values, 0.4, label=label)
    text_axis.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    text_axis.set_ylabel("in-house top-1 (%)")
    text_axis.set_title("text prompts (absent bar: task not trained)")
    text_axis.legend()
    for name, row in results["si_sdr_by_snr"].items():
        snr_axis.plot(list(row), list(row.values()), marker="o", label=name,
                      linestyle="--" if name == "noisy input" else "-")
    snr_axis.set_xlabel("input SNR band")
    snr_axis.set_ylabel("SI-SDR (dB)")
    snr_axis.set_title("speech enhancement, SE test set")
    snr_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="the demo corpus (train_tta/ttm.jsonl, heldout)")
    parser.add_argument("--se-corpus", type=Path, required=True, help="build_se_corpus.py's output (its test set)")
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/unified_demo"))
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=RUN")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/unified_demo"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    prompts = json.loads((args.corpus / "summary.json").read_text())["prompts"]
    classes = class_sets(args.corpus)
    classifier = InhouseClassifier.load(args.classifier)
    heldout = read_manifest(args.corpus / "heldout.jsonl")
    references = {task: classifier.embed([load_audio(r["audio"]).numpy() for label in labels
                                          for r in [x for x in heldout if x["label"] == label][:REFERENCE_PER_CLASS]])
                  for task, labels in classes.items()}
    test = read_manifest(args.se_corpus / "test" / "manifest.jsonl")
    val_manifest = args.se_corpus / "val" / "manifest.jsonl"  # corpora built before it had none
    val = read_manifest(val_manifest) if val_manifest.is_file() else []
    args.out.mkdir(parents=True, exist_ok=True)

    runs = {name: args.work / name for name in ARMS} | {k: Path(v) for k, v in (s.split("=", 1) for s in args.reference)}
    arms = {}
    for name, run in runs.items():
        saved, export = args.out / f"arm_{name}.json", run / "final" / "ema"
        previous = json.loads(saved.read_text()) if saved.is_file() else None
        if not export.is_dir():
            if previous is not None:
                arms[name] = previous
            continue
        if previous is None or previous["weights"] != weights_hash(export):
            tasks = sorted(p.name for p in export.iterdir() if (p / "model_index.json").is_file()) or ["tta"]
            previous = {"run": str(run), "tasks": tasks, "weights": weights_hash(export),
                        "steps": trained_steps(run),
                        "text": text_scores(export, [t for t in tasks if t != "se"], classifier, prompts, classes,
                                            references)}
            if "se" in tasks:
                previous["enhancement"] = enhancement_scores(export, test, args.work / "enhanced" / name)
        if val and "se" in previous["tasks"] and "validation" not in previous:
            previous["validation"] = enhancement_scores(export, val, args.work / "enhanced_val" / name)
        saved.write_text(json.dumps(previous, indent=2) + "\n")
        arms[name] = previous

    saved = args.out / "enhancement_reference.json"  # the noisy input and the bundled enhancer, scored once
    reference = json.loads(saved.read_text()) if saved.is_file() else {}
    if reference.get("weights") != weights_hash(BUNDLED_ENHANCER):
        reference = {"weights": weights_hash(BUNDLED_ENHANCER),
                     "noisy input": speech_means([(r["audio"], r["noisy"]) for r in test]),
                     "bundled enhancer": enhancement_scores(BUNDLED_ENHANCER, test, args.work / "enhanced" / "bundled")}
    if val and "validation" not in reference:
        reference["validation"] = {"noisy input": speech_means([(r["audio"], r["noisy"]) for r in val]),
                                   "bundled enhancer": enhancement_scores(BUNDLED_ENHANCER, val,
                                                                          args.work / "enhanced_val" / "bundled")}
    saved.write_text(json.dumps(reference, indent=2) + "\n")
    enhancement = scores_table(reference, arms, "enhancement")
    folders = {"noisy input": None} | {name: args.work / "enhanced" / name for name in enhancement if name in arms}
    folders["bundled enhancer"] = args.work / "enhanced" / "bundled"
    by_snr = {name: si_sdr_by_snr(test, folder) for name, folder in folders.items()
              if folder is None or folder.is_dir()}
    validation = scores_table(reference.get("validation", {}), arms, "validation")
    results = {"commit": git_commit(), "classifier": str(args.classifier), "classes": classes, "arms": arms,
               "enhancement": enhancement, "validation": validation, "si_sdr_by_snr": by_snr}
    write_report(args.out, results, report(results))
    plot(results, args.out / "summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

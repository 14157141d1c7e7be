"""Whole-process wall time of ``generate`` runs, several commands compared in one run.

    python -m benchmarks.generate_wall --runs 5 \\
        --command after='generate "a dog barking" -o {out} --duration 5 --seed 0 --quiet'

Each ``--command LABEL=COMMAND`` (``{out}`` is replaced by a fresh .wav path) runs ``--runs``
times, the commands interleaved so load on the machine hits them alike. Reported per label:
the median wall time of the whole process, and of the part spent sampling and decoding (the
sidecar's ``elapsed_seconds``) and loading (its ``load_seconds``); the rest is start-up
(interpreter, imports). A command that writes no sidecar (say, only the imports the job needs,
as a floor) reports its wall time alone. One JSON line per label, appended to benchmarks/results/generate_wall.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import record

RESULTS = Path(__file__).resolve().parent / "results" / "generate_wall.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", action="append", required=True, metavar="LABEL=COMMAND")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def run_once(command: str, out: Path) -> dict[str, float]:
    start = time.perf_counter()
    subprocess.run(command.format(out=shlex.quote(str(out))), shell=True, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    sidecar = out.with_suffix(".json")
    if not sidecar.is_file():  # a command that writes no clip (e.g. only the imports, for comparison)
        return {"wall": wall, "sample_decode": 0.0, "load": 0.0}
    record = json.loads(sidecar.read_text())
    return {"wall": wall, "sample_decode": record["elapsed_seconds"], "load": record["load_seconds"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commands = dict(item.split("=", 1) for item in args.command)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for label, command in commands.items():
                runs[label].append(run_once(command, Path(tmp) / f"{label}_{i}.wav"))
    for label, measured in runs.items():
        median = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
        record(args.results, {"benchmark": "generate_wall", "label": label, "command": commands[label],
                              "runs": args.runs, "wall_s": round(median["wall"], 3),
                              "sample_decode_s": round(median["sample_decode"], 3),
                              "load_s": round(median["load"], 3),
                              "outside_sample_decode_s": round(median["wall"] - median["sample_decode"], 3),
                              "walls_s": [round(m["wall"], 3) for m in measured]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

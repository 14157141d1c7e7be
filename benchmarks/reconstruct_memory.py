"""Peak memory and wall time of ``dashflow reconstruct`` against file length.

    python -m benchmarks.reconstruct_memory                       # bundled demo tokenizer, 1 and 10 min
    python -m benchmarks.reconstruct_memory --checkpoint TOKENIZER --minutes 1 10 60

Writes 16 kHz mono test files (``enhance_memory.write_test_file``), then runs the command on each in
a fresh process and reports that process's peak resident memory (``VmHWM``) and wall time. Streaming
keeps the peak flat as the file grows. One JSON line per file is printed and appended to
benchmarks/results/reconstruct_memory.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import git_commit
from benchmarks.enhance_memory import write_test_file

RESULTS = Path(__file__).resolve().parent / "results" / "reconstruct_memory.jsonl"
CHILD = """
import json, sys, time
from dashflow.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
wall = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"exit": code, "wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--checkpoint", help="tokenizer folder (default: the bundled demo tokenizer)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            source, target = Path(tmp) / f"{minutes:g}min.wav", Path(tmp) / f"{minutes:g}min_out.wav"
            write_test_file(source, minutes, 16000, 1)
            command = ["reconstruct", str(source), "-o", str(target), "--device", args.device,
                       *(["--checkpoint", args.checkpoint] if args.checkpoint else [])]
            done = subprocess.run([sys.executable, "-c", CHILD, *command], capture_output=True, text=True, check=True)
            record = {"benchmark": "reconstruct_memory", "minutes": minutes, "device": args.device,
                      "checkpoint": args.checkpoint or "bundled demo tokenizer",
                      **json.loads(done.stdout.strip().splitlines()[-1]), "commit": git_commit(),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            print(json.dumps(record))
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/run_all.sh, the script a GPU session runs, end to end at toy size on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_runs_end_to_end_on_cpu_at_tiny_size(tmp_path):
    done = subprocess.run([str(ROOT / "benchmarks" / "run_all.sh"), "--device", "cpu", "--preset", "tiny",
                           "--results", str(tmp_path)], capture_output=True, text=True, timeout=1200, check=False,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {path.stem: [json.loads(line) for line in path.read_text().splitlines()]
            for path in tmp_path.glob("*.jsonl")}
    assert {(r["stage"], r["batch"]) for r in rows["tokenizer_rtf"]} == {
        (stage, batch) for stage in ("encode", "decode") for batch in (1, 32)}
    train = rows["dit"]
    assert [r["grad_checkpointing"] for r in train] == [False, True]
    assert all(r["flops_per_sample"] > 0 and r["mfu"] is None for r in train)  # no peak known on CPU
    latency = rows["generate_latency"]
    assert {(r["batch"], r["compile"]) for r in latency} == {(1, False), (2, False), (1, True), (2, True)}
    assert all(r["latency_s"] > 0 and r["peak_mem_gib"] > 0 for r in latency)

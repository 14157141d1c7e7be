"""recipes/demo/train.sh's plumbing: which commands it runs, in which order, each stage from the last.

The commands it calls (python, accelerate, dashflow) are replaced on PATH by a stub that records
its arguments, so the script runs in a second, writes nothing and trains nothing; the stages
themselves are covered by their own tests."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "train.sh"


def run_train_sh(tmp_path: Path) -> list[list[str]]:
    """The argument lists train.sh passes to python / accelerate / dashflow, in order."""
    log, bin_dir = tmp_path / "calls.log", tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "accelerate", "dashflow"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\nprintf "%s\\0" {name} "$@" >> {shlex.quote(str(log))}\n'
                        f'printf "\\036" >> {shlex.quote(str(log))}\n')  # NUL between arguments, RS after a call
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path / "work")], env=env, check=True, capture_output=True)
    return [call.rstrip("\0").split("\0") for call in log.read_text().split("\036") if call]


def option(call: list[str], prefix: str) -> str:
    """The value of the ``prefix=value`` override in a recipe call."""
    return next(arg.split("=", 1)[1] for arg in call if arg.startswith(prefix + "="))


def test_train_sh_chains_the_three_unified_stages_and_packages_the_last(tmp_path):
    calls = run_train_sh(tmp_path)
    work = str(tmp_path / "work")
    recipes = [next(arg for arg in call if arg.startswith("recipes/")) for call in calls if call[0] == "accelerate"]
    assert recipes == ["recipes/tokenizer_gan.py", "recipes/tta.py"] + ["recipes/unified.py"] * 3
    stages = [call for call in calls if "recipes/unified.py" in call]
    outputs = [option(call, "train.output_dir") for call in stages]
    assert outputs == [f"{work}/unified_stage1", f"{work}/unified_stage2", f"{work}/unified"]
    starts = [option(call, "model.warm_start") for call in stages]  # each stage from the one before
    assert starts == [f"{work}/tta/final/ema/transformer", f"{work}/unified_stage1/final/ema/tta/transformer",
                      f"{work}/unified_stage2/final/ema/tta/transformer"]
    assert [option(call, "model.latent_normalizer") for call in stages] == [
        start.replace("/transformer", "/latent_normalizer") for start in starts]
    tasks = [next(arg for arg in call if arg.startswith("tasks=")) for call in stages]
    assert [[float(w) for w in re.findall(r"weight: ([0-9.]+)", t)] for t in tasks] == [
        [1.0, 1.0, 2.0], [2.0, 0.5, 2.0], [2.0, 0.5, 2.5]]
    assert [option(call, "optim.lr") for call in stages[1:]] == ["3.0e-4", "2.0e-4"]
    assert all(f"{work}/se_corpus/train_clean.jsonl" in t for t in tasks)
    benchmark = next(call for call in calls if "benchmarks.unified_demo" in call)
    assert f"bundle={work}/unified" in benchmark
    packages = [call for call in calls if "recipes/demo/package.py" in call]
    assert len(packages) == 2 and all(call[2] == f"{work}/unified/final/ema" for call in packages)
    order = [i for i, call in enumerate(calls) if "recipes/unified.py" in call or "benchmarks.unified_demo" in call
             or "recipes/demo/package.py" in call or "recipes/demo/evaluate.py" in call]
    assert order == sorted(order) and "--evaluation" in packages[1] and "--evaluation" not in packages[0]

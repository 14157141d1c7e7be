"""Fault test: a training run killed with SIGKILL at random points (inside steps and inside
checkpoint saves) resumes from a complete checkpoint and ends bit-identical to a run that was
never interrupted. The trainer is the shared toolkit (``dashflow.training``) on a small MLP that
saves a checkpoint every step, so most kills land in a save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

TRAINER = '''
import sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from dashflow.training import build_accelerator, cosine_schedule, resume_training, save_checkpoint

out, steps = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
accelerator = build_accelerator(out, log_with=None)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 64))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = cosine_schedule(optimizer, steps, 2)
model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
start = resume_training(accelerator, out, "latest")
(out / "started").write_text(str(start))
for step in range(start + 1, steps + 1):
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(step))
    noise = torch.randn(32, 64) * 0.01  # global RNG: restored by the checkpoint
    loss = (model(x) - x.flip(1) + noise).pow(2).mean()
    optimizer.zero_grad()
    accelerator.backward(loss)
    optimizer.step()
    scheduler.step()
    save_checkpoint(accelerator, out, step, keep_last=2)
save_file({k: v.contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()},
          str(out / "final.safetensors"))
'''
STEPS = 40


def train(script: Path, out: Path, kill: tuple[str, float] | None = None) -> None:
    """Run the trainer to the end; or SIGKILL it ``delay`` seconds after ``marker`` (a path under
    ``out``: a checkpoint folder, or the temporary folder of a save in progress) appears."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(out), str(STEPS)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill is None:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
        return
    marker, delay = kill
    deadline = time.monotonic() + 120
    while not (out / marker).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL  # killed before it could finish


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("kill")
    script = root / "trainer.py"
    script.write_text(TRAINER)
    train(script, root / "reference")
    return script, load_file(str(root / "reference" / "final.safetensors"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_anywhere_then_resume_is_bit_exact(uninterrupted, tmp_path, seed):
    script, reference = uninterrupted
    out = tmp_path / "run"
    out.mkdir()
    rng = np.random.default_rng(seed)
    steps = sorted(rng.choice(np.arange(2, STEPS - 5), size=3, replace=False))
    markers = [f".step_{steps[0]:07d}.tmp", f"step_{steps[1]:07d}", f".step_{steps[2]:07d}.tmp"]
    for marker in markers:  # in a save, between saves, in a save: each after a random delay
        train(script, out, (marker, float(rng.uniform(0.0, 0.004))))
    train(script, out)
    resumed_at = int((out / "started").read_text())
    assert 0 <= resumed_at <= STEPS
    final = load_file(str(out / "final.safetensors"))
    assert final.keys() == reference.keys()
    assert all(np.array_equal(final[k], reference[k]) for k in final)
    assert not list(out.glob(".step_*.tmp"))  # stale saves were cleaned

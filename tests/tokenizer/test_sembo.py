"""SemBo: sizes, losses against hand computations, and its recipe (learns, resumes exactly after SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from dashflow.tokenizer.model import DashengTokenizer
from dashflow.tokenizer.sembo import (
    SemanticBottleneck,
    reconstruction_loss,
    sembo_loss,
    time_relation_loss,
)
from safetensors.torch import load_file

from dashflow.prepare import prepare_manifest, records_from_folder
from dashflow.training import read_metrics
from tests.conftest import cpu_launch

ROOT = Path(__file__).resolve().parents[2]


def test_full_size_halves_have_the_papers_sizes():
    with torch.device("meta"):
        sembo = SemanticBottleneck(1280, 128, 512)
    assert sum(p.numel() for p in sembo.downsample.parameters()) == 721_536
    assert sum(p.numel() for p in sembo.upsample.parameters()) == 722_688
    assert sorted(sembo.state_dict()) == [f"{half}.{i}.{kind}" for half in ("downsample", "upsample")
                                          for i in (0, 2) for kind in ("bias", "weight")]


def test_time_relation_loss_by_hand():
    """One clip, two frames: G = [[1, c], [c, 1]] with c the cosine of the two frames."""
    high = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])        # orthogonal: G_high = I
    low = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])         # cosine 1/sqrt(2)
    c = 1 / 2 ** 0.5
    assert time_relation_loss(high, low).item() == pytest.approx(2 * c ** 2 / 4)


def test_time_relation_loss_blocks_and_masks_change_nothing_but_memory():
    torch.manual_seed(0)
    high, low = torch.randn(2, 37, 16), torch.randn(2, 37, 4)
    full = time_relation_loss(high, low, block=1000)
    assert time_relation_loss(high, low, block=5).item() == pytest.approx(full.item(), rel=1e-6)
    mask = torch.arange(37)[None] < torch.tensor([[37], [20]])
    masked = time_relation_loss(high, low, mask, block=7)
    alone = (time_relation_loss(high[:1], low[:1]) + time_relation_loss(high[1:, :20], low[1:, :20])) / 2
    assert masked.item() == pytest.approx(alone.item(), rel=1e-6)


def test_reconstruction_loss_compares_directions_and_stops_the_teachers_gradient():
    high = torch.tensor([[[3.0, 4.0]]], requires_grad=True)
    assert reconstruction_loss(high, 2 * high.detach()).item() == pytest.approx(0.0, abs=1e-7)
    restored = torch.tensor([[[4.0, -3.0]]], requires_grad=True)  # orthogonal unit directions
    loss = reconstruction_loss(high, restored)
    assert loss.item() == pytest.approx(((0.6 - 0.8) ** 2 + (0.8 + 0.6) ** 2) / 2)
    loss.backward()
    assert high.grad is None and restored.grad is not None


def test_sembo_loss_weights_and_the_ablation():
    torch.manual_seed(0)
    sembo, high = SemanticBottleneck(16, 4, 8), torch.randn(2, 10, 16)
    total, parts = sembo_loss(sembo, high, recon_weight=1000.0)
    assert total.item() == pytest.approx(1000 * parts["recon"].item() + parts["relation"].item(), rel=1e-6)
    low, restored = sembo(high)
    assert parts["relation"].item() == pytest.approx(time_relation_loss(high, low).item())
    ablated, parts = sembo_loss(sembo, high, relation_weight=0.0)
    assert set(parts) == {"recon"} and ablated.item() == pytest.approx(parts["recon"].item())
    assert F.normalize(high, dim=-1).shape == restored.shape


# ----------------------------------------------------------------------------- the recipe

@pytest.fixture(scope="module")
def tiny_setup(small_corpus, tmp_path_factory):
    """(train manifest, a tiny teacher tokenizer folder)."""
    root = tmp_path_factory.mktemp("sembo")
    prepare_manifest(list(records_from_folder(small_corpus)), root / "train.jsonl")
    torch.manual_seed(0)
    DashengTokenizer.from_preset("tiny").save_pretrained(root / "teacher")
    return root / "train.jsonl", root / "teacher"


def command(out: Path, setup, *overrides: str) -> list[str]:
    return cpu_launch("sembo.py", "--config", str(ROOT / "recipes" / "configs" / "sembo" / "tiny.yaml"), f"data.train={setup[0]}",
            f"model.teacher={setup[1]}", f"train.output_dir={out}", *overrides)


ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def test_tiny_sembo_learns(tmp_path, tiny_setup):
    done = subprocess.run(command(tmp_path, tiny_setup), capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "recon" in r]
    first, last = sum(r["recon"] for r in rows[:5]) / 5, sum(r["recon"] for r in rows[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert SemanticBottleneck.from_pretrained(tmp_path / "final").config.low_dim == 8


def test_sembo_resumes_exactly_after_sigkill(tmp_path, tiny_setup):
    settings = ("train.max_steps=12", "train.checkpoint_every=4", "train.keep_checkpoints=0")
    full = subprocess.run(command(tmp_path / "full", tiny_setup, *settings), capture_output=True, text=True,
                          env=ENV, timeout=900)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = subprocess.Popen(command(tmp_path / "killed", tiny_setup, *settings), env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (tmp_path / "killed" / "step_0000004").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    again = subprocess.run(command(tmp_path / "killed", tiny_setup, *settings), capture_output=True, text=True,
                           env=ENV, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    reference = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    losses = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if "loss" in r]
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "killed" / "metrics.jsonl")
            if "loss" in r and r["step"] > 4][-8:] == losses[-8:]

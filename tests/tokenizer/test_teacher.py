"""The offline semantic teacher: its recipe learns labelled clips and its folder serves as the
frozen encoder of SemBo and LoSATok (load_teacher)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from dashflow.tokenizer.losatok import LoSATok
from dashflow.tokenizer.sembo import load_teacher
from dashflow.tokenizer.semantic import DashengEncoder
from dashflow.tokenizer.teacher import SemanticTeacher

from dashflow.prepare import records_from_folder
from dashflow.training import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def labelled_manifest(small_corpus, path: Path) -> Path:
    """The small corpus (speech, tones, chirps, noise) labelled by kind."""
    rows = [{**r, "audio": str(r["audio"]), "label": r["audio_id"].split("_")[0]} for r in records_from_folder(small_corpus)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(manifest: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recipes" / "semantic_teacher.py"), "--config",
                           str(ROOT / "recipes/configs/semantic_teacher/tiny.yaml"), f"data.train={manifest}",
                           f"train.output_dir={out}", *overrides], capture_output=True, text=True, timeout=900)


def test_teacher_learns_and_plugs_into_losatok(small_corpus, tmp_path):
    done = run(labelled_manifest(small_corpus, tmp_path / "train.jsonl"), tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "accuracy" in r]
    assert sum(r["accuracy"] for r in rows[-10:]) / 10 > sum(r["accuracy"] for r in rows[:10]) / 10 + 0.2
    teacher = SemanticTeacher.from_pretrained(tmp_path / "run" / "final")
    assert teacher.config.labels == ["chirp", "noise", "speech", "tone"]
    encoder = load_teacher(tmp_path / "run" / "final")
    assert isinstance(encoder, DashengEncoder) and not encoder.training
    losatok = LoSATok.from_preset("tiny")
    losatok.load_frozen_parts(encoder.state_dict())
    for key, value in teacher.encoder.state_dict().items():
        ours = key.replace("init_bn.1.", "init_bn.")
        if not key.startswith("front_end."):
            assert torch.equal(losatok.semantic_encoder.encoder.state_dict()[ours], value), key


def test_an_unlabelled_manifest_is_one_line(small_corpus, tmp_path):
    rows = [{**r, "audio": str(r["audio"])} for r in records_from_folder(small_corpus)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run(tmp_path / "train.jsonl", tmp_path / "run")
    assert done.returncode == 2 and done.stderr.strip().startswith("error: ") and "have no label" in done.stderr
    assert done.stderr.strip().count("\n") == 0

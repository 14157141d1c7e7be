"""Any latent space plugs in with no edit under ``generation/``: a codec written only against
:mod:`dashflow.codecs` (``tests/generation/frame_codec.py``, installed as a plugin) and LoSATok each
train a tiny DiT through ``recipes/tta.py`` and generate through ``generate --checkpoint``."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dashflow.tokenizer.losatok import LoSATok

from dashflow.audio import load_audio
from dashflow.manifests import write_manifest
from tests.conftest import chirp, cpu_launch, tone, write_wav
from tests.generation.frame_codec import FrameCodec

REPO = Path(__file__).resolve().parents[3]
CODEC_MODULES = ("dashflow.tokenizer.model", "dashflow.tokenizer.transformers_codecs")
CODEC_CLASSES = ("DashengTokenizer", "TransformersCodec")


def test_generation_names_no_concrete_codec():
    """generation/ reaches codecs only through dashflow.codecs (it may use tokenizer building
    blocks such as the transformer Block, never a codec class or its module)."""
    offenders = []
    for path in (REPO / "generation").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in CODEC_MODULES:
                offenders.append(f"{path.relative_to(REPO)} imports {node.module}")
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name in CODEC_CLASSES:
                offenders.append(f"{path.relative_to(REPO)} uses {name}")
    assert not offenders, offenders


def tiny_losatok(folder):
    torch.manual_seed(0)
    LoSATok.from_preset("tiny").save_pretrained(folder)
    return LoSATok


CODECS = {  # name -> (writes a codec folder and returns its class, latent dim)
    "FrameCodec": (lambda folder: FrameCodec(bands=4).save_pretrained(folder) or FrameCodec, 8),
    "LoSATok": (tiny_losatok, 8),
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_codec_trains_the_dit_and_generates(name, frame_codec_plugin, tmp_path):
    """A plugin codec (written only against the interface) and LoSATok: tta.py trains on their
    latents and `generate --checkpoint` samples the exported pipeline."""
    env = {**frame_codec_plugin, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    codec_dir = tmp_path / "codec"
    write, latent_dim = CODECS[name]
    codec_class = write(codec_dir)
    records = []
    for i in range(4):
        write_wav(tmp_path / f"low_{i}.wav", tone(100 + 20 * i, 1.0))
        write_wav(tmp_path / f"high_{i}.wav", chirp(600, 800, 1.0))
        records += [{"audio_id": f"low_{i}", "audio": str(tmp_path / f"low_{i}.wav"), "caption": "a low hum"},
                    {"audio_id": f"high_{i}", "audio": str(tmp_path / f"high_{i}.wav"), "caption": "a high tone"}]
    manifest = write_manifest(records, tmp_path / "train.jsonl")
    out = tmp_path / "run"
    train = subprocess.run(
        cpu_launch("tta.py", "--config", str(REPO / "recipes/configs/tta/tiny.yaml"),
         f"data.train={manifest}", f"model.tokenizer={codec_dir}", f"train.output_dir={out}",
         "train.max_steps=3", "train.checkpoint_every=3", "sample.every=0", "data.batch_size=4"),
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    pipeline = out / "final" / "ema"
    index = json.loads((pipeline / "model_index.json").read_text())
    assert index["tokenizer"] == ["dashflow.codecs", name]
    assert json.loads((pipeline / "transformer" / "config.json").read_text())["latent_dim"] == latent_dim

    wav = tmp_path / "hum.wav"
    gen = subprocess.run([sys.executable, "-m", "dashflow.generation.cli.generate", "a low hum", "-o", str(wav),
                          "--checkpoint", str(pipeline), "--duration", "1", "--steps", "2", "--seed", "0", "--quiet"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert gen.returncode == 0, gen.stderr[-3000:]
    audio = load_audio(wav)
    assert audio.shape == (25 * 640,) and audio.abs().max() > 0
    sidecar = json.loads(wav.with_suffix(".json").read_text())
    assert sidecar["tokenizer_hash"] == codec_class.from_pretrained(codec_dir).weights_hash()

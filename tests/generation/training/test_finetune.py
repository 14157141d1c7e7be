"""Adapting a saved pipeline (recipes/finetune.py, dashflow.generation.pipelines.lora): a tiny LoRA
run lowers its loss and resumes exactly, adapter files round-trip (load, stack, fuse / unfuse,
unload to the bit-identical base), generate --lora records its adapters, full fine-tuning exports
a pipeline, and bad adapters get one clear line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines.audio import load_pipeline
from dashflow.generation.pipelines.lora import METADATA_KEY, LoraSettings, add_lora, read_lora, save_lora
from dashflow.generation.training.finetune import (
    FinetuneConfig,
    FinetuneDataConfig,
    check_finetune_settings,
    training_records,
)
from dashflow.generation.training.text_to_audio import Frozen, TextConditioner, make_pipeline
from dashflow.tokenizer.model import DashengTokenizer
from safetensors import safe_open
from safetensors.torch import save_file

from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest
from dashflow.text_encoders import load_text_encoder
from dashflow.training import read_metrics
from tests.conftest import chirp, cpu_launch, kill_after_step, tone, write_wav

REPO = Path(__file__).resolve().parents[3]
LORA = REPO / "recipes" / "configs" / "finetune" / "lora.yaml"
FULL = REPO / "recipes" / "configs" / "finetune" / "full.yaml"
LAUNCH_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
SHORT = ("train.max_steps=30", "train.checkpoint_every=10", "train.log_every=1", "data.batch_size=4",
         "data.max_seconds=1.0", "lora.rank=4", "lora.alpha=4")


def tiny_pipeline(folder: Path, seed: int) -> Path:
    """A random tiny text-to-audio pipeline (tiny tokenizer, MiniLM, tiny DiT) saved to ``folder``."""
    torch.manual_seed(seed)
    tokenizer = DashengTokenizer.from_preset("tiny").eval()
    encoder = load_text_encoder("minilm")
    model = AudioGenModel.from_preset("tiny", latent_dim=tokenizer.latent_dim, text_embed_dim=encoder.dim,
                                      task_instruction_dim=encoder.dim)
    make_pipeline("tta", model.eval(), Frozen(tokenizer, TextConditioner(encoder))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("finetune")
    records = []
    for i in range(8):
        write_wav(root / f"bell_{i}.wav", tone(880 + 20 * i, 1.2) + tone(1760 + 40 * i, 1.2, amp=0.1))
        write_wav(root / f"siren_{i}.wav", chirp(600, 1400 + 30 * i, 1.2))
        records += [{"audio_id": f"bell_{i}", "audio": str(root / f"bell_{i}.wav"), "caption": "a bell rings"},
                    {"audio_id": f"siren_{i}", "audio": str(root / f"siren_{i}.wav"), "caption": "a siren wails"}]
    return SimpleNamespace(root=root, manifest=write_manifest(records, root / "train.jsonl"),
                           base=tiny_pipeline(root / "base", 0), other=tiny_pipeline(root / "other", 1))


def launch(config: Path, data, out: Path, *extra: str) -> list[str]:
    return cpu_launch("finetune.py", "--config", str(config), f"base={data.base}", f"data.train={data.manifest}",
                      f"train.output_dir={out}", *SHORT, *extra)


def run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=LAUNCH_ENV, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def lora_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora_run")
    run(launch(LORA, data, out, "train.max_steps=60", "optim.lr=3e-3"))
    return out


def sample(pipe, prompt="a bell rings") -> np.ndarray:
    return pipe(prompt, duration=1.0, num_inference_steps=4, seed=0).audios


def test_a_tiny_lora_run_lowers_its_loss_and_writes_a_small_adapter(data, lora_run):
    losses = [row["loss"] for row in read_metrics(lora_run / "metrics.jsonl")]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), (losses[:10], losses[-10:])
    adapter = lora_run / "final" / "lora.safetensors"
    tensors, metadata = read_lora(adapter)
    assert all("lora_" in key for key in tensors) and adapter.stat().st_size < 200_000
    assert metadata["base_weights_hash"] == load_pipeline(data.base).transformer.weights_hash()
    assert metadata["settings"]["rank"] == 4


def test_adapters_load_stack_fuse_unfuse_and_unload_to_the_exact_base(data, lora_run, tmp_path):
    pipe = load_pipeline(data.base)
    base = sample(pipe)
    # a second adapter, made by hand on the same base
    second = load_pipeline(data.base).transformer
    add_lora(second, LoraSettings(rank=2, alpha=2), "siren")
    with torch.no_grad():
        for name, p in second.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    save_lora(second, tmp_path / "siren.safetensors", LoraSettings(rank=2, alpha=2), "siren")

    assert pipe.load_lora_weights(lora_run / "final" / "lora.safetensors", adapter_name="bell") == "bell"
    one = sample(pipe)
    assert np.abs(one - base).max() > 1e-4
    pipe.load_lora_weights(tmp_path / "siren.safetensors")
    stacked = sample(pipe)
    assert np.abs(stacked - one).max() > 1e-5
    pipe.set_adapters(["bell", "siren"], [1.0, 0.0])
    np.testing.assert_allclose(sample(pipe), one, atol=1e-5)  # weight 0 = that adapter off
    pipe.set_adapters(["bell", "siren"], [1.0, 1.0])
    pipe.fuse_lora()
    np.testing.assert_allclose(sample(pipe), stacked, atol=1e-4)
    pipe.unfuse_lora()
    np.testing.assert_allclose(sample(pipe), stacked, atol=1e-4)
    pipe.unload_lora_weights()
    assert np.array_equal(sample(pipe), base)  # bit-identical


def test_generate_records_its_adapters(data, lora_run, tmp_path):
    adapter = lora_run / "final" / "lora.safetensors"
    out = tmp_path / "bell.wav"
    result = subprocess.run([sys.executable, "-m", "dashflow.generation.cli.generate", "a bell rings", "--checkpoint",
                             str(data.base), "--lora", f"{adapter}:0.5", "--steps", "4", "--duration", "1", "--seed",
                             "0", "-o", str(out), "--quiet"], capture_output=True, text=True, env=LAUNCH_ENV,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = json.loads(out.with_suffix(".json").read_text())["lora"]
    assert record["weight"] == 0.5 and record["file"] == str(adapter.resolve()) and len(record["sha256"]) == 64
    bad = subprocess.run([sys.executable, "-m", "dashflow.generation.cli.generate", "a bell", "--checkpoint",
                          str(data.base), "--lora", f"{adapter}:nan", "-o", str(tmp_path / "x.wav")],
                         capture_output=True, text=True, env=LAUNCH_ENV, timeout=300)
    assert bad.returncode != 0 and "finite number" in bad.stderr and "Traceback" not in bad.stderr


def test_bad_adapters_get_one_clear_line(data, lora_run, tmp_path):
    adapter = lora_run / "final" / "lora.safetensors"
    other = load_pipeline(data.other)
    with pytest.raises(DashflowError, match="made for base weights .* this model's are"):
        other.load_lora_weights(adapter)
    tensors, _ = read_lora(adapter)
    bare = tmp_path / "bare.safetensors"
    save_file(tensors, str(bare))
    with pytest.raises(DashflowError, match=f"no {METADATA_KEY} metadata"):
        load_pipeline(data.base).load_lora_weights(bare)
    raw = dict(tensors)
    key = next(iter(raw))
    raw[key] = torch.full_like(raw[key], float("nan"))
    with safe_open(str(adapter), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(raw, str(tmp_path / "nan.safetensors"), metadata=metadata)
    with pytest.raises(DashflowError, match="not finite"):
        load_pipeline(data.base).load_lora_weights(tmp_path / "nan.safetensors")
    wrong = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in tensors.items()}
    save_file(wrong, str(tmp_path / "shape.safetensors"), metadata=metadata)
    with pytest.raises(DashflowError, match="does not fit this model"):
        load_pipeline(data.base).load_lora_weights(tmp_path / "shape.safetensors")
    model = load_pipeline(data.base).transformer
    with pytest.raises(DashflowError, match="target modules"):
        add_lora(model, LoraSettings(target_modules=["no_such_layer"]))
    pipe = load_pipeline(data.base)
    pipe.load_lora_weights(adapter, adapter_name="a")
    with pytest.raises(DashflowError, match="finite numbers"):
        pipe.set_adapters(["a"], [float("inf")])
    with pytest.raises(DashflowError, match="no adapter called 'b'"):
        pipe.set_adapters(["b"])


def test_replay_clips_are_mixed_in_at_their_share(data, tmp_path):
    """data.replay: clips of what the base already makes, drawn at replay_fraction of the clips (the
    fine-tuning demo keeps the old classes so); the sample is seeded; ids must differ."""
    old = [{"audio_id": f"old_{i}", "audio": str(data.root / "bell_0.wav"), "caption": f"old sound {i}"}
           for i in range(40)]
    replay = write_manifest(old, tmp_path / "replay.jsonl")
    for share in (0.2, 0.5):
        records = training_records(FinetuneDataConfig(train=str(data.manifest), replay=str(replay),
                                                      replay_fraction=share), seed=0)
        replayed = [r["audio_id"] for r in records if r["audio_id"].startswith("old_")]
        assert len(replayed) / len(records) == pytest.approx(share) and len(set(replayed)) == len(replayed)
        assert {r["audio_id"] for r in records} - set(replayed) == {f"{k}_{i}" for k in ("bell", "siren")
                                                                     for i in range(8)}
    settings = FinetuneDataConfig(train=str(data.manifest), replay=str(replay), replay_fraction=0.5)
    assert training_records(settings, seed=0) == training_records(settings, seed=0)
    assert training_records(settings, seed=0) != training_records(settings, seed=1)  # another sample of 32 of 40
    assert training_records(FinetuneDataConfig(train=str(data.manifest)), seed=0) == read_manifest(data.manifest)
    clash = write_manifest([*old, {"audio_id": "bell_3", "audio": str(data.root / "bell_3.wav"), "caption": "x"}],
                           tmp_path / "clash.jsonl")
    with pytest.raises(DashflowError, match="clip 'bell_3' is also in"):
        training_records(FinetuneDataConfig(train=str(data.manifest), replay=str(clash)), seed=0)
    config = FinetuneConfig(base="b", data=FinetuneDataConfig(train="t", replay=str(replay), replay_fraction=1.0))
    with pytest.raises(DashflowError, match="replay_fraction=1.0: use a share between 0 and 1"):
        check_finetune_settings(config)


def test_killed_lora_run_resumes_exactly(data, tmp_path):
    reference = tmp_path / "reference"
    run(launch(LORA, data, reference))
    out = tmp_path / "killed"
    status = kill_after_step(launch(LORA, data, out), out / "metrics.jsonl", 13, tmp_path / "first.log", LAUNCH_ENV,
                             REPO)
    assert status != 0 and not (out / "final").exists()
    assert "resumed from" in run(launch(LORA, data, out))
    assert read_metrics(out / "metrics.jsonl") == read_metrics(reference / "metrics.jsonl")
    ours, theirs = read_lora(out / "final" / "lora.safetensors")[0], read_lora(reference / "final" / "lora.safetensors")[0]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_full_fine_tuning_exports_a_pipeline(data, tmp_path):
    out = tmp_path / "full"
    run(launch(FULL, data, out, "train.max_steps=10"))
    tuned = load_pipeline(out / "final" / "ema")
    base = load_pipeline(data.base)
    assert tuned.config.prompt_template == base.config.prompt_template
    assert tuned.transformer.weights_hash() != base.transformer.weights_hash()
    assert sample(tuned).shape == (1, 16000)

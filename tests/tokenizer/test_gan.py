"""The tokenizer recipe under `accelerate launch` (CPU): it learns, and it resumes exactly."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from dashflow.eval.enhancement import speech_scores
from dashflow.tokenizer import gan
from dashflow.tokenizer.model import DashengTokenizer
from omegaconf import OmegaConf

from dashflow.config import load_config
from dashflow.data import write_shards
from dashflow.errors import DashflowError
from dashflow.prepare import prepare_manifest, records_from_folder
from dashflow.training import build_accelerator, list_checkpoints, read_metrics

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tokenizer_gan.py"
CONFIGS = ROOT / "recipes" / "configs" / "tokenizer"
HELD_OUT = ("speech_7", "tone_3", "chirp_3", "noise_3")  # one clip of each kind


@pytest.fixture(scope="module")
def manifests(small_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """(train, validation) manifests over the shared small corpus (16 + 4 clips)."""
    folder = tmp_path_factory.mktemp("manifests")
    records = list(records_from_folder(small_corpus))
    prepare_manifest([r for r in records if r["audio_id"] not in HELD_OUT], folder / "train.jsonl")
    prepare_manifest([r for r in records if r["audio_id"] in HELD_OUT], folder / "val.jsonl")
    return folder / "train.jsonl", folder / "val.jsonl"


def launch(output_dir: Path, manifests: tuple[Path, Path], *overrides: str) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", str(torch.get_num_threads()), str(RECIPE),
               "--config", str(CONFIGS / "tiny.yaml"), f"data.train={manifests[0]}",
               f"data.val_manifest={manifests[1]}", f"train.output_dir={output_dir}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]


def losses(path: Path) -> list[dict]:
    return [r for r in read_metrics(path) if "loss_g" in r]


@pytest.mark.slow
def test_tiny_config_learns_to_reconstruct(tmp_path, manifests):
    launch(tmp_path, manifests, "train.speech_metrics=true")
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    val = {r["step"]: r["val/mel_distance"] for r in metrics if "val/mel_distance" in r}
    assert set(val) == {0, 100, 200}
    print(f"validation mel distance: {val}")
    assert val[200] <= 0.7 * val[0], val  # at least a 30 % drop on held-out clips
    last = next(r for r in metrics if r["step"] == 200 and "val/mel_distance" in r)
    assert 0.0 <= last["val/stoi"] <= 1.0 and 1.0 <= last["val/pesq"] <= 4.6
    steps = losses(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in steps] == list(range(1, 201))
    assert "loss_d" not in steps[49] and "loss_d" in steps[50] and "adv_mfd" in steps[50]
    assert steps[-1]["lr"] == pytest.approx(0.1 * 2e-3, rel=1e-3)  # cosine down to 10 %

    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000100", "step_0000200"]
    saved = OmegaConf.load(tmp_path / "step_0000200" / "config.yaml")
    assert saved.data.train == str(manifests[0]) and saved.train.max_steps == 200
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))

    trained = DashengTokenizer.from_pretrained(tmp_path / "final")
    set_seed(0)  # the recipe's seed: the weights it started from
    initial = DashengTokenizer.from_preset("tiny")
    frozen = initial.semantic_encoder.state_dict()
    for name, value in trained.semantic_encoder.state_dict().items():
        assert torch.equal(value, frozen[name]), f"frozen semantic weight {name} changed"
    assert not torch.equal(trained.encoder.patch_embed.weight, initial.encoder.patch_embed.weight)
    assert not torch.equal(trained.decoder.head.out.weight, initial.decoder.head.out.weight)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["manifest", "shards"])
def test_resume_after_a_kill_repeats_the_same_losses(tmp_path, manifests, source):
    settings = ["train.max_steps=6", "train.checkpoint_every=3", "train.keep_checkpoints=0",
                "train.val_every=1000", "loss.disc_start_step=1", "train.noise_tau=0.5",
                "data.batch_size=2", "data.crop_seconds=0.32"]
    if source == "shards":
        write_shards(manifests[0], tmp_path / "shards", clips_per_shard=4)
        settings += [f"data.train={tmp_path / 'shards'}", "data.num_workers=2"]
    launch(tmp_path / "full", manifests, *settings)
    full = losses(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6] and "loss_d" in full[1]

    # a run killed after logging step 6 but before writing its step-6 checkpoint
    shutil.copytree(tmp_path / "full", tmp_path / "killed")
    shutil.rmtree(tmp_path / "killed" / "step_0000006")
    shutil.rmtree(tmp_path / "killed" / "final")
    launch(tmp_path / "killed", manifests, *settings)
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert resumed == read_metrics(tmp_path / "full" / "metrics.jsonl")  # every number, exactly
    assert [r["step"] for r in losses(tmp_path / "killed" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_two_process_ddp_trains_and_resumes_exactly(tmp_path, manifests):
    """Two CPU processes (gloo DDP, torchrun): sharded data and validation, one checkpoint
    with both RNG states, and an exact resume."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(port), str(RECIPE), "--config", str(CONFIGS / "tiny.yaml"),
               f"data.train={manifests[0]}", f"data.val_manifest={manifests[1]}",
               "data.val_clips=3", f"train.output_dir={tmp_path}", "train.max_steps=4",
               "train.checkpoint_every=2", "train.val_every=2", "loss.disc_start_step=1",
               "data.batch_size=2", "data.crop_seconds=0.32"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}

    def run() -> None:
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env,
                              timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]

    run()
    assert {p.name for p in (tmp_path / "step_0000004").glob("random_states_*")} == {
        "random_states_0.pkl", "random_states_1.pkl"}
    full = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in full if "val/mel_distance" in r] == [0, 2, 4]
    shutil.rmtree(tmp_path / "step_0000004")
    shutil.rmtree(tmp_path / "final")
    run()
    assert read_metrics(tmp_path / "metrics.jsonl") == full


def test_configs_load_with_the_paper_settings():
    paper = load_config(gan.Config, CONFIGS / "paper.yaml", ["data.train=x.jsonl"])
    assert paper.model.preset == "paper" and paper.model.discriminator == "paper"
    assert (paper.optim.lr, list(paper.optim.betas), paper.optim.final_lr_ratio) == (5e-4, [0.8, 0.9], 0.1)
    assert (paper.loss.lambda_sem, paper.loss.lambda_mel, paper.loss.lambda_adv,
            paper.loss.lambda_fm) == (45.0, 45.0, 1.0, 1.0)
    assert paper.train.max_steps == 1_000_000 and paper.train.noise_tau == 0.0
    tiny = load_config(gan.Config, CONFIGS / "tiny.yaml", ["data.train=x.jsonl"])
    assert tiny.model.preset == "tiny" and tiny.train.max_steps >= 200


def test_speech_scores_use_the_eval_metrics(small_corpus):
    speech = torch.from_numpy(sf.read(small_corpus / "speech_0.wav", dtype="float32")[0])
    perfect = speech_scores(speech, speech)
    assert perfect["pesq"] > 4.0 and perfect["stoi"] > 0.99
    assert set(speech_scores(speech, torch.zeros_like(speech))) == {"stoi"}  # PESQ refuses silence


def test_held_out_clips_are_spread_through_the_manifest(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(f'{{"audio_id": "c{i}", "audio": "c{i}.wav"}}\n' for i in range(10)))
    train, val = gan.split_data(gan.DataConfig(train=str(manifest), val_clips=3))
    assert [r["audio_id"] for r in val] == ["c0", "c3", "c6"]
    assert len(train) == 7 and not {r["audio_id"] for r in train} & {"c0", "c3", "c6"}
    with pytest.raises(DashflowError, match="val_manifest is required"):
        gan.split_data(gan.DataConfig(train=str(tmp_path / "shards"), val_clips=3))


def test_bf16_train_step_keeps_fp32_weights_and_finite_losses(tmp_path):
    """The GPU default (bf16 autocast), exercised with CPU autocast on the tiny config."""
    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = load_config(gan.Config, CONFIGS / "tiny.yaml", ["data.train=x.jsonl"])
    accelerator = build_accelerator(tmp_path, "bf16", log_with=None, cpu=True)
    built = gan.build_gan(cfg, accelerator)
    head = accelerator.unwrap_model(built.generator).tokenizer.decoder.head.out.weight
    before = head.detach().clone()
    wav, lengths = 0.1 * torch.randn(2, 8000), torch.tensor([8000, 6000])
    logs = gan.train_step(accelerator, built, wav, lengths, cfg, adversarial=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert {"loss_d", "loss_g", "mel", "sem", "adv", "fm"} <= set(logs)
    assert head.dtype == torch.float32 and not torch.equal(head.detach(), before)


def test_generator_keeps_the_semantic_encoder_frozen_and_adds_latent_noise():
    tokenizer = gan.build_tokenizer(gan.ModelConfig(preset="tiny"))
    assert tokenizer.training and not tokenizer.semantic_encoder.training
    semantic = {id(p) for p in tokenizer.semantic_encoder.parameters()}
    trainable = {id(p) for p in tokenizer.trainable_parameters()}
    assert semantic and trainable and not semantic & trainable
    assert not any(p.requires_grad for p in tokenizer.semantic_encoder.parameters())

    generator = gan.Reconstructor(tokenizer).eval()
    wav, lengths = 0.1 * torch.randn(2, 6000), torch.tensor([6000, 4000])
    with torch.no_grad():
        clean, encoding = generator(wav, lengths)
        reference, _ = tokenizer(wav, lengths)
        torch.manual_seed(0)
        noisy, _ = generator(wav, lengths, noise_tau=0.5)
    assert clean.shape == wav.shape and torch.equal(clean, reference)
    assert not torch.allclose(noisy, clean)
    assert encoding.mask.sum(dim=1).tolist() == [tokenizer.latent_length(6000),
                                                 tokenizer.latent_length(4000)]

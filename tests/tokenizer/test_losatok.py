"""LoSATok: the released layout at full size, the KL head against closed forms, official and
foreign folders, the codec interface, and GAN training of a tiny LoSATok (learns, resumes exactly)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dashflow.tokenizer.losatok import LoSATok, kl_divergence
from dashflow.tokenizer.model import DashengTokenizer
from dashflow.tokenizer.sembo import SemanticBottleneck

from dashflow.cli import main as dashflow_main
from dashflow.codecs import LatentCodec, load_codec
from dashflow.errors import DashflowError
from dashflow.prepare import prepare_manifest, records_from_folder
from dashflow.training import read_metrics
from tests.conftest import cpu_launch

ROOT = Path(__file__).resolve().parents[2]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "window", "fb")


def test_full_size_has_the_released_keys_and_parameter_counts():
    with torch.device("meta"):
        model = LoSATok.from_preset("paper")
    state = model.state_dict()

    def params(prefix: str) -> int:
        return sum(v.numel() for k, v in state.items() if k.startswith(prefix) and not k.endswith(BUFFERS))

    assert params("semantic_encoder.encoder.") == 630_333_568
    assert params("semantic_encoder.bottleneck.downsample.") == 721_536
    assert params("semantic_encoder.bottleneck.upsample.") == 722_688
    assert params("dasheng_tokenizer.encoder.") + params("fc_a.") == 659_200 + 163_968  # 0.82 M acoustic
    assert params("fc_mu.") + params("fc_logvar.") == 33_024
    assert params("dasheng_tokenizer.upsampler.") == 328_960
    assert 170.6e6 < params("dasheng_tokenizer.decoder.") < 170.7e6
    assert state["dasheng_tokenizer.upsampler.weight"].shape == (128, 1280, 2)
    # MiDashengLM naming: a plain init_bn, no stored front-end buffers, no frozen Dasheng copy
    assert "semantic_encoder.encoder.init_bn.weight" in state
    assert not [k for k in state if k.startswith(("semantic_encoder.encoder.init_bn.1.",
                                                  "semantic_encoder.encoder.front_end.", "dasheng_tokenizer.encoder.model."))]
    assert {k.split(".")[0] for k in state} == {"semantic_encoder", "fc_a", "fc_mu", "fc_logvar", "dasheng_tokenizer"}
    assert sum(1 for k in state if k.startswith("semantic_encoder.encoder.blocks.") and k.endswith("attn.qkv.weight")) == 32


def test_kl_matches_the_closed_form():
    torch.manual_seed(0)
    mu, logvar = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    per_frame = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert kl_divergence(mu, logvar, mask).item() == pytest.approx(per_frame[mask].mean().item(), rel=1e-5)


def test_reparameterised_samples_have_mu_and_exp_logvar():
    torch.manual_seed(0)
    model = LoSATok.from_preset("tiny").eval()
    wav = torch.randn(1, 16000) * 0.1
    mu = model.encode(wav).latents                       # eval mode: the mean
    assert torch.equal(mu, model.encode(wav).mu)
    model.train()
    draws = model.encode(wav.expand(400, -1)).latents  # 400 independent draws of the same clip
    encoding = model.encode(wav)
    std = (0.5 * encoding.logvar).exp()
    assert ((draws.mean(0) - encoding.mu[0]).abs() < 4 * std[0] / 20).all()
    assert ((draws.std(0) / std[0] - 1).abs() < 0.25).all()


def test_codec_interface_and_saved_folders(tmp_path):
    torch.manual_seed(0)
    model = LoSATok.from_preset("tiny")
    model.save_pretrained(tmp_path / "losatok")
    codec = load_codec(tmp_path / "losatok")
    assert isinstance(codec, LoSATok) and isinstance(codec, LatentCodec)
    assert (codec.latent_dim, codec.samples_per_latent) == (8, 640)
    encoding = codec.encode(torch.randn(2, 8000), torch.tensor([8000, 4000]))
    assert encoding.latents.shape == (2, 12, 8) and encoding.mask.sum(1).tolist() == [12, 6]
    assert (encoding.latents[1, 6:] == 0).all()
    assert codec.decode(encoding.latents).shape == (2, 12 * 640)
    assert dashflow_main(["reconstruct", "--demo-signal", "-o", str(tmp_path / "r.wav"),
                          "--checkpoint", str(tmp_path / "losatok")]) == 0
    from dashflow.features import encoder_from_spec

    widths = {part: encoder_from_spec(f"{tmp_path / 'losatok'}@{part}").encoder.output_dim
              for part in ("latents", "semantic", "semantic_low")}
    assert widths == {"latents": 8, "semantic": 64, "semantic_low": 8}  # each part reports its own width


def test_official_checkpoint_folder_loads_strictly(tmp_path):
    """A released-style folder (a .pth state dict under "state_dict", no config.json) opens strictly.
    Official folders are read at the class's default (paper) size; a subclass with the tiny sizes
    as defaults stands in for it here."""
    torch.manual_seed(0)
    tiny = LoSATok.from_preset("tiny")
    folder = tmp_path / "official"
    folder.mkdir()
    torch.save({"state_dict": tiny.state_dict()}, folder / "losatok_kl1e-2.pth")

    class TinyDefaults(LoSATok):
        def __init__(self, **kwargs):
            super().__init__(**{**dict(tiny.config), **kwargs})

    loaded = TinyDefaults.from_pretrained(folder)
    assert not loaded.training
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    wav = torch.randn(1, 8000)
    assert torch.equal(loaded.encode(wav).latents, tiny.eval().encode(wav).latents)


@pytest.mark.parametrize("content,message", [
    ("dasheng", "LoSATok.*(missing|unexpected)"),
    ("garbage", "not a readable checkpoint"),
    ("empty", "not a LoSATok folder"),
])
def test_foreign_folders_are_one_line(tmp_path, content, message):
    folder = tmp_path / "x"
    if content == "dasheng":
        torch.save(DashengTokenizer.from_preset("tiny").state_dict(), tmp_path / "weights.pth")
        folder.mkdir()
        shutil.move(tmp_path / "weights.pth", folder / "weights.pth")
    elif content == "garbage":
        folder.mkdir()
        (folder / "model.pth").write_bytes(b"not a zip at all")
    else:
        folder.mkdir()
    with pytest.raises(DashflowError, match=message) as caught:
        LoSATok.from_pretrained(folder)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- GAN training

@pytest.fixture(scope="module")
def losatok_setup(small_corpus, tmp_path_factory):
    """A train manifest, a tiny teacher tokenizer and a tiny SemBo over its features."""
    root = tmp_path_factory.mktemp("losatok")
    prepare_manifest(list(records_from_folder(small_corpus)), root / "train.jsonl")
    torch.manual_seed(0)
    DashengTokenizer.from_preset("tiny").save_pretrained(root / "teacher")
    SemanticBottleneck(64, 8, 32).save_pretrained(root / "sembo")
    return root


def gan_command(out: Path, root: Path, *overrides: str) -> list[str]:
    return cpu_launch("tokenizer_gan.py", "--config", str(ROOT / "recipes" / "configs" / "tokenizer" / "tiny.yaml"),
            f"data.train={root / 'train.jsonl'}", "data.val_clips=2", "model.kind=losatok", "model.preset=tiny",
            f"model.teacher={root / 'teacher'}", f"model.sembo={root / 'sembo'}", f"train.output_dir={out}",
            *overrides)


@pytest.mark.slow
def test_tiny_losatok_learns_and_keeps_its_teacher_frozen(tmp_path, losatok_setup):
    done = subprocess.run(gan_command(tmp_path, losatok_setup, "train.max_steps=120", "train.val_every=60",
                                      "loss.disc_start_step=60"), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    val = {r["step"]: r["val/mel_distance"] for r in metrics if "val/mel_distance" in r}
    assert val[120] < 0.8 * val[0], val
    steps = [r for r in metrics if "loss_g" in r]
    assert {"sem", "sem_low", "kl"} <= set(steps[0]) and "loss_d" in steps[-1]
    trained = LoSATok.from_pretrained(tmp_path / "final")
    teacher = DashengTokenizer.from_pretrained(losatok_setup / "teacher").semantic_encoder.state_dict()
    for key, value in trained.semantic_encoder.encoder.state_dict().items():
        ours = key.replace("init_bn.", "init_bn.1.") if key.startswith("init_bn.") else key
        assert torch.equal(value, teacher[ours]), key
    sembo = SemanticBottleneck.from_pretrained(losatok_setup / "sembo").state_dict()
    assert all(torch.equal(v, sembo[k]) for k, v in trained.semantic_encoder.bottleneck.state_dict().items())


@pytest.mark.slow
def test_losatok_training_resumes_exactly(tmp_path, losatok_setup):
    settings = ("train.max_steps=6", "train.checkpoint_every=3", "train.keep_checkpoints=0", "train.val_every=1000",
                "loss.disc_start_step=1", "data.batch_size=2", "data.crop_seconds=0.32")
    full = subprocess.run(gan_command(tmp_path / "full", losatok_setup, *settings), capture_output=True, text=True,
                          timeout=1800)
    assert full.returncode == 0, full.stderr[-3000:]
    shutil.copytree(tmp_path / "full", tmp_path / "killed")
    shutil.rmtree(tmp_path / "killed" / "step_0000006")
    shutil.rmtree(tmp_path / "killed" / "final")
    again = subprocess.run(gan_command(tmp_path / "killed", losatok_setup, *settings), capture_output=True,
                           text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_metrics(tmp_path / "killed" / "metrics.jsonl") == read_metrics(tmp_path / "full" / "metrics.jsonl")


def test_losatok_without_a_teacher_is_one_line(tmp_path, losatok_setup):
    recipe = gan_command(tmp_path, losatok_setup, "model.teacher=''", "train.max_steps=1")
    recipe = [sys.executable, *recipe[recipe.index(str(ROOT / "recipes" / "tokenizer_gan.py")):]]  # no launcher
    done = subprocess.run(recipe, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: LoSATok trains on")

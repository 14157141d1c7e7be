"""The multi-task recipe (recipes/unified.py): the task mixture, per-task routing and instructions,
bad task lists, a tiny three-task run (each task's loss falls), exact resume after kill -9, and
one export that serves every task with the weights on disk once."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines.audio import load_pipeline
from dashflow.generation.pipelines.components import SHARED_NAMES, weights_on_disk
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.training.text_to_audio import Frozen, TextConditioner
from dashflow.generation.training.unified import (
    DEFAULT_INSTRUCTIONS,
    Instructions,
    TaskMixture,
    UnifiedConfig,
    check_unified_settings,
    task_flow,
    unified_micro_batch_loss,
)
from dashflow.generation.sampling.flow import FlowMatchingConfig, LatentNormalizer
from dashflow.tokenizer.model import DashengTokenizer
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from dashflow.config import load_config
from dashflow.errors import DashflowError
from dashflow.manifests import write_manifest
from dashflow.text_encoders import load_text_encoder
from dashflow.training import read_metrics
from tests.conftest import SENTENCES, chirp, cpu_launch, kill_after_step, noise, tone, tts, write_wav

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "recipes" / "configs" / "unified" / "tiny.yaml"
LAUNCH_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    """Sounds (hums / whistles), music (chords / arpeggios), clean speech (flite, or its committed
    recordings) and noise, each a manifest; a random tiny tokenizer."""
    root = tmp_path_factory.mktemp("unified")
    sounds, music, speech, noises = [], [], [], []
    for i in range(8):
        write_wav(root / f"hum_{i}.wav", tone(100 + 20 * i, 1.2))
        write_wav(root / f"whistle_{i}.wav", chirp(2500 + 60 * i, 4000, 1.2))
        sounds += [{"audio_id": f"hum_{i}", "audio": str(root / f"hum_{i}.wav"), "caption": "a low hum"},
                   {"audio_id": f"whistle_{i}", "audio": str(root / f"whistle_{i}.wav"), "caption": "a high whistle"}]
        chord = sum(tone(f * (1 + i / 20), 1.2, amp=0.1) for f in (262, 330, 392))
        write_wav(root / f"chord_{i}.wav", chord)
        music.append({"audio_id": f"chord_{i}", "audio": str(root / f"chord_{i}.wav"), "caption": "a piano chord"})
        write_wav(root / f"noise_{i}.wav", noise(1.5, amp=0.05, seed=i))
        noises.append({"audio_id": f"noise_{i}", "audio": str(root / f"noise_{i}.wav")})
    for i, text in enumerate(SENTENCES):
        path = tts(text, root / f"speech_{i}.wav")
        assert path is not None, "needs flite, espeak-ng or the committed recordings in tests/data/speech"
        speech.append({"audio_id": f"speech_{i}", "audio": str(path)})
    torch.manual_seed(0)
    DashengTokenizer.from_preset("tiny").eval().save_pretrained(root / "tokenizer")
    return SimpleNamespace(root=root, tokenizer=root / "tokenizer",
                           sounds=write_manifest(sounds, root / "sounds.jsonl"),
                           music=write_manifest(music, root / "music.jsonl"),
                           speech=write_manifest(speech, root / "speech.jsonl"),
                           noise=write_manifest(noises, root / "noise.jsonl"))


def task_overrides(data) -> list[str]:
    return [f"tasks.0.train={data.sounds}", f"tasks.1.train={data.music}", f"tasks.2.train={data.speech}",
            f"tasks.2.noise={data.noise}", f"model.tokenizer={data.tokenizer}"]


# ----------------------------------------------------------------------------- the mixture

def test_sampled_task_proportions_match_the_weights():
    mixture = TaskMixture(["tta", "ttm", "se"], [2.0, 1.0, 1.0], seed=0)
    drawn = [mixture.task_at(step) for step in range(1, 20001)]
    shares = {name: drawn.count(name) / len(drawn) for name in ("tta", "ttm", "se")}
    assert shares == pytest.approx({"tta": 0.5, "ttm": 0.25, "se": 0.25}, abs=0.015)
    again = TaskMixture(["tta", "ttm", "se"], [2.0, 1.0, 1.0], seed=0)
    assert [again.task_at(step) for step in range(1, 201)] == drawn[:200]  # same on every process / resume
    assert mixture.batches_before(200) == {name: drawn[:200].count(name) for name in ("tta", "ttm", "se")}
    other_seed = TaskMixture(["tta", "ttm", "se"], [2.0, 1.0, 1.0], seed=1)
    assert [other_seed.task_at(step) for step in range(1, 201)] != drawn[:200]


@pytest.mark.parametrize("overrides, message", [
    (["tasks.1.weight=0"], "task 'ttm' has weight 0"),
    (["tasks.0.train=/nonexistent/sounds.jsonl"], "/nonexistent/sounds.jsonl: no such manifest"),
    (["tasks.1.name=karaoke"], "task 'karaoke': use one of tta, ttm, se"),
    (["tasks.1.name=tta"], "task 'tta' is listed twice"),
])
def test_bad_task_lists_get_one_clear_line(data, overrides, message):
    cfg = load_config(UnifiedConfig, TINY, task_overrides(data) + overrides)
    with pytest.raises(DashflowError, match=message):
        check_unified_settings(cfg)


def test_an_empty_task_list_is_refused():
    with pytest.raises(DashflowError, match="tasks is empty"):
        check_unified_settings(load_config(UnifiedConfig, None, ["model.tokenizer=x"]))


# ----------------------------------------------------------------------------- routing

def test_each_task_routes_its_content_and_draws_its_own_instructions(data):
    tokenizer = DashengTokenizer.from_pretrained(data.tokenizer).eval()
    encoder = load_text_encoder("minilm")
    frozen = Frozen(tokenizer, TextConditioner(encoder))
    torch.manual_seed(0)
    model = AudioGenModel.from_preset("tiny", latent_dim=tokenizer.latent_dim, text_embed_dim=encoder.dim,
                                      task_instruction_dim=encoder.dim, audio_content_dim=tokenizer.latent_dim)
    calls = []
    original = model.forward

    def spy(*args, **kwargs):
        calls.append(dict(kwargs, content=args[2]))
        return original(*args, **kwargs)

    model.forward = spy
    phrases = {name: Instructions.encode(DEFAULT_INSTRUCTIONS[name], encoder) for name in ("tta", "se")}
    accelerator = SimpleNamespace(autocast=contextlib.nullcontext, unwrap_model=lambda m: m)
    wav = torch.from_numpy(np.stack([tone(200, 1.0), chirp(300, 900, 1.0)]))
    length = torch.tensor([16000, 12800])
    flow = FlowMatchingConfig(cfg_dropout=0.5)
    text = {"audio": wav, "length": length, "audio_id": ["a", "b"], "caption": ["a low hum", "a high whistle"]}
    losses = unified_micro_batch_loss(model, "tta", text, frozen, phrases["tta"], task_flow(flow, "tta"), 0, 1, 0,
                                      accelerator)
    se = {"audio": wav, "noisy": wav + torch.from_numpy(noise(1.0, amp=0.2)), "length": length}
    se_losses = unified_micro_batch_loss(model, "se", se, frozen, phrases["se"], task_flow(flow, "se"), 0, 1, 0,
                                         accelerator)
    (text_call, se_call) = calls
    assert text_call["content_kind"] == "text" and text_call["content"].shape[-1] == encoder.dim
    assert se_call["content_kind"] == "audio" and se_call["content"].shape[-1] == tokenizer.latent_dim
    assert se_call["durations"] is not None and se_call["is_time_aligned"].all()
    assert not text_call["is_time_aligned"].any()
    for call, name in ((text_call, "tta"), (se_call, "se")):
        table = phrases[name]
        for states, mask in zip(call["instruction"], call["instruction_mask"]):
            assert any(torch.equal(states[mask], s[m]) for s, m in zip(table.states, table.mask)), \
                f"{name}: an instruction not among the task's phrasings"
    assert not se_call["drop_condition"].any()  # no CFG dropout for enhancement
    assert float(se_losses["global_duration"]) >= 0 and torch.isfinite(losses["loss"]) and torch.isfinite(
        se_losses["loss"])
    assert task_flow(flow, "se").global_duration_weight == 0 and task_flow(flow, "tta") is flow

    frozen.normalizer = LatentNormalizer(channels=tokenizer.latent_dim)
    frozen.normalizer.mean.fill_(0.5)
    frozen.normalizer.std.fill_(2.0)
    normalised = dataclasses.replace(task_flow(flow, "se"), normalize_latents=True)
    unified_micro_batch_loss(model, "se", se, frozen, phrases["se"], normalised, 0, 1, 0, accelerator)
    torch.testing.assert_close(calls[-1]["content"], (se_call["content"] - 0.5) / 2.0)  # noisy latents normalised


# ----------------------------------------------------------------------------- the recipe

SHORT = ("train.max_steps=24", "train.checkpoint_every=8", "data.batch_size=4", "optim.warmup_steps=4",
         "flow.normalize_latents=true", "model.normalizer_batches=3")


def launch(data, out: Path, *extra: str) -> list[str]:
    return cpu_launch("unified.py", "--config", str(TINY), *task_overrides(data), f"train.output_dir={out}", *extra)


def run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=LAUNCH_ENV, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unified_run")
    run(launch(data, out, "train.max_steps=90", "train.checkpoint_every=90", "data.batch_size=8",
               "flow.normalize_latents=true", "model.normalizer_batches=4"))
    return out


def test_a_tiny_mixture_trains_every_task(trained):
    rows = read_metrics(trained / "metrics.jsonl")
    for name in ("tta", "ttm", "se"):
        losses = [row[f"loss_{name}"] for row in rows if f"loss_{name}" in row]
        assert len(losses) >= 10, (name, len(losses))
        assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), (name, losses[:5], losses[-5:])


def test_one_export_serves_every_task_with_the_weights_once(trained, tmp_path):
    ema = trained / "final" / "ema"
    # each task's settings in its folder; the DiT, tokenizer, normalizer, ... once beside them, as plain files
    assert sorted(p.name for p in ema.iterdir()) == ["latent_normalizer", "scheduler", "se", "text_encoder",
                                                      "tokenizer", "transformer", "tta", "ttm"]
    shared = {"tokenizer", "scheduler", "latent_normalizer"}
    for name, components in (("tta", shared | {"text_encoder", "transformer"}),
                             ("ttm", shared | {"text_encoder", "transformer"}), ("se", shared | {"enhancer"})):
        assert {p.name for p in (ema / name).iterdir()} == components | {"model_index.json", "pipeline.py"}
        for component in components:  # linked to the one copy, so diffusers' own loader opens the folder
            link = ema / name / component
            assert link.is_symlink() and link.resolve() == (ema / SHARED_NAMES.get(component, component)).resolve()
    weights = [p for p in ema.rglob("*.safetensors") if not any(parent.is_symlink() for parent in p.parents)]
    assert sorted(str(p.relative_to(ema)) for p in weights) == [
        "latent_normalizer/model.safetensors", "tokenizer/model.safetensors", "transformer/model.safetensors"]
    assert all(p.stat().st_nlink == 1 for p in weights)
    assert weights_on_disk(ema) == sum(p.stat().st_size for p in weights)  # what the bundle budget counts
    without_links = tmp_path / "copied_without_symlinks"  # e.g. a checkout on a file system without them
    shutil.copytree(ema, without_links, ignore=lambda folder, names: [n for n in names if (Path(folder) / n).is_symlink()])
    assert load_pipeline(without_links, task="ttm").config.instruction == DEFAULT_INSTRUCTIONS["ttm"][0]
    assert type(DiffusionPipeline.from_pretrained(ema / "se", trust_remote_code=True)) is SpeechEnhancementPipeline
    music = load_pipeline(ema, task="ttm")
    audio = load_pipeline(ema)
    assert (music.task, audio.task) == ("ttm", "tta")
    assert music.config.instruction == DEFAULT_INSTRUCTIONS["ttm"][0]
    assert audio.config.instruction == DEFAULT_INSTRUCTIONS["tta"][0]
    clip = music("a piano chord", duration=1.0, num_inference_steps=4, seed=0)
    assert clip.audios.shape == (1, 16000) and np.isfinite(clip.audios).all()
    enhancer = SpeechEnhancementPipeline.from_pretrained(ema)
    fitted = LatentNormalizer.from_pretrained(trained / "latent_normalizer")  # fitted on every task's latents
    assert not torch.equal(fitted.std, torch.ones_like(fitted.std))
    for pipe in (music, audio, enhancer):
        assert torch.equal(pipe.latent_normalizer.std, fitted.std)
    noisy = torch.from_numpy(tone(200, 1.0) + noise(1.0, amp=0.1))[None]
    assert enhancer(noisy, num_inference_steps=4, seed=0).shape == (1, 16000)
    out = tmp_path / "gen.wav"
    result = subprocess.run([sys.executable, "-m", "dashflow.generation.cli.generate", "a piano chord", "--checkpoint",
                             str(ema), "--task", "ttm", "--steps", "4", "--duration", "1", "-o", str(out), "--quiet"],
                            capture_output=True, text=True, env=LAUNCH_ENV, timeout=300)
    assert result.returncode == 0 and out.is_file(), result.stderr[-2000:]


def test_killed_run_resumes_exactly(data, tmp_path):
    reference = tmp_path / "reference"
    run(launch(data, reference, *SHORT))
    out = tmp_path / "killed"
    status = kill_after_step(launch(data, out, *SHORT), out / "metrics.jsonl", 10, tmp_path / "first.log",
                             LAUNCH_ENV, REPO)
    assert status != 0 and not (out / "final").exists()
    log = run(launch(data, out, *SHORT))
    assert "resumed from" in log
    assert read_metrics(out / "metrics.jsonl") == read_metrics(reference / "metrics.jsonl")
    for kind in ("raw", "ema"):
        ours = load_file(out / "final" / kind / "transformer" / "model.safetensors")
        theirs = load_file(reference / "final" / kind / "transformer" / "model.safetensors")
        assert all(torch.equal(ours[key], theirs[key]) for key in theirs), kind


def test_packaging_a_unified_export_as_the_bundled_demo(trained, tmp_path):
    """recipes/demo/package.py on a multi-task export: fp16 weights stored once, every task opens
    from the packaged folder, and the card names the three tasks and the SE corpus's licences."""
    attribution = tmp_path / "ATTRIBUTION.csv"
    attribution.write_text("audio_id,label,package,version,licences (package)\nhum_0,hum,sox,14.4,GPL-2+\n")
    se_attribution = tmp_path / "ATTRIBUTION_se.csv"
    se_attribution.write_text("audio_id,kind,package,version\nawb/000,speech,libflite1,2.2\n"
                              "pink,noise,alsa-utils,1.2\nsynthetic_hum_50hz,noise,synthetic,\n")
    target = tmp_path / "demo" / "pipeline"
    result = subprocess.run([sys.executable, str(REPO / "recipes" / "demo" / "package.py"), str(trained / "final" / "ema"),
                             str(target), "--attribution", str(attribution), "--se-attribution", str(se_attribution)],
                            capture_output=True, text=True, env=LAUNCH_ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_file(target / "transformer" / "model.safetensors")["backbone.patch_embed.proj.weight"].dtype == torch.float16
    assert weights_on_disk(target) == sum(p.stat().st_size for p in (target / "transformer", target / "tokenizer",
                                                                     target / "latent_normalizer")
                                          for p in p.glob("*.safetensors"))
    assert load_pipeline(target, task="ttm").config.instruction == DEFAULT_INSTRUCTIONS["ttm"][0]
    assert SpeechEnhancementPipeline.from_pretrained(target).enhancer.config.audio_content_dim is not None
    card = (target / "MODEL_CARD.md").read_text()
    assert "## Tasks" in card and '`generate --task ttm' in card and "`enhance noisy.wav --checkpoint" in card
    assert "alsa-utils" in card and (target / "ATTRIBUTION_se.csv").is_file()
    assert "recordings from alsa-utils and synthetic noise (white / pink / brown" in card  # not a package

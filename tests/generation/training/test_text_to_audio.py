"""Text-to-audio / text-to-music training recipes (recipes/tta.py with task tta or ttm, dashflow.generation.training).

Fast tests cover the data, the randomness keys, the EMA files and the configs (full sizes on
the meta device). The slow ones run the tiny recipe under ``accelerate launch`` on CPU with a
random tiny DashengTokenizer, the bundled MiniLM and two caption classes (low hums, high
whistles): it learns, two processes compute what one does, and a killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dashflow.generation.pipelines.audio import load_pipeline
from dashflow.generation.sampling.flow import LatentNormalizer
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.training.data import (
    LatentClipDataset,
    batch_latents,
    build_train_loader,
    collate_latents,
    require_captions,
)
from dashflow.generation.training.latent_cache import LatentCache, cache_latents
from dashflow.generation.training.text_to_audio import (
    Config,
    ModelConfig,
    build_model,
    check_settings,
    micro_batch_seeds,
)
from dashflow.tokenizer.model import DashengTokenizer
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dashflow.audio import load_audio
from dashflow.config import load_config
from dashflow.data import write_shards
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest
from dashflow.training import load_ema, read_metrics, save_ema, split_batch
from tests.conftest import chirp, kill_after_step, tone, write_wav

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "recipes" / "configs"
TINY = CONFIGS / "tta" / "tiny.yaml"
LOW, HIGH = "a low hum", "a high whistle"
CLIP_SECONDS = 1.5  # 37 latent frames


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    """16 low hums (100-325 Hz tones) and 16 high whistles (2.5-4 kHz chirps) with captions,
    a random tiny tokenizer folder and its latent cache."""
    root = tmp_path_factory.mktemp("tta_corpus")
    records = []
    for i in range(16):
        low = tone(100 + 15 * i, CLIP_SECONDS) + tone(2 * (100 + 15 * i), CLIP_SECONDS, amp=0.1)
        write_wav(root / f"low_{i}.wav", low)
        write_wav(root / f"high_{i}.wav", chirp(2500 + 50 * i, 4000, CLIP_SECONDS))
        records += [{"audio_id": f"low_{i}", "audio": str(root / f"low_{i}.wav"), "caption": LOW},
                    {"audio_id": f"high_{i}", "audio": str(root / f"high_{i}.wav"), "caption": HIGH}]
    manifest = write_manifest(records, root / "train.jsonl")
    torch.manual_seed(0)
    tokenizer = DashengTokenizer.from_preset("tiny").eval()
    tokenizer.save_pretrained(root / "tokenizer")
    assert cache_latents(read_manifest(manifest), tokenizer, root / "latents") == []
    return SimpleNamespace(root=root, manifest=manifest, tokenizer_dir=root / "tokenizer",
                           tokenizer=tokenizer, latents=root / "latents")


# ----------------------------------------------------------------------------- data

def test_cached_and_on_the_fly_latents_agree(corpus):
    """The same loader position gives the same clips, latents and masks from audio and cache."""
    common = {"source": str(corpus.manifest), "tokenizer": corpus.tokenizer, "max_seconds": 2.0,
              "batch_size": 4, "seed": 3, "start_step": 5}
    audio = next(iter(build_train_loader(**common)))
    cached = next(iter(build_train_loader(**common, latent_cache=str(corpus.latents))))
    assert audio["audio_id"] == cached["audio_id"] and audio["caption"] == cached["caption"]
    x_audio, m_audio = batch_latents(audio, corpus.tokenizer)
    x_cached, m_cached = batch_latents(cached, corpus.tokenizer)
    assert x_audio.shape == x_cached.shape == (4, corpus.tokenizer.latent_dim, 37)
    assert torch.equal(m_audio, m_cached) and bool(m_audio.all())
    torch.testing.assert_close(x_audio, x_cached, atol=1e-5, rtol=0)


def test_shards_give_captioned_audio_batches(corpus, tmp_path):
    write_shards(corpus.manifest, tmp_path / "shards", clips_per_shard=16)
    batch = next(iter(build_train_loader(str(tmp_path / "shards"), corpus.tokenizer, 1.0, batch_size=4)))
    assert set(batch["caption"]) <= {LOW, HIGH} and len(batch["caption"]) == 4
    latents, mask = batch_latents(batch, corpus.tokenizer)
    assert latents.shape == (4, corpus.tokenizer.latent_dim, 25) and bool(mask.all())
    with pytest.raises(DashflowError, match="latent cache is read through a .jsonl manifest"):
        build_train_loader(str(tmp_path / "shards"), corpus.tokenizer, 1.0, 4, latent_cache=str(corpus.latents))


def test_latent_crops_are_resumable_and_padded(corpus):
    cache = LatentCache.for_tokenizer(corpus.latents, corpus.tokenizer)
    records = read_manifest(corpus.manifest)
    dataset = LatentClipDataset(records, cache, max_frames=10, seed=1)
    full = cache.load("low_0")
    first = dataset[(0, 0)]["latents"]
    assert first.shape == (10, corpus.tokenizer.latent_dim)
    assert torch.equal(first, dataset[(0, 0)]["latents"])  # a pure function of (seed, epoch, clip)
    starts = {int((full[:, 0] == dataset[(epoch, 0)]["latents"][0, 0]).nonzero()[0]) for epoch in range(8)}
    assert len(starts) > 1  # epochs draw other crops

    batch = collate_latents([{"latents": full[:5], "caption": LOW, "audio_id": "a"},
                             {"latents": full[:8], "caption": HIGH, "audio_id": "b"}])
    assert batch["latents"].shape == (2, 8, corpus.tokenizer.latent_dim)
    assert batch["latent_mask"].sum(1).tolist() == [5, 8]
    assert not batch["latents"][0, 5:].any()
    latents, mask = batch_latents(batch, corpus.tokenizer)
    assert latents.shape == (2, corpus.tokenizer.latent_dim, 8) and mask.sum().item() == 13

    with pytest.raises(DashflowError, match="not in the latent cache.*cache-latents"):
        LatentClipDataset(records + [{"audio_id": "ghost", "audio": "x.wav", "caption": LOW}], cache, 10)


def test_captions_are_required(corpus):
    records = read_manifest(corpus.manifest)
    assert require_captions(records, "m.jsonl") == records
    records[3] = {**records[3], "caption": "  "}
    with pytest.raises(DashflowError, match=f"m.jsonl: clip '{records[3]['audio_id']}' has no caption"):
        require_captions(records, "m.jsonl")


def test_split_batch_keeps_order():
    batch = {"latents": torch.arange(6)[:, None], "caption": list("abcdef")}
    parts = split_batch(batch, 3)
    assert [p["caption"] for p in parts] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert torch.equal(torch.cat([p["latents"] for p in parts]), batch["latents"])
    with pytest.raises(DashflowError, match="does not split into 4"):
        split_batch(batch, 4)


# ----------------------------------------------------------------------------- randomness, EMA

def test_micro_batch_seeds_are_keyed_by_step_and_position():
    seeds = {(step, pos): micro_batch_seeds(7, step, pos) for step in (1, 2) for pos in (0, 1)}
    assert micro_batch_seeds(7, 2, 1) == seeds[(2, 1)]  # reproducible
    flat = [s for pair in seeds.values() for s in pair]
    assert len(set(flat)) == len(flat)  # distinct across steps, positions and the two uses
    assert micro_batch_seeds(8, 1, 0) != seeds[(1, 0)]
    assert all(0 <= s < 2 ** 63 for s in flat)  # valid torch seeds


def test_ema_file_round_trip(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    names = [name for name, _ in module.named_parameters()]
    ema = EMAModel(module.parameters(), decay=0.9, foreach=True)
    for _ in range(3):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p))
        ema.step(module.parameters())
    save_ema(ema, names, tmp_path / "ema.safetensors")
    assert sorted(load_file(tmp_path / "ema.safetensors")) == sorted(names)

    restored = EMAModel(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).parameters(),
                        decay=0.5, foreach=True)
    load_ema(restored, names, tmp_path / "ema.safetensors")
    assert restored.optimization_step == 3 and restored.decay == 0.9
    for a, b in zip(ema.shadow_params, restored.shadow_params):
        assert torch.equal(a, b)
    with pytest.raises(DashflowError, match="do not match"):
        load_ema(restored, ["0.weight", "x", "1.weight", "1.bias"], tmp_path / "ema.safetensors")
    with pytest.raises(DashflowError, match="has no EMA weights"):
        load_ema(restored, names, tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- configs

class _Encoder:
    """Text-encoder stand-in: ``dim``-wide CPU states for a 9-token instruction."""

    def __init__(self, dim: int):
        self.dim, self.name = dim, f"stub-{dim}"

    def encode(self, prompts):
        return (torch.zeros(len(prompts), 9, self.dim, device="cpu"),
                torch.ones(len(prompts), 9, dtype=torch.bool, device="cpu"))


OFFICIAL_TOKENIZER = SimpleNamespace(latent_dim=1280, sample_rate=16000, samples_per_latent=640)
TEXT_DIMS = {"flan-t5-large": 1024, "minilm": 384}


@pytest.mark.parametrize("task, size, preset, params", [
    ("tta", "paper", "paper", 748_488_194), ("ttm", "paper", "paper", 748_488_194),
    ("tta", "small", "small", None)])
def test_full_size_configs_build_on_meta(task, size, preset, params):
    cfg: Config = load_config(Config, CONFIGS / task / f"{size}.yaml",
                              ["data.train=x.jsonl", "model.tokenizer=t", "model.gradient_checkpointing=true"])
    assert cfg.model.preset == preset and cfg.model.instruction
    if size == "paper":  # UniFlow-Audio's configs/ (github.com/wsntxxn/UniFlow-Audio)
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == (5e-5, 0.01, 1.0)
        assert (cfg.optim.schedule, cfg.optim.warmup_steps) == ("constant_with_warmup", 10000)
        assert (cfg.data.batch_size, cfg.data.max_seconds, cfg.model.text_encoder) == (24, 10.0, "flan-t5-large")
        assert (cfg.flow.timestep_sampling, cfg.flow.cfg_dropout) == ("logit_normal", 0.2)
        assert (cfg.sample.num_steps, cfg.sample.guidance_scale, cfg.sample.sway_coef) == (25, 5.0, -1.0)
    encoder = _Encoder(TEXT_DIMS[cfg.model.text_encoder])
    with torch.device("meta"):
        model = build_model(cfg.model, OFFICIAL_TOKENIZER, encoder)
    if params is not None:
        assert sum(p.numel() for p in model.parameters()) == params
    assert model.config.dit_embed_dim == {"paper": 1536, "small": 768}[preset]
    assert model.content_encoder.text_encoder.proj.in_features == encoder.dim
    assert model.instruction_embedding.shape == (1, 9, encoder.dim)
    assert model.config.text_encoder_name == cfg.model.text_encoder
    assert all(block.gradient_checkpointing for block in model.backbone.blocks())


def test_build_model_rejects_mismatched_parts():
    cfg: Config = load_config(Config, CONFIGS / "tta" / "paper.yaml", ["model.tokenizer=t"])
    tiny_tokenizer = SimpleNamespace(latent_dim=64, sample_rate=16000, samples_per_latent=640)
    with torch.device("meta"), pytest.raises(DashflowError, match="dit_in_chans=1280 must equal 64"):
        build_model(cfg.model, tiny_tokenizer, _Encoder(1024))
    cfg.model.init_from, cfg.model.overrides = "somewhere", {"dit_depth": 3}
    with pytest.raises(DashflowError, match="apply to a preset; they cannot change model.init_from"):
        build_model(cfg.model, OFFICIAL_TOKENIZER, _Encoder(1024))


def test_warm_start_copies_every_matching_tensor_and_leaves_the_new_ones_fresh(tmp_path, capsys):
    """A text-only DiT starts a model that also has the se task's audio content path (the bundled
    unified demo is built so): shared tensors copied, the new projection and a longer
    instruction buffer left as initialised."""
    tokenizer = SimpleNamespace(latent_dim=16, sample_rate=16000, samples_per_latent=640)
    small = {"dit_embed_dim": 32, "dit_depth": 2, "dit_num_heads": 2, "content_dim": 32, "adapter_num_heads": 2,
             "duration_predictor_filter_channels": 16}
    text_only = build_model(ModelConfig(preset="tiny", overrides=small, tokenizer="t", instruction="make a sound"),
                            tokenizer, _Encoder(24))
    text_only.save_pretrained(tmp_path / "text_only")
    grown_config = ModelConfig(preset="tiny", overrides={**small, "audio_content_dim": 16}, tokenizer="t",
                               instruction="make a sound", warm_start=str(tmp_path / "text_only"))
    grown = build_model(grown_config, tokenizer, _Encoder(24))
    source, target = text_only.state_dict(), grown.state_dict()
    fresh = {name for name in target if name not in source}
    assert fresh == {"content_encoder.audio_encoder.proj.weight", "content_encoder.audio_encoder.proj.bias"}
    assert all(torch.equal(target[name], source[name]) for name in target if name not in fresh)
    assert "fresh: content_encoder.audio_encoder.proj.bias, content_encoder.audio_encoder.proj.weight, " \
           "instruction_embedding\n" in capsys.readouterr().out  # each task sets its instruction

    other = build_model(ModelConfig(preset="tiny", overrides={**small, "dit_embed_dim": 48, "content_dim": 48},
                                    tokenizer="t"), SimpleNamespace(latent_dim=8, sample_rate=16000,
                                                                    samples_per_latent=640), _Encoder(12))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(DashflowError, match="does not fit the model"):
        build_model(dataclasses.replace(grown_config, warm_start=str(tmp_path / "other")), tokenizer, _Encoder(24))
    with pytest.raises(DashflowError, match="cannot change model.init_from"):
        build_model(dataclasses.replace(grown_config, init_from=str(tmp_path / "text_only"), overrides={}),
                    tokenizer, _Encoder(24))


@pytest.mark.parametrize("override, message", [
    ("train.checkpoint_every=0", "train.checkpoint_every=0: must be positive"),
    ("optim.gradient_accumulation_steps=-2", "gradient_accumulation_steps=-2: must be positive"),
    ("sample.every=-1", "sample.every=-1: must be 0"),
    ("flow.cfg_dropout=1.5", "0 <= cfg_dropout <= 1")])
def test_bad_settings_are_rejected(override, message):
    base = ["data.train=x.jsonl", "model.tokenizer=t"]
    check_settings(load_config(Config, TINY, base))
    with pytest.raises(DashflowError, match=message):
        check_settings(load_config(Config, TINY, [*base, override]))


def test_recipe_names_unset_config_values_in_one_line():
    result = subprocess.run([sys.executable, str(REPO / "recipes" / "tta.py"), "--config",
                             str(CONFIGS / "tta" / "tiny.yaml")], capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {CONFIGS / 'tta' / 'tiny.yaml'} leaves data.train, model.tokenizer unset; pass them "
        "as data.train=... after the config"]


# ----------------------------------------------------------------------------- accelerate launch

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(config: Path, corpus, output_dir: Path, *overrides: str, processes: int = 1,
                   script: str = "tta.py") -> list[str]:
    """``accelerate launch`` of a recipe on CPU: one process, or ``processes`` gloo DDP ranks."""
    flags = (["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(_free_port())]
             if processes > 1 else ["--cpu", "--num_processes", "1"])
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
            str(REPO / "recipes" / script), "--config", str(config), f"data.train={corpus.manifest}",
            f"model.tokenizer={corpus.tokenizer_dir}", f"train.output_dir={output_dir}", *overrides]


# CPU only (a GPU would change the numbers); ACCELERATE_USE_CPU makes --multi_gpu ranks form a
# gloo group on CPU; one thread per process keeps two processes off each other's cores.
LAUNCH_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def run_launch(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=LAUNCH_ENV, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def transformer_weights(run: Path, kind: str) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / kind / "transformer" / "model.safetensors")


# 30 steps of 2 x 4 clips (audio encoded on the fly), checkpoints every 10 steps
SHORT_RUN = ("train.max_steps=30", "train.checkpoint_every=10", "sample.every=0", "data.batch_size=4")


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory) -> Path:
    """One process, gradient accumulation 2: the uninterrupted run the others must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    run_launch(launch_command(TINY, corpus, out, *SHORT_RUN, "optim.gradient_accumulation_steps=2"))
    return out


@pytest.mark.slow
def test_tiny_recipe_learns_two_prompt_classes(corpus, tmp_path):
    """300 steps from cached latents and text: the loss drops below half its start, samples and
    spectrograms reach TensorBoard, and samples of each prompt from the exported EMA pipeline
    lie nearer their own class than the other.

    Embedding: the time-averaged tokenizer latent, i.e. (a random projection of) the clip's
    mean log-mel spectrum; class centroids come from the training clips' cached latents.
    """
    out = tmp_path / "run"
    run_launch(launch_command(TINY, corpus, out, f"data.latent_cache={corpus.latents}",
                              f"data.text_cache={tmp_path / 'text_cache'}", "sample.every=300"))

    losses = [m["loss"] for m in read_metrics(out / "metrics.jsonl")]
    assert len(losses) == 300
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    assert sorted(p.name for p in (out / "samples" / "step_0000300").iterdir()) == ["0.wav", "1.wav", "prompts.json"]
    tags = {}
    for events in (out / "logs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"audio": 0, "images": 0})
        tags.update({kind: names for kind, names in accumulator.Reload().Tags().items() if names})
    assert {"loss", "flow", "lr", "grad_norm"} <= set(tags["scalars"])
    assert set(tags["audio"]) == {"sample/0", "sample/1"}
    assert set(tags["images"]) == {"sample/0_mel", "sample/1_mel"}

    pipe = load_pipeline(out / "final" / "ema")
    audio = pipe([LOW, HIGH], duration=1.0, seed=0, num_inference_steps=4, output_type="pt").audios
    assert audio.shape == (2, 16000) and bool(torch.isfinite(audio).all())

    cache = LatentCache.for_tokenizer(corpus.latents, corpus.tokenizer)
    records = read_manifest(corpus.manifest)
    centroids = {caption: torch.stack([cache.load(r["audio_id"]).mean(0) for r in records
                                       if r["caption"] == caption]).mean(0) for caption in (LOW, HIGH)}
    model = pipe.transformer
    ratios = []
    for prompt, other in ((LOW, HIGH), (HIGH, LOW)):
        content, mask = pipe.text_encoder.encode(pipe.format_prompts([prompt] * 4))
        cond = model.condition(content, mask, latent_lengths=25)
        latents = FlowMatching(model).sample(cond, num_steps=25, guidance_scale=5.0,
                                             generator=torch.Generator().manual_seed(0))
        embedding = latents.mean(2)  # [4, C]
        own = (embedding - centroids[prompt]).norm(dim=1)
        away = (embedding - centroids[other]).norm(dim=1)
        assert bool((own < away).all()), (prompt, own.tolist(), away.tolist())
        ratios.append(float(own.mean() / away.mean()))
    assert max(ratios) < 0.6, ratios


@pytest.mark.slow
def test_two_processes_match_one_process(corpus, reference_run, tmp_path):
    """2 gloo processes x 4 clips = 1 process x 2 micro-batches of 4: same data, same draws.

    Tolerance 1e-5 relative: only the gradient reduction order differs (all-reduce vs local
    accumulation), float32 rounding far below it."""
    out = tmp_path / "ddp"
    run_launch(launch_command(TINY, corpus, out, *SHORT_RUN, processes=2))
    one, two = read_metrics(reference_run / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in two] == list(range(1, 31))  # one writer: the ranks formed one group
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), (a, b)
    reference = transformer_weights(reference_run, "ema")
    for key, value in transformer_weights(out, "ema").items():
        torch.testing.assert_close(value, reference[key], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_killed_run_resumes_exactly(corpus, reference_run, tmp_path):
    """SIGKILL after step 12, relaunch: the run continues from step 10 with the losses, weights
    and EMA of the uninterrupted run, bit for bit."""
    out = tmp_path / "killed"
    command = launch_command(TINY, corpus, out, *SHORT_RUN, "optim.gradient_accumulation_steps=2")
    status = kill_after_step(command, out / "metrics.jsonl", 12, tmp_path / "first.log", LAUNCH_ENV, REPO)
    assert status != 0, "the run finished before it could be killed"
    assert not (out / "final").exists()
    saved = sorted(p.name for p in out.glob("step_*"))
    assert saved and "step_0000030" not in saved

    log = run_launch(command)
    assert f"resumed from {out / saved[-1]}" in log
    assert read_metrics(out / "metrics.jsonl") == read_metrics(reference_run / "metrics.jsonl")
    for kind in ("raw", "ema"):
        reference = transformer_weights(reference_run, kind)
        resumed = transformer_weights(out, kind)
        assert all(torch.equal(resumed[key], reference[key]) for key in reference), kind


@pytest.mark.slow
def test_ttm_recipe_exports_music_pipeline(corpus, tmp_path):
    """tta.py with the tiny music config (task: ttm), on per-channel normalised latents (the RAE option):
    samples are logged, and both exports are music pipelines carrying the fitted normalizer."""
    out, config = tmp_path / "ttm", CONFIGS / "ttm" / "tiny.yaml"
    run_launch(launch_command(config, corpus, out, "train.max_steps=4", "sample.every=2",
                              "train.checkpoint_every=4", "flow.normalize_latents=true",
                              "model.normalizer_batches=3"))
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]
    for step in (2, 4):
        folder = out / "samples" / f"step_{step:07d}"
        assert (folder / "prompts.json").is_file()
        assert [len(load_audio(folder / f"{i}.wav")) for i in (0, 1)] == [32000, 32000]

    fitted = LatentNormalizer.from_pretrained(out / "latent_normalizer")
    batches = islice(build_train_loader(str(corpus.manifest), corpus.tokenizer, 2.0, 4), 3)
    expected = LatentNormalizer.fit(batch_latents(batch, corpus.tokenizer) for batch in batches)
    torch.testing.assert_close(fitted.mean, expected.mean)
    torch.testing.assert_close(fitted.std, expected.std)
    for kind in ("raw", "ema"):
        pipe = load_pipeline(out / "final" / kind)
        assert type(pipe).__name__ == "TextToMusicPipeline" and pipe.prompt_template == "{prompt}"
        assert torch.equal(pipe.latent_normalizer.mean, fitted.mean)
    # the frozen components are written once: the EMA pipeline hard-links the raw one's files
    raw, ema = out / "final" / "raw", out / "final" / "ema"
    for frozen in ("tokenizer/model.safetensors", "latent_normalizer/model.safetensors", "scheduler/scheduler_config.json"):
        assert (ema / frozen).samefile(raw / frozen)
    assert not (ema / "transformer/model.safetensors").samefile(raw / "transformer/model.safetensors")
    model = pipe.transformer
    _, mask = pipe.text_encoder.encode([load_config(Config, config).model.instruction])
    assert int(model.instruction_lengths) == int(mask.sum()) == model.config.instruction_seq_len
    assert model.config.text_encoder_name == "minilm"

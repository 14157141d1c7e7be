"""Speech-enhancement recipe (recipes/se.py) and a tiny version of the SE experiment.

Configs load and check fast. The slow tests run ``accelerate launch recipes/se.py`` on CPU:
a killed-and-resumed denoiser run equals an uninterrupted one; a flow run exports a pipeline
that the ``enhance`` command uses; and the tiny experiment trains the latent denoiser on the
bundled demo tokenizer with TTS speech (flite / espeak-ng; harmonic glides without them) mixed
with coloured noise, then checks held-out speakers and noises: the enhanced latents are closer
to the clean ones than the noisy latents are, and the mask output beats the noisy input in
SI-SDR and PESQ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from dashflow.eval.enhancement import pesq_wb, si_sdr
from dashflow.generation.cli.enhance import enhance_main
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.training.speech_enhancement import SEConfig, check_se_settings
from dashflow.tokenizer.model import DashengTokenizer

from dashflow import demo_corpus
from dashflow.audio import load_audio
from dashflow.config import load_config
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest
from dashflow.mixing import MixingConfig, write_mixed_set
from dashflow.training import read_metrics
from tests.conftest import SENTENCES, chirp, tone, tts, write_wav
from tests.generation.training.test_text_to_audio import launch_command, run_launch

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "recipes" / "configs" / "se"
DEMO_TOKENIZER = REPO / "generation" / "demo" / "pipeline" / "tokenizer"


@pytest.mark.parametrize("name", ["denoiser", "flow", "tiny"])
def test_configs_load_and_check(name):
    cfg = load_config(SEConfig, CONFIGS / f"{name}.yaml", ["model.tokenizer=tok", "data.train=clean.jsonl"])
    check_se_settings(cfg)
    assert cfg.model.kind in ("denoiser", "flow")
    bad = load_config(SEConfig, CONFIGS / f"{name}.yaml", ["model.kind=unet", "model.tokenizer=t", "data.train=c"])
    with pytest.raises(DashflowError, match="model.kind='unet'"):
        check_se_settings(bad)


def test_latent_normalisation_is_refused_for_the_denoiser():
    cfg = load_config(SEConfig, CONFIGS / "denoiser.yaml", ["model.tokenizer=t", "data.train=c",
                                                            "flow.normalize_latents=true"])
    with pytest.raises(DashflowError, match="applies to model.kind=flow"):
        check_se_settings(cfg)
    cfg.model.kind = "flow"
    check_se_settings(cfg)


def coloured_noise(seconds: float, exponent: float, seed: int) -> np.ndarray:
    """Noise with power spectrum ~ 1 / f^exponent (0 white, 1 pink, 2 brown), peak 0.5."""
    wav = demo_corpus.coloured_noise(exponent, int(seconds * 16000), np.random.default_rng(seed))
    return (0.5 * wav / np.abs(wav).max()).astype(np.float32)


def speech(text: str, path: Path, voice: str, index: int) -> Path:
    """TTS speech, or (no TTS engine) a harmonic glide with syllable-rate modulation."""
    if tts(text, path, voice) is not None:
        return path
    seconds = 1.5 + 0.1 * (index % 5)
    f0 = 110 + 12 * index
    wav = sum(chirp(k * f0, k * f0 * 1.3, seconds, amp=0.2 / k) for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(wav.size) / 16000)
    return write_wav(path, (wav * envelope).astype(np.float32))


@pytest.fixture(scope="module")
def se_corpus(tmp_path_factory) -> SimpleNamespace:
    """Train speakers slt/rms/kal16 x 8 sentences, white/pink/brown noise; test speaker awb
    (4 sentences) mixed at -5..10 dB with unseen noise (other seeds, plus a mains hum)."""
    root = tmp_path_factory.mktemp("se_corpus")
    train = [{"audio_id": f"{voice}_{i}", "speaker": voice,
              "audio": str(speech(text, root / "clean" / f"{voice}_{i}.wav", voice, i + 10 * v))}
             for v, voice in enumerate(("slt", "rms", "kal16")) for i, text in enumerate(SENTENCES)]
    test = [{"audio_id": f"awb_{i}", "speaker": "awb",
             "audio": str(speech(text, root / "clean" / f"awb_{i}.wav", "awb", 40 + i))}
            for i, text in enumerate(SENTENCES[:4])]
    noises = []
    for i, exponent in enumerate((0.0, 1.0, 2.0, 0.0, 1.0)):
        write_wav(root / "noise" / f"n{i}.wav", coloured_noise(4.0, exponent, seed=i))
        noises.append({"audio_id": f"n{i}", "audio": str(root / "noise" / f"n{i}.wav")})
    hum = tone(50, 4.0, amp=0.2) + tone(150, 4.0, amp=0.1) + coloured_noise(4.0, 1.0, seed=9) * 0.3
    write_wav(root / "noise" / "hum.wav", hum)
    test_noise = [noises[3], noises[4], {"audio_id": "hum", "audio": str(root / "noise" / "hum.wav")}]
    test_set = write_mixed_set(test, test_noise, root / "test", MixingConfig(snr_db=[-5.0, 10.0]), seed=0)
    torch.manual_seed(0)
    tiny = DashengTokenizer.from_preset("tiny").eval()
    tiny.save_pretrained(root / "tiny_tokenizer")
    return SimpleNamespace(root=root, manifest=write_manifest(train, root / "train_clean.jsonl"),
                           noise=write_manifest(noises[:3], root / "train_noise.jsonl"),
                           test=test_set, tokenizer_dir=root / "tiny_tokenizer")


def se_launch(corpus, output_dir: Path, *overrides: str) -> str:
    command = launch_command(CONFIGS / "tiny.yaml", corpus, output_dir, f"data.noise={corpus.noise}",
                             *overrides, script="se.py")
    return run_launch(command)


def enhancer_weights(run: Path) -> dict[str, torch.Tensor]:
    return SpeechEnhancementPipeline.from_pretrained(run / "final" / "raw").enhancer.state_dict()


@pytest.mark.slow
def test_denoiser_run_resumed_from_a_checkpoint_matches_an_uninterrupted_one(se_corpus, tmp_path):
    steps = ["train.max_steps=12", "train.checkpoint_every=6", "train.keep_checkpoints=0"]
    se_launch(se_corpus, tmp_path / "whole", *steps)
    checkpoint = tmp_path / "whole" / "step_0000006"
    assert checkpoint.is_dir()
    shutil.copytree(checkpoint, tmp_path / "resumed" / checkpoint.name)  # as a run killed after step 6
    out = se_launch(se_corpus, tmp_path / "resumed", *steps)
    assert "resumed from" in out and "at step 6" in out
    whole = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(7, 13)) and len(whole) == 12
    assert [r["loss"] for r in whole[6:]] == [r["loss"] for r in resumed]
    a, b = enhancer_weights(tmp_path / "whole"), enhancer_weights(tmp_path / "resumed")
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_flow_run_exports_a_pipeline_that_enhance_uses(se_corpus, tmp_path, capfd):
    se_launch(se_corpus, tmp_path / "run", "model.kind=flow", "train.max_steps=4", "train.checkpoint_every=4")
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert {"flow", "local_duration", "global_duration"} <= set(metrics[-1])
    noisy = Path(se_corpus.test).parent / "noisy"
    source = min(noisy.iterdir())
    out = tmp_path / "clean.wav"
    code = enhance_main([str(source), "-o", str(out), "--checkpoint", str(tmp_path / "run" / "final" / "ema"),
                         "--steps", "2", "--quiet", "--device", "cpu"])
    assert code == 0
    assert sf.info(str(out)).frames == sf.info(str(source)).frames and sf.info(str(out)).samplerate == 16000
    assert capfd.readouterr().out.startswith(f"wrote {out}")
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["enhancer"] == "flow" and (sidecar["steps"], sidecar["samples"], sidecar["seed"]) == (2, 4, 0)


@pytest.mark.slow
def test_flow_run_on_normalised_latents_resumes_exactly_and_exports_its_normalizer(se_corpus, tmp_path):
    """flow.normalize_latents: the normalizer is fitted once (saved beside the checkpoints), read
    back on resume (the losses after it match an uninterrupted run) and exported with the pipeline,
    which normalises the noisy content and denormalises what it samples."""
    steps = ["model.kind=flow", "flow.normalize_latents=true", "model.normalizer_batches=2", "train.max_steps=4",
             "train.checkpoint_every=2", "train.keep_checkpoints=0"]
    se_launch(se_corpus, tmp_path / "whole", *steps)
    for part in ("step_0000002", "latent_normalizer"):  # as a run killed after step 2
        shutil.copytree(tmp_path / "whole" / part, tmp_path / "resumed" / part)
    assert "at step 2" in se_launch(se_corpus, tmp_path / "resumed", *steps)
    whole = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["loss"] for r in whole[2:]] == [r["loss"] for r in resumed]
    pipe = SpeechEnhancementPipeline.from_pretrained(tmp_path / "whole" / "final" / "ema")
    fitted = SpeechEnhancementPipeline.from_pretrained(tmp_path / "resumed" / "final" / "raw").latent_normalizer
    assert pipe.latent_normalizer is not None and torch.equal(pipe.latent_normalizer.mean, fitted.mean)
    assert not torch.allclose(fitted.std, torch.ones_like(fitted.std))  # fitted, not the identity
    noisy = load_audio(min((Path(se_corpus.test).parent / "noisy").iterdir()))[None]
    out = pipe(noisy, num_inference_steps=2, seed=0)
    assert out.shape == noisy.shape and bool(torch.isfinite(out).all()) and float(out.abs().max()) > 0


@pytest.mark.slow
def test_tiny_experiment_improves_on_the_noisy_input(se_corpus, tmp_path):
    run = tmp_path / "denoiser"
    se_launch(se_corpus, run, f"model.tokenizer={DEMO_TOKENIZER}", "model.overrides.embed_dim=128",
              "model.overrides.num_heads=4", "data.max_seconds=1.5", "data.mixing.snr_db=[-5,10]",
              "train.max_steps=150", "train.log_every=10", "train.checkpoint_every=150", "optim.lr=1e-3")
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert losses[-1] < 0.6 * losses[0]
    pipe = SpeechEnhancementPipeline.from_pretrained(run / "final" / "ema")
    rows = []
    for record in read_manifest(se_corpus.test):
        clean, noisy = load_audio(record["audio"]), load_audio(record["noisy"])
        with torch.no_grad():
            z_clean = pipe.tokenizer.encode(clean[None]).latents
            z_noisy = pipe.tokenizer.encode(noisy[None]).latents
            enc = pipe.tokenizer.encode(noisy[None])
            z_enh = pipe.enhance_latents(enc.latents, enc.mask)
        masked = pipe(noisy[None], output="mask")[0].numpy()
        rows.append({"latent_noisy": float((z_noisy - z_clean).pow(2).mean()),
                     "latent_enhanced": float((z_enh - z_clean).pow(2).mean()),
                     "sisdr_noisy": si_sdr(clean.numpy(), noisy.numpy()), "sisdr_mask": si_sdr(clean.numpy(), masked),
                     "pesq_noisy": pesq_wb(clean.numpy(), noisy.numpy()), "pesq_mask": pesq_wb(clean.numpy(), masked)})
    mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    # measured: latent MSE 6.90 -> 1.06, SI-SDR 1.85 -> 3.09 dB, PESQ 1.047 -> 1.081
    assert mean["latent_enhanced"] < 0.5 * mean["latent_noisy"]
    assert mean["sisdr_mask"] > mean["sisdr_noisy"] + 0.5
    assert mean["pesq_mask"] > mean["pesq_noisy"]

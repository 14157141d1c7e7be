"""The ``enhance`` console script on a tiny saved SE pipeline: files, folders, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from dashflow.eval.enhancement import pesq_wb, si_sdr
from dashflow.generation.cli import enhance as enhance_cli
from dashflow.generation.cli.enhance import enhance_main
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.audio import load_audio
from dashflow.mixing import mix_at_snr
from tests.conftest import SENTENCES, noise, tone, write_wav
from tests.generation.training.test_speech_enhancement import coloured_noise, speech

FAST = ["--quiet", "--device", "cpu", "--chunk-seconds", "2", "--overlap-seconds", "0.4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tokenizer = DashengTokenizer.from_preset("tiny")
    enhancer = LatentDenoiser.from_preset("tiny", latent_dim=tokenizer.latent_dim)
    folder = tmp_path_factory.mktemp("se") / "pipeline"
    SpeechEnhancementPipeline(tokenizer, enhancer).save_pretrained(folder)
    return folder


def run(argv, capfd, checkpoint: Path) -> tuple[int, list[str], str]:
    code = enhance_main([*FAST, "--checkpoint", str(checkpoint), *map(str, argv)])
    captured = capfd.readouterr()
    return code, captured.err.splitlines(), captured.out


@pytest.mark.parametrize("mode", ["resynthesis", "mask"])
def test_file_keeps_rate_and_length(tmp_path, capfd, checkpoint, mode):
    stereo = np.stack([tone(300, 5.3, sr=22050), noise(5.3, sr=22050)], axis=1)
    source = tmp_path / "noisy.wav"
    sf.write(str(source), stereo, 22050)
    code, err, out = run([source, "-o", tmp_path / "clean.wav", "--mode", mode], capfd, checkpoint)
    assert code == 0 and err == []
    info = sf.info(str(tmp_path / "clean.wav"))
    assert (info.samplerate, info.frames, info.channels) == (22050, stereo.shape[0], 1)
    assert out.strip() == f"wrote {tmp_path / 'clean.wav'} (5.30 s at 22050 Hz) and its settings clean.json"
    sidecar = json.loads((tmp_path / "clean.json").read_text())
    assert sidecar["input"] == str(source) and sidecar["mode"] == mode and sidecar["enhancer"] == "denoiser"
    assert sidecar["checkpoint"] == str(checkpoint.resolve()) and sidecar["seconds"] == pytest.approx(5.3)
    assert "steps" not in sidecar  # the denoiser has no sampling settings


def test_default_output_name(tmp_path, capfd, checkpoint):
    source = write_wav(tmp_path / "talk.wav", tone(200, 1.0))
    assert run([source], capfd, checkpoint)[0] == 0
    assert (tmp_path / "talk_enhanced.wav").is_file()


def test_folder_skips_bad_files_and_writes_the_rest(tmp_path, capfd, checkpoint):
    write_wav(tmp_path / "in" / "a.wav", tone(200, 1.5))
    write_wav(tmp_path / "in" / "sub" / "b.flac", noise(1.2))
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    code, err, out = run([tmp_path / "in", "-o", tmp_path / "out"], capfd, checkpoint)
    assert code == 2 and out == ""
    assert len(err) == 2 and err[0].startswith("warning: skipped ") and "broken.wav" in err[0]
    assert err[1] == f"error: 1 of 3 files failed (see warnings above); the other 2 are in {tmp_path / 'out'}"
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.wav")) == \
        ["a.wav", "sub/b.wav"]


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.wav"], "no such file or folder"),
    (["in.wav", "-o", "out.mp3"], "cannot write audio with suffix '.mp3'"),
    (["in.wav", "-o", "in.wav"], "is an input file"),
    (["in.wav", "--chunk-seconds", "1", "--overlap-seconds", "0.5"], "more than twice"),
    (["in.wav", "--steps", "0"], "--steps must be in 1..1000"),
    (["in.wav", "--steps", "5000"], "--steps must be in 1..1000"),
    (["in.wav", "--samples", "0"], "--samples must be at least 1"),
    (["in.wav", "--cfg", "0.5"], "--cfg must be at least 1"),
    (["empty.wav"], "empty"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capfd, checkpoint, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    write_wav(tmp_path / "in.wav", tone(200, 1.0))
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err, _ = run(argv, capfd, checkpoint)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("checkpoint", [[], ["--checkpoint", str(enhance_cli.DEMO_ENHANCER.parent / "pipeline")]],
                         ids=["bundled-enhancer", "bundled-model-se-task"])
def test_bundled_enhancers_clean_a_noisy_utterance(tmp_path, capfd, checkpoint):
    """``enhance noisy.wav -o clean.wav`` with the bundled enhancer (no checkpoint; measured +4.7 dB)
    and with the bundled three-task model's se task (+3.5 dB) raises SI-SDR by over 1 dB, and PESQ,
    of TTS speech (a harmonic stand-in without TTS) in pink noise at 0 dB."""
    assert (enhance_cli.DEMO_ENHANCER / "MODEL_CARD.md").is_file()
    clean = load_audio(speech(SENTENCES[2], tmp_path / "clean.wav", "awb", 3)).numpy()
    pink = coloured_noise(len(clean) / 16000 + 0.1, 1.0, seed=3)[:len(clean)]
    noisy = mix_at_snr(torch.from_numpy(clean), torch.from_numpy(pink), 0.0).numpy()
    write_wav(tmp_path / "noisy.wav", noisy)
    assert enhance_main([str(tmp_path / "noisy.wav"), "-o", str(tmp_path / "out.wav"), "--quiet", *checkpoint]) == 0
    out, sr = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert sr == 16000 and out.shape == clean.shape
    assert si_sdr(clean, out) > si_sdr(clean, noisy) + 1.0
    assert pesq_wb(clean, out) > pesq_wb(clean, noisy)
    assert "wrote" in capfd.readouterr().out


def test_missing_bundled_enhancer_asks_for_a_checkpoint(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(enhance_cli, "DEMO_ENHANCER", tmp_path / "demo" / "enhancer")
    write_wav(tmp_path / "in.wav", tone(200, 1.0))
    assert enhance_main([str(tmp_path / "in.wav"), "--quiet"]) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and "demo enhancer is missing" in err[0] and "--checkpoint" in err[0]

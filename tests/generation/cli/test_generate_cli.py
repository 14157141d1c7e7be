"""The ``generate`` console script end to end on a tiny saved pipeline, and its one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from dashflow.eval.events import count_events
from dashflow.generation.cli import generate as cli
from dashflow.generation.cli.generate import generate_main
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines.components import weights_on_disk

from tests.generation.pipelines.test_pipelines import MINILM_DIM, build_tiny_pipeline

SIDECAR_KEYS = {
    "output", "prompt", "prompt_encoded", "duration_requested", "duration", "num_samples", "sample_rate",
    "steps", "cfg", "sway", "seed", "batch_index", "checkpoint", "task", "model_weights_hash",
    "tokenizer_hash", "text_encoder", "text_encoder_hash", "prompt_template", "instruction", "device",
    "dtype", "dashflow_version", "compile", "load_seconds", "elapsed_seconds", "negative_prompt", "input_audio",
    "input_audio_sha256", "steering", "window", "window_overlap", "lora"}
FAST = ["--steps", "2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "pipeline"
    build_tiny_pipeline().save_pretrained(folder)
    return folder


def run(argv, capfd) -> tuple[int, list[str]]:
    code = generate_main([str(a) for a in argv])
    return code, capfd.readouterr().err.splitlines()


def test_generate_writes_the_wav_and_a_sidecar_with_every_setting(checkpoint, tmp_path, capfd):
    out = tmp_path / "dog.wav"
    code, err = run(["a dog barking", "-o", out, "--checkpoint", checkpoint, "--duration", 1.0,
                     "--seed", 5, *FAST], capfd)
    assert code == 0 and err == []
    audio, rate = sf.read(out)
    assert rate == 16000 and audio.shape == (16000,) and np.abs(audio).max() > 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert set(side) == SIDECAR_KEYS
    pipe = build_tiny_pipeline()
    assert side["prompt"] == "a dog barking" and side["prompt_encoded"] == "<|caption|> a dog barking"
    assert (side["duration_requested"], side["duration"], side["num_samples"]) == (1.0, 1.0, 16000)
    assert (side["steps"], side["cfg"], side["sway"], side["seed"]) == (2, 5.0, -1.0, 5)
    assert side["checkpoint"] == str(checkpoint) and side["task"] == "tta"
    assert side["model_weights_hash"] == pipe.transformer.weights_hash()
    assert side["tokenizer_hash"] == pipe.tokenizer.weights_hash()
    assert side["text_encoder"] == "minilm" and side["text_encoder_hash"] == pipe.text_encoder.weights_hash()
    assert (side["device"], side["dtype"]) == ("cpu", "float32") and side["dashflow_version"]
    assert side["elapsed_seconds"] > 0 and side["load_seconds"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dog.json", "dog.wav"]  # no temp files left

    again = tmp_path / "again.wav"
    assert run(["a dog barking", "-o", again, "--checkpoint", checkpoint, "--duration", 1.0,
                "--seed", 5, *FAST], capfd)[0] == 0
    np.testing.assert_array_equal(sf.read(again)[0], audio)  # same seed, same audio


def test_batch_file_writes_indexed_files_with_per_prompt_seeds(checkpoint, tmp_path, capfd):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain on a tin roof\n\n# a comment\nA Bell, ringing!\n<|caption|> wind <|env|> a forest\n")
    out = tmp_path / "clips"
    code, err = run(["--batch", prompts, "-o", out, "--checkpoint", checkpoint, "--duration", 0.4,
                     "--seed", 7, "--batch-size", 2, "--task", "ttm", *FAST], capfd)
    assert code == 0 and err == []
    names = ["000_rain-on-a-tin-roof", "001_a-bell-ringing", "002_wind-a-forest"]
    assert sorted(p.name for p in out.iterdir()) == sorted(n + ext for n in names for ext in (".json", ".wav"))
    sides = [json.loads((out / f"{n}.json").read_text()) for n in names]
    assert [s["seed"] for s in sides] == [7, 8, 9] and [s["batch_index"] for s in sides] == [0, 1, 2]
    assert sides[0]["prompt_encoded"] == "<|caption|> rain on a tin roof <|music|> rain on a tin roof"
    assert sides[2]["prompt_encoded"] == "<|caption|> wind <|env|> a forest"  # structured: as written
    assert all(s["task"] == "ttm" and s["num_samples"] == 6400 for s in sides)

    single = tmp_path / "single.wav"  # prompt 2 alone with its seed: same audio as in the batch
    assert run(["<|caption|> wind <|env|> a forest", "-o", single, "--checkpoint", checkpoint,
                "--duration", 0.4, "--seed", 9, "--task", "ttm", *FAST], capfd)[0] == 0
    np.testing.assert_allclose(sf.read(single)[0], sf.read(out / f"{names[2]}.wav")[0], atol=1e-4)


def test_tokenizer_and_text_encoder_can_be_swapped_in(checkpoint, tmp_path, capfd):
    common = ["--checkpoint", checkpoint, "--duration", 0.4, "--seed", 1, *FAST]
    assert run(["a dog", "-o", tmp_path / "stored.wav", *common], capfd)[0] == 0
    swapped = tmp_path / "swapped.wav"  # the same components, given explicitly
    code, err = run(["a dog", "-o", swapped, "--tokenizer", checkpoint / "tokenizer", "--text-encoder", "minilm",
                     *common], capfd)
    assert code == 0 and err == []
    np.testing.assert_array_equal(sf.read(swapped)[0], sf.read(tmp_path / "stored.wav")[0])
    code, err = run(["a dog", "-o", swapped, "--text-encoder", tmp_path / "none", *common], capfd)
    assert code == 2 and len(err) == 1 and "is neither a known text encoder nor an existing folder" in err[0]


@pytest.fixture(scope="module")
def bad_checkpoints(checkpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "not_a_pipeline").mkdir()
    (root / "not_a_pipeline" / "notes.txt").write_text("hello")
    shutil.copytree(checkpoint, root / "mismatched")
    shutil.rmtree(root / "mismatched" / "transformer")
    AudioGenModel.from_preset("tiny", text_embed_dim=MINILM_DIM).save_pretrained(root / "mismatched" / "transformer")
    shutil.copytree(checkpoint, root / "corrupt")
    (root / "corrupt" / "tokenizer" / "model.safetensors").write_bytes(b"not safetensors at all")
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize("args, message", [
    (["", "--duration", "1"], "prompt is empty"),
    (["   ", "--duration", "1"], "prompt is empty"),
    (["a dog", "--duration", "-1"], "--duration must be a positive number of seconds"),
    (["a dog", "--duration", "61"], "duration 61.0 s is outside (0, 60] s"),
    (["a dog", "--steps", "0"], "--steps must be in 1..1000"),
    (["a dog", "--steps", "10000"], "--steps must be in 1..1000"),
    (["a dog", "--cfg", "0.5"], "--cfg must be at least 1"),
    (["a dog", "--checkpoint", "{tmp}/nowhere"], "pipeline folder not found"),
    (["a dog", "--checkpoint", "{not_a_pipeline}"], "not a pipeline folder (no model_index.json)"),
    (["a dog", "--checkpoint", "{mismatched}"], "the model generates 16-d latents but the tokenizer decodes 64-d"),
    (["a dog", "--checkpoint", "{corrupt}"], "unreadable weights"),
])
def test_errors_are_one_line_exit_2_and_leave_no_file(args, message, checkpoint, bad_checkpoints, tmp_path, capfd):
    names = {"tmp": tmp_path, **bad_checkpoints}
    out = tmp_path / "out" / "clip.wav"
    argv = [a.format(**names) for a in args]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(checkpoint)]
    code, err = run([*FAST, *argv, "-o", out], capfd)  # later options win
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_bundled_demo_pipeline_generates_a_dog_with_no_checkpoint(tmp_path, capfd):
    """README command 1 with no other flag: the bundled demo (all bundled fp16 safetensors within
    the 40 MB budget) gives at least 2 s of audio with several barks."""
    weights = weights_on_disk(cli.DEMO_PIPELINE.parent)
    assert 0 < weights <= 40 * 2 ** 20
    assert (cli.DEMO_PIPELINE / "MODEL_CARD.md").is_file() and (cli.DEMO_PIPELINE / "ATTRIBUTION.csv").is_file()
    out = tmp_path / "out.wav"
    assert generate_main(["a dog barking", "-o", str(out), "--seed", "0", "--quiet"]) == 0
    wav, sr = sf.read(out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sr == 16000 and sidecar["checkpoint"] == str(cli.DEMO_PIPELINE) and sidecar["task"] == "tta"
    assert 2.0 <= len(wav) / sr <= 60 and np.isfinite(wav).all() and np.abs(wav).max() > 1e-3
    assert count_events(wav) >= 2
    assert "wrote" in capfd.readouterr().out


def test_bundled_demo_answers_a_prompt_outside_its_vocabulary(tmp_path):
    out = tmp_path / "odd.wav"
    assert generate_main(["a quantum computer humming in a cathedral", "-o", str(out), "--seed", "1",
                          "--steps", "4", "--quiet"]) == 0
    wav, sr = sf.read(out)
    assert len(wav) / sr > 0.5 and np.isfinite(wav).all()
    assert json.loads(out.with_suffix(".json").read_text())["prompt"].startswith("a quantum computer")


def test_missing_bundled_demo_asks_for_a_checkpoint(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(cli, "DEMO_PIPELINE", tmp_path / "demo" / "pipeline")
    code, err = run(["a dog", "-o", tmp_path / "a.wav"], capfd)
    assert code == 2 and len(err) == 1 and "demo pipeline is missing" in err[0] and "--checkpoint" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_argument_combinations(tmp_path, capfd):
    assert run(["--quiet"], capfd) == (2, ["error: give one prompt, or --batch FILE with one prompt per line"])
    code, err = run(["a dog", "-o", tmp_path / "a.mp3"], capfd)
    assert code == 2 and err == [f"error: {tmp_path / 'a.mp3'}: cannot write audio with suffix '.mp3'; use .wav, .flac, .ogg"]
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    code, err = run(["--batch", tmp_path / "empty.txt"], capfd)
    assert code == 2 and len(err) == 1 and "no prompts" in err[0]
    assert cli.slug("<|caption|> A Dog,  barking!") == "a-dog-barking" and cli.slug("!!!") == "prompt"


def test_console_script_reports_one_line(tmp_path):
    script = Path(sys.executable).with_name("generate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dashflow.generation.cli.generate"]
    done = subprocess.run([*command, "a dog", "-o", str(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "none")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.splitlines() == [f"error: {tmp_path / 'none'}: pipeline folder not found"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A 2 s tone, a silent clip, a 61 s clip and a file that is no audio."""
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(32000) / 16000
    sf.write(root / "tone.wav", 0.3 * np.sin(2 * np.pi * 330 * t), 16000)
    sf.write(root / "silent.wav", np.zeros(16000), 16000)
    sf.write(root / "long.wav", 0.1 * np.ones(61 * 16000), 16000)
    (root / "text.wav").write_text("not audio")
    return {p.stem: p for p in root.iterdir()}


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("flags, check", [
    (["--negative", "wind", "--duration", "0.4"],
     lambda side: side["negative_prompt"] == "wind" and side["steering"] is None and side["input_audio"] is None),
    (["--init-audio", "{tone}", "--strength", "0.6"],
     lambda side: side["steering"]["mode"] == "audio_to_audio" and side["steering"]["strength"] == 0.6
     and side["num_samples"] == 32000),
    (["--inpaint", "{tone}", "--region", "0.5:1", "--region", "1.5:1.75"],
     lambda side: side["steering"]["regions"] == [[0.5, 1.0], [1.5, 1.75]] and side["num_samples"] == 32000),
    (["--continue", "{tone}", "--duration", "0.4"],
     lambda side: side["steering"]["added_seconds"] == 0.4 and side["num_samples"] == 32000 + 6400),
    (["--duration", "2", "--window", "1", "--window-overlap", "0.4"],
     lambda side: side["window"] == 1.0 and side["window_overlap"] == 0.4 and side["num_samples"] == 32000),
])
def test_steering_flags_reach_the_pipeline_and_the_sidecar(flags, check, checkpoint, clips, tmp_path, capfd):
    out = tmp_path / "out.wav"
    argv = [a.format(**clips) for a in flags]
    code, err = run(["a bell", "-o", out, "--checkpoint", checkpoint, "--seed", 2, *FAST, *argv], capfd)
    assert code == 0 and err == []
    side = json.loads(out.with_suffix(".json").read_text())
    assert set(side) == SIDECAR_KEYS and check(side), side
    assert sf.read(out)[0].shape == (side["num_samples"],)
    if side["input_audio"] is not None:
        assert side["input_audio"] == str(clips["tone"].resolve())
        assert side["input_audio_sha256"] == sha256(clips["tone"]) and len(side["steering"]["audio_sha256"]) == 64


@pytest.mark.parametrize("args, message", [
    (["--init-audio", "{tone}", "--strength", "0"], "strength must be in (0, 1]"),
    (["--init-audio", "{tone}", "--strength", "1.5"], "strength must be in (0, 1]"),
    (["--strength", "0.5"], "--strength applies to --init-audio"),
    (["--inpaint", "{tone}", "--region", "1.5:2.5"], "inpaint region 1.5:2.5 s lies outside the clip (0:2.000 s)"),
    (["--inpaint", "{tone}", "--region", "1:1"], "inpaint region 1:1 s is empty"),
    (["--inpaint", "{tone}", "--region", "0.2:1", "--region", "0.5:1.5"], "overlap"),
    (["--inpaint", "{tone}", "--region", "one:two"], "--region 'one:two' is not START:END"),
    (["--inpaint", "{tone}"], "--inpaint FILE needs at least one --region"),
    (["--init-audio", "{text}"], "cannot read audio"),
    (["--init-audio", "{silent}"], "is silent"),
    (["--init-audio", "{long}"], "longer than the 60 s limit"),
    (["--init-audio", "{tmp}/none.wav"], "no such audio file"),
    (["--init-audio", "{tone}", "--continue", "{tone}"], "use one of --init-audio, --inpaint, --continue"),
    (["--init-audio", "{tone}", "--duration", "1"], "--init-audio sets the clip's length: drop --duration"),
    (["--continue", "{tone}"], "--continue needs --duration"),
    (["--negative", "wind", "--cfg", "1"], "--negative needs --cfg > 1"),
    (["--duration", "70"], "pass window_length_in_s"),
    (["--duration", "5", "--window", "1", "--window-overlap", "2"], "window_overlap_in_s"),
])
def test_steering_errors_are_one_line_and_leave_no_file(args, message, checkpoint, clips, tmp_path, capfd):
    out = tmp_path / "out" / "clip.wav"
    argv = [a.format(tmp=tmp_path, **clips) for a in args]
    code, err = run(["a dog", "--checkpoint", checkpoint, *FAST, *argv, "-o", out], capfd)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()

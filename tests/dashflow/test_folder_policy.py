"""One policy for every command over many inputs when one of them cannot be read: the good ones are
written, the bad one is named on one ``warning:`` line, and one closing ``error:`` line counts the
failures, exit status 2. The bad input is a garbage MP3, so no decoder note may reach stderr either."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from dashflow.generation.cli.enhance import enhance_main
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.cli import main as dashflow_main
from tests.conftest import chirp, tone, write_wav
from tests.dashflow.test_audio import garbage_mp3

BAR = re.compile(r"\d+/\d+ \[\d")  # a tqdm progress bar redraw


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Tiny models, a folder ``clips`` of two good files and a garbage MP3, a reference folder and a manifest."""
    root = tmp_path_factory.mktemp("folder_policy")
    torch.manual_seed(0)
    tokenizer = DashengTokenizer.from_preset("tiny")
    tokenizer.save_pretrained(root / "tokenizer")
    SpeechEnhancementPipeline(tokenizer, LatentDenoiser.from_preset("tiny", latent_dim=tokenizer.latent_dim)
                              ).save_pretrained(root / "enhancer")
    clips = root / "clips"
    write_wav(clips / "a.wav", tone(330, 1.0))
    write_wav(clips / "sub" / "b.flac", chirp(100, 4000, 0.7))
    garbage_mp3(clips / "bad.mp3")
    for name in ("a", "b", "bad"):
        write_wav(root / "reference" / f"{name}.wav", tone(330, 1.0))
    (root / "manifest.jsonl").write_text("".join(
        json.dumps({"audio_id": path.stem, "audio": str(path), "caption": "a tone"}) + "\n"
        for path in (clips / "a.wav", clips / "sub" / "b.flac", clips / "bad.mp3")))
    return root


def stderr_lines(err: str) -> list[str]:
    """stderr as lines, progress-bar redraws left out."""
    lines = (line.rsplit("\r", 1)[-1] for line in err.split("\n"))
    return [line for line in lines if line.strip() and not BAR.search(line)]


def reconstruct(w: Path, out: Path) -> tuple[int, str]:
    code = dashflow_main(["reconstruct", str(w / "clips"), "-o", str(out), "--checkpoint", str(w / "tokenizer")])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.wav", "sub", "sub/b.wav"]
    return code, str(out)


def enhance(w: Path, out: Path) -> tuple[int, str]:
    code = enhance_main([str(w / "clips"), "-o", str(out), "--checkpoint", str(w / "enhancer"), "--device", "cpu",
                         "--chunk-seconds", "2", "--overlap-seconds", "0.4"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == ["a.json", "a.wav",
                                                                             "sub/b.json", "sub/b.wav"]
    return code, str(out)


def evaluate(w: Path, out: Path) -> tuple[int, str]:
    code = dashflow_main(["eval", "--generated", str(w / "clips"), "--reference", str(w / "reference"),
                          "--metrics", "mel", "--out", str(out), "--no-cache"])
    report = json.loads((out / "report.json").read_text())
    assert report["runs"][0]["metrics"]["mel"]["n_clips"] == 2
    return code, f"the report in {out}"


def cache_latents(w: Path, out: Path) -> tuple[int, str]:
    code = dashflow_main(["cache-latents", "--manifest", str(w / "manifest.jsonl"), "--tokenizer",
                          str(w / "tokenizer"), "--out", str(out), "--num-workers", "0", "--device", "cpu"])
    [folder] = [p for p in out.iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["a.safetensors", "b.safetensors"]
    return code, str(folder)


def prepare(w: Path, out: Path) -> tuple[int, str]:
    manifest = out / "m.jsonl"
    code = dashflow_main(["prepare", "folder", str(w / "clips"), "-o", str(manifest)])
    assert [json.loads(line)["audio_id"] for line in manifest.read_text().splitlines()] == ["a", "sub/b"]
    return code, str(manifest)


@pytest.mark.parametrize("command", [reconstruct, enhance, evaluate, cache_latents, prepare],
                         ids=lambda command: command.__name__)
def test_one_bad_input_is_a_warning_then_one_counting_error(command, work, tmp_path, capfd):
    capfd.readouterr()
    code, where = command(work, tmp_path / "out")
    lines = stderr_lines(capfd.readouterr().err)
    assert code == 2, lines
    total = 6 if command is evaluate else 3  # eval also reads the three reference clips
    assert len(lines) == 2 and lines[0].startswith("warning: ") and "bad" in lines[0], lines
    assert lines[1] == f"error: 1 of {total} files failed (see warnings above); the other {total - 1} are in {where}"

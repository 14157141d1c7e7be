"""Every console script over a table of bad inputs: exit status 2, exactly one ``error:`` line on
stderr (commands over many items may name each skipped item on a ``warning:`` line first), no
traceback, and no file that existed before is changed (hashed before and after).

The scripts run in-process through the functions their console entry points call
(``generate_main``, ``enhance_main``, ``dashflow.cli.main``); one subprocess run per script
checks the console wrapper itself.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from dashflow.generation.cli.enhance import enhance_main
from dashflow.generation.cli.generate import generate_main
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.cli import main as dashflow_main
from tests.conftest import tone, write_wav
from tests.dashflow.test_audio import garbage_mp3
from tests.generation.pipelines.test_pipelines import build_tiny_pipeline

SCRIPTS = {"generate": generate_main, "enhance": enhance_main, "dashflow": dashflow_main}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder of models and good and bad inputs the cases point at."""
    root = tmp_path_factory.mktemp("bad_inputs")
    build_tiny_pipeline().save_pretrained(root / "pipeline")
    torch.manual_seed(0)
    tokenizer = DashengTokenizer.from_preset("tiny")
    tokenizer.save_pretrained(root / "tokenizer")
    SpeechEnhancementPipeline(tokenizer, LatentDenoiser.from_preset("tiny", latent_dim=tokenizer.latent_dim)
                              ).save_pretrained(root / "enhancer")
    write_wav(root / "good.wav", tone(440, 1.0))
    sf.write(str(root / "empty.wav"), np.zeros(0, np.float32), 16000)
    (root / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    sf.write(str(root / "nan.wav"), np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(str(root / "huge.wav"), np.zeros(3700, np.float32), 1)  # 3700 s at 1 Hz: over the hour
    (root / "clash").mkdir()
    write_wav(root / "clash" / "take.wav", tone(300, 0.5))
    sf.write(str(root / "clash" / "take.flac"), tone(500, 0.5), 16000)
    (root / "songs").mkdir()
    write_wav(root / "songs" / "a.wav", tone(330, 0.5))
    (root / "afile").write_text("not a folder")
    (root / "prompts.txt").write_text("a dog barking\n")
    (root / "manifest.jsonl").write_text('{"audio_id": "a", "audio": "good.wav", "caption": "a tone"}\n')
    (root / "huge.jsonl").write_text('{"audio_id": "h", "audio": "huge.wav", "caption": "an hour"}\n')
    return root


# (script, argv with {w} for the work folder, a fragment of the one error line)
CASES = {
    # generate: prompts, settings, outputs, checkpoints, devices
    "generate empty prompt": ("generate", ["", "-o", "{w}/o.wav"], "prompt is empty"),
    "generate huge prompt": ("generate", ["x" * 5000, "-o", "{w}/o.wav"], "the limit is 2000"),
    "generate missing batch file": ("generate", ["--batch", "{w}/nope.txt"], "cannot read the prompts file"),
    "generate huge duration": ("generate", ["a dog", "--duration", "1e6", "-o", "{w}/o.wav"], "outside (0, 60] s"),
    "generate NaN duration": ("generate", ["a dog", "--duration", "nan", "-o", "{w}/o.wav"], "--duration must be"),
    "generate 10000 steps": ("generate", ["a dog", "--steps", "10000", "-o", "{w}/o.wav"], "--steps must be in 1..1000"),
    "generate diverging CFG": ("generate", ["a dog", "--cfg", "1e30", "--duration", "1", "-o", "{w}/o.wav"],
                               "sampling diverged"),
    "generate parent is a file": ("generate", ["a dog", "-o", "{w}/afile/o.wav"], "is a file, not a folder"),
    "generate unknown suffix": ("generate", ["a dog", "-o", "{w}/o.mp3"], "cannot write audio with suffix"),
    "generate output is a folder": ("generate", ["a dog", "-o", "{w}/songs"], "is a folder"),
    "generate batch into a file": ("generate", ["--batch", "{w}/prompts.txt", "-o", "{w}/afile"], "not a folder"),
    "generate missing checkpoint": ("generate", ["a dog", "--checkpoint", "{w}/nowhere", "-o", "{w}/o.wav"],
                                    "pipeline folder not found"),
    "generate hub-like typo": ("generate", ["a dog", "--checkpoint", "songs/pipeline", "-o", "{w}/o.wav"],
                               "not found"),
    "generate tokenizer as checkpoint": ("generate", ["a dog", "--checkpoint", "{w}/tokenizer", "-o", "{w}/o.wav"],
                                         "model_index.json"),
    "generate absent mps": ("generate", ["a dog", "--device", "mps", "-o", "{w}/o.wav"], "MPS is not available"),
    "generate absent cuda": ("generate", ["a dog", "--device", "cuda:1", "-o", "{w}/o.wav"], "CUDA"),
    # enhance: audio inputs and outputs
    "enhance missing input": ("enhance", ["{w}/nope.wav"], "no such file or folder"),
    "enhance empty audio": ("enhance", ["{w}/empty.wav", "-o", "{w}/o.wav"], "empty"),
    "enhance corrupt audio": ("enhance", ["{w}/corrupt.wav", "-o", "{w}/o.wav"], "cannot read audio"),
    "enhance NaN audio": ("enhance", ["{w}/nan.wav", "-o", "{w}/o.wav"], "NaN"),
    "enhance in place": ("enhance", ["{w}/good.wav", "-o", "{w}/good.wav"], "is an input file"),
    "enhance folder into itself": ("enhance", ["{w}/songs", "-o", "{w}/songs"], "is the input folder"),
    "enhance name clash": ("enhance", ["{w}/clash", "-o", "{w}/clash_out"], "would both write"),
    "enhance unknown suffix": ("enhance", ["{w}/good.wav", "-o", "{w}/o.mp4"], "cannot write audio with suffix"),
    "enhance absent mps": ("enhance", ["{w}/good.wav", "-o", "{w}/o.wav", "--device", "mps"], "MPS"),
    # dashflow reconstruct
    "reconstruct in place": ("dashflow", ["reconstruct", "{w}/good.wav", "-o", "{w}/good.wav"], "is an input file"),
    "reconstruct folder into itself": ("dashflow", ["reconstruct", "{w}/songs", "-o", "{w}/songs"],
                                       "is the input folder"),
    "reconstruct name clash": ("dashflow", ["reconstruct", "{w}/clash", "-o", "{w}/clash_out"], "would both write"),
    "reconstruct corrupt": ("dashflow", ["reconstruct", "{w}/corrupt.wav", "-o", "{w}/o.wav"], "cannot read audio"),
    "reconstruct missing checkpoint": ("dashflow", ["reconstruct", "{w}/good.wav", "-o", "{w}/o.wav",
                                                    "--checkpoint", "{w}/nowhere"], "not found"),
    "reconstruct pipeline as tokenizer": ("dashflow", ["reconstruct", "{w}/good.wav", "-o", "{w}/o.wav",
                                                       "--checkpoint", "{w}/pipeline"], "config.json"),
    # dashflow eval / train-classifier / cache-latents / prepare
    "eval out is a file": ("dashflow", ["eval", "--generated", "{w}/songs", "--metrics", "mel", "--reference",
                                        "{w}/songs", "--out", "{w}/afile"], "exists and is not a folder"),
    "eval missing generated": ("dashflow", ["eval", "--generated", "{w}/nope", "--metrics", "mel", "--reference",
                                            "{w}/songs", "--out", "{w}/report"], "nope: not a folder"),
    "eval unknown metric": ("dashflow", ["eval", "--generated", "{w}/songs", "--metrics", "bogus",
                                         "--out", "{w}/report"], "bogus"),
    "train-classifier out is a file": ("dashflow", ["train-classifier", "--manifest", "{w}/manifest.jsonl",
                                                    "--out", "{w}/afile"], "exists and is not a folder"),
    "cache-latents missing manifest": ("dashflow", ["cache-latents", "--manifest", "{w}/nope.jsonl", "--tokenizer",
                                                    "{w}/tokenizer", "--out", "{w}/cache"], "manifest not found"),
    "cache-latents huge file": ("dashflow", ["cache-latents", "--manifest", "{w}/huge.jsonl", "--tokenizer",
                                             "{w}/tokenizer", "--out", "{w}/cache"],
                                "1 of 1 files failed"),  # "3700 s is longer than" is on the warning line
    "cache-latents out is a file": ("dashflow", ["cache-latents", "--manifest", "{w}/manifest.jsonl", "--tokenizer",
                                                 "{w}/tokenizer", "--out", "{w}/afile"], "exists and is not a folder"),
    "prepare over its input": ("dashflow", ["prepare", "folder", "{w}/songs", "--captions", "{w}/manifest.jsonl",
                                            "-o", "{w}/manifest.jsonl"], "is an input file"),
    "prepare parent is a file": ("dashflow", ["prepare", "folder", "{w}/songs", "-o", "{w}/afile/m.jsonl"],
                                 "is a file, not a folder"),
}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_changes_no_file(case, work, capfd, monkeypatch):
    script, argv, fragment = CASES[case]
    monkeypatch.chdir(work)
    argv = [a.format(w=work) for a in argv]
    if script == "generate":
        argv = ["--steps", "2", "--quiet", "--checkpoint", str(work / "pipeline"), *argv]  # later options win
    if script == "enhance":
        argv += ["--checkpoint", str(work / "enhancer")]
    if argv[0] == "reconstruct" and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(work / "tokenizer")]
    before = snapshot(work)
    capfd.readouterr()
    code = SCRIPTS[script](argv)
    err = [line for line in capfd.readouterr().err.splitlines()  # a progress bar shows only on a busy machine
           if line.strip() and not line.startswith("warning: ") and "%|" not in line]
    assert code == 2, (case, err)
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], (case, err)
    after = snapshot(work)
    assert {name: after.get(name) for name in before} == before  # no file that existed was changed
    assert not [name for name in after if name.endswith((".wav", ".flac", ".ogg")) and name not in before]


@pytest.mark.parametrize("script, argv", [
    ("generate", ["", "-o", "o.wav"]),
    ("enhance", ["nope.wav"]),
    ("dashflow", ["reconstruct", "nope.wav", "-o", "o.wav"]),
])
def test_console_scripts_print_one_line_without_traceback(tmp_path, script, argv):
    done = subprocess.run([*console(script), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def console(script: str) -> list[str]:
    """The installed console script, else its module run by this interpreter."""
    path = Path(sys.executable).with_name(script)
    return [str(path)] if path.exists() else [sys.executable, "-m", {"generate": "dashflow.generation.cli.generate",
                                                                     "enhance": "dashflow.generation.cli.enhance",
                                                                     "dashflow": "dashflow.cli"}[script]]


@pytest.mark.parametrize("script", ["dashflow", "enhance"])
def test_garbage_mp3_is_one_line_without_decoder_notes(work, tmp_path, script):
    """mpg123 prints "Note: Illegal Audio-MPEG-Header ..." while probing such a file; the user sees our line only."""
    bad = garbage_mp3(tmp_path / "bad.mp3")
    argv = ([str(bad), "-o", str(tmp_path / "out.wav"), "--checkpoint", str(work / "enhancer")] if script == "enhance"
            else ["reconstruct", str(bad), "-o", str(tmp_path / "out.wav"), "--checkpoint", str(work / "tokenizer")])
    done = subprocess.run([*console(script), *argv], capture_output=True, text=True, timeout=300, check=False)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {bad}: cannot read audio ("), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp3"]


def test_an_unwritable_output_folder_is_refused_before_the_work(tmp_path, monkeypatch, capfd):
    """Root may write anywhere, so the permission is denied through os.access, as for a user."""
    import os

    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    code = generate_main(["a dog", "-o", str(locked / "o.wav"), "--quiet"])
    err = capfd.readouterr().err.splitlines()
    assert code == 2 and err == [f"error: -o {locked / 'o.wav'}: {locked} is not writable"]


def test_outputs_are_written_in_the_format_their_suffix_names(work, tmp_path, capfd):
    code = dashflow_main(["reconstruct", str(work / "good.wav"), "-o", str(tmp_path / "r.flac"),
                          "--checkpoint", str(work / "tokenizer")])
    assert code == 0 and sf.info(str(tmp_path / "r.flac")).format == "FLAC"
    code = generate_main(["a dog", "-o", str(tmp_path / "g.ogg"), "--duration", "1", "--steps", "2", "--quiet",
                          "--checkpoint", str(work / "pipeline")])
    assert code == 0 and sf.info(str(tmp_path / "g.ogg")).format == "OGG"

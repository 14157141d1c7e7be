"""Shared fixtures: synthetic and TTS audio written by the tests themselves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    """A sine tone [S] float32."""
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    """A linear chirp from f0 to f1 Hz [S] float32."""
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))).astype(np.float32)


def noise(seconds: float, sr: int = SR, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """White noise [S] float32."""
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def write_wav(path: Path, wav: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, sr)
    return path


SPEECH_FIXTURES = Path(__file__).parent / "data" / "speech"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A dog barks twice in the quiet evening.",
    "Please call Stella and ask her to bring these things.",
    "Six spoons of fresh snow peas and a big toy frog.",
    "We also need a small plastic snake for the kids.",
    "She can scoop these things into three red bags.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
)


def tts(text: str, path: Path, voice: str = "slt") -> Path | None:
    """Speak ``text`` into ``path`` at 16 kHz with flite; without flite, a committed flite recording
    of it (``tests/data/speech``, the SENTENCES in the four wideband voices), else espeak-ng; None
    if none of them can."""
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = SPEECH_FIXTURES / f"{voice}_{SENTENCES.index(text)}.flac" if text in SENTENCES else None
    if shutil.which("flite"):
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True,
                       capture_output=True)
    elif recorded is not None and recorded.is_file():
        wav, sr = sf.read(str(recorded), dtype="float32")
        sf.write(str(path), wav, sr, subtype="PCM_16")
    elif shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    else:
        return None
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A folder of 16 kHz clips: TTS speech (when flite/espeak-ng exist), tones, chirps, noise."""
    root = tmp_path_factory.mktemp("corpus")
    for i, text in enumerate(SENTENCES):
        tts(text, root / f"speech_{i}.wav", voice=("slt", "rms", "awb", "kal16")[i % 4])
    for i, f in enumerate((220.0, 330.0, 440.0, 660.0)):
        write_wav(root / f"tone_{i}.wav", tone(f, 2.0) + tone(2 * f, 2.0, amp=0.1))
        write_wav(root / f"chirp_{i}.wav", chirp(100 + 50 * i, 4000.0, 2.0))
        write_wav(root / f"noise_{i}.wav", noise(2.0, seed=i))
    return root


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def frame_codec_plugin(tmp_path_factory) -> dict[str, str]:
    """Install ``tests.generation.frame_codec.FrameCodec`` as a codec plugin the way a package
    would (a ``dashflow.codecs`` entry point in its dist-info), for this process and for
    subprocesses run with the returned environment."""
    import importlib
    import os
    import sys

    site = tmp_path_factory.mktemp("plugin_site")
    info = site / "dashflow_frame_codec-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dashflow-frame-codec\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dashflow.codecs]\nFrameCodec = tests.generation.frame_codec:FrameCodec\n")
    sys.path[:0] = [str(site), str(REPO)]
    importlib.invalidate_caches()
    path = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path}


def cpu_launch(recipe: str, *args: str) -> list[str]:
    """``accelerate launch`` of ``recipes/<recipe>`` as one CPU process, one thread (no GPU, no mixed precision)."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
            str(REPO / "recipes" / recipe), *args]


def kill_after_step(command: list[str], metrics: Path, step: int, log: Path, env: dict, cwd: Path,
                    timeout: float = 600) -> int:
    """Run a recipe ``command`` in its own process group, SIGKILL it (children too) once its
    ``metrics`` file logs ``step``; returns its exit status."""
    import json
    import os
    import signal
    import time

    def logged_step() -> int:
        try:
            lines = metrics.read_text().splitlines()
            return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)
        except (OSError, ValueError):  # not there yet, or a line being written
            return 0

    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None and logged_step() < step:
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


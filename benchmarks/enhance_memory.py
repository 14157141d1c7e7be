"""Peak memory and wall time of streaming enhancement (``stream_file``) against file length.

    python -m benchmarks.enhance_memory                                   # STFT stand-in, 1 and 10 min
    python -m benchmarks.enhance_memory --checkpoint SE_PIPELINE --device cuda
    python -m benchmarks.enhance_memory --enhancer mypkg.bench:make_enhancer --minutes 1 30

Writes noisy test files block by block to a temporary folder (16 kHz mono and 48 kHz stereo, each
``--minutes`` long), then enhances each in a fresh subprocess and reports its peak resident memory
(``VmHWM``, reset after the enhancer is built) against its resident memory before ``stream_file``,
and the wall time of ``stream_file``. Bounded memory: ``peak_rss_mib`` and ``rss_growth_mib``
stay flat as the file grows 10x. The enhancer comes from a factory
``module:function(checkpoint, device) -> callable([S] float32 tensor) -> [S]``; the default is
the SE pipeline of ``--checkpoint`` when given, else an identity stand-in that does an STFT round
trip on the device. One JSON line per file is printed and appended to
benchmarks/results/enhance_memory.jsonl.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.common import record

RESULTS = ROOT / "benchmarks" / "results" / "enhance_memory.jsonl"
FORMATS = ((16000, 1), (48000, 2))  # (sample rate, channels) of the test files
Enhance = Callable[[torch.Tensor], torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0], help="test file lengths")
    parser.add_argument("--enhancer", default=None, help="MODULE:FUNCTION factory (checkpoint, device) -> enhance "
                                                         "(default: the SE pipeline of --checkpoint, else the "
                                                         "STFT stand-in)")
    parser.add_argument("--checkpoint", default=None, help="speech-enhancement pipeline folder for the factory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=2, metavar=("SOURCE", "TARGET"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- enhancers -------------------------------------------------------------------------------------

def stft_stand_in(checkpoint: str | None, device: str) -> Enhance:
    """Identity through a 512-point Hann STFT / ISTFT round trip on ``device`` (no model)."""
    window = torch.hann_window(512, device=device)

    def enhance(chunk: torch.Tensor) -> torch.Tensor:
        x = chunk.to(device)
        spec = torch.stft(x, 512, 128, window=window, return_complex=True)
        return torch.istft(spec, 512, 128, window=window, length=x.shape[-1]).cpu()
    return enhance


def pipeline_enhancer(checkpoint: str | None, device: str) -> Enhance:
    """The saved SpeechEnhancementPipeline at ``checkpoint`` with ``enhance``'s default settings
    and chunk callback (output mode, steps, guidance, samples, seeds)."""
    from dashflow.generation.cli.enhance import build_parser, chunk_enhancer
    from dashflow.generation.pipelines.speech_enhancement import (
        SpeechEnhancementPipeline,
    )

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    pipe = SpeechEnhancementPipeline.from_pretrained(checkpoint, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return chunk_enhancer(pipe, build_parser().parse_args(["input.wav"]))


def load_factory(spec: str | None, checkpoint: str | None) -> Callable[[str | None, str], Enhance]:
    if spec is None:
        return pipeline_enhancer if checkpoint else stft_stand_in
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--enhancer {spec}: expected MODULE:FUNCTION")
    return getattr(importlib.import_module(module), name)


# --- measurement -------------------------------------------------------------------------------------

def write_test_file(path: Path, minutes: float, rate: int, channels: int, block_seconds: float = 10.0) -> None:
    """Noisy harmonic 'speech' (a vibrato tone with syllable-rate bursts) plus white noise, written block by block."""
    rng = np.random.default_rng(0)
    total, block = round(minutes * 60 * rate), round(block_seconds * rate)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for start in range(0, total, block):
            t = np.arange(start, min(start + block, total)) / rate
            envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
            voice = 0.2 * envelope * np.sin(2 * np.pi * (180 * t + 3 * np.sin(2 * np.pi * 5 * t)))
            noisy = voice[:, None] + 0.05 * rng.standard_normal((len(t), channels))
            f.write(noisy.astype(np.float32))


def rss_mib(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB.

    From /proc on Linux, where ``ru_maxrss`` would not do: it keeps the parent's peak across
    fork + exec. Elsewhere ``ru_maxrss`` for both (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(key + ":")) / 1024
    except (OSError, StopIteration):
        scale = 2 ** 20 if sys.platform == "darwin" else 2 ** 10
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def reset_peak_rss() -> None:
    """Start ``VmHWM`` afresh from the current RSS (Linux >= 4.0; a no-op elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def worker(args: argparse.Namespace) -> int:
    """In a fresh process: build the enhancer, enhance one file, print one JSON object."""
    from dashflow.audio_stream import stream_file

    source, target = args.worker
    enhance = load_factory(args.enhancer, args.checkpoint)(args.checkpoint, args.device)
    rss_before = rss_mib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    info = stream_file(enhance, source, target, chunk_seconds=args.chunk_seconds,
                        overlap_seconds=args.overlap_seconds)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    out = sf.info(target)
    peak = rss_mib("VmHWM")
    print(json.dumps({**info, "wall_s": round(wall, 3), "x_realtime": round(info["seconds"] / wall, 1),
                      "rss_before_mib": round(rss_before, 1), "peak_rss_mib": round(peak, 1),
                      "rss_growth_mib": round(peak - rss_before, 1), "threads": torch.get_num_threads(),
                      "output_matches": out.frames == info["frames"] and out.samplerate == info["sample_rate"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    common = {"benchmark": "enhance_memory", "enhancer": args.enhancer or ("pipeline" if args.checkpoint
                                                                         else "stft_stand_in"),
              "checkpoint": args.checkpoint, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
              else platform.processor() or platform.machine(),
              "chunk_seconds": args.chunk_seconds, "overlap_seconds": args.overlap_seconds,
              "torch": torch.__version__}
    passthrough = ["--device", args.device, "--chunk-seconds", str(args.chunk_seconds),
                   "--overlap-seconds", str(args.overlap_seconds)]
    passthrough += ["--enhancer", args.enhancer] if args.enhancer else []
    passthrough += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="enhance_memory_") as tmp:
        for minutes in args.minutes:
            for rate, channels in FORMATS:
                source = Path(tmp) / f"noisy_{minutes:g}min_{rate}_{channels}ch.wav"
                write_test_file(source, minutes, rate, channels)
                run = subprocess.run([sys.executable, "-m", "benchmarks.enhance_memory", "--worker", str(source),
                                      str(source.with_suffix(".out.wav")), *passthrough], cwd=ROOT, check=False,
                                     capture_output=True, text=True)
                if run.returncode:
                    sys.stderr.write(run.stderr)
                    return run.returncode
                measured = json.loads(run.stdout.strip().splitlines()[-1])
                record(args.results, {**common, "minutes": minutes,
                                      "input_mib": round(source.stat().st_size / 2 ** 20, 1), **measured})
                source.unlink()
                source.with_suffix(".out.wav").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

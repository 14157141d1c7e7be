"""`dashflow reconstruct`: encode and decode audio through any latent codec (the bundled demo tokenizer by default).

    dashflow reconstruct in.wav -o out.wav          # one file
    dashflow reconstruct clips/ -o recon/           # a folder, mirrored (progress bar)
    dashflow reconstruct --demo-signal -o demo.wav  # a synthetic chord + chirp (input saved too)

Outputs are mono at the codec's rate (16 kHz for the DashengTokenizer) of the input's duration, in the format the output suffix names
(``.wav`` / ``.flac`` / ``.ogg``). Files stream through the tokenizer in 10 s chunks with 1 s
crossfades (``dashflow.audio_stream``), so memory does not grow with the file's length; a clip of
up to one chunk gives exactly the one-shot reconstruction. Output paths follow
``dashflow.outputs``: checked before the work, inputs never overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dashflow.device import resolve_device
from dashflow.errors import DashflowError
from dashflow.hub import bundled_model
from dashflow.outputs import check_audio_output, plan_audio_jobs, run_each


DEMO_SECONDS = 4.0
CHUNK_SECONDS, OVERLAP_SECONDS = 10.0, 1.0  # as enhance


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="encode + decode audio through the tokenizer",
        description="Reconstruct audio through a latent codec (encode -> decode).")
    parser.add_argument("input", nargs="?", help="audio file or folder (omit with --demo-signal)")
    parser.add_argument("-o", "--output", required=True, help="output file (or folder for a folder input)")
    parser.add_argument("--checkpoint", default=None,
                        help="codec folder or Hugging Face id: DashengTokenizer, EnCodec, DAC, Mimi, ... "
                             "(default: the bundled demo tokenizer)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--demo-signal", action="store_true",
                        help=f"reconstruct a synthetic {DEMO_SECONDS:.0f} s chord + chirp instead of INPUT")
    parser.set_defaults(handler=run)


def default_checkpoint() -> Path | None:
    """The tokenizer of the bundled demo pipeline, if installed."""
    folder = bundled_model("pipeline") / "tokenizer"
    return folder if (folder / "config.json").is_file() else None


def demo_signal(sample_rate: int = 16000, seconds: float = DEMO_SECONDS) -> np.ndarray:
    """A C-major chord, then a 100 Hz -> 6 kHz linear chirp: [S] float32, peak 0.5."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    half = seconds / 2
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 3
    ts = t - half
    sweep = np.sin(2 * np.pi * (100 * ts + (6000 - 100) * ts ** 2 / (2 * half)))
    fade = np.clip(np.minimum(t, seconds - t) / 0.02, 0.0, 1.0)  # 20 ms fades, no clicks
    return (0.5 * np.where(t < half, chord, sweep) * fade).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    if args.demo_signal == (args.input is not None):
        raise DashflowError("give either an INPUT file/folder or --demo-signal")
    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise DashflowError("no bundled demo tokenizer found: pass --checkpoint DIR_OR_HUB_ID")
    output = Path(args.output)
    if args.demo_signal:
        demo_input = output.with_name(f"{output.stem}_input.wav")
        jobs = [(None, check_audio_output(output)), (None, check_audio_output(demo_input))]
    else:
        if Path(args.input).is_file() and output.is_dir():
            output = output / f"{Path(args.input).stem}.wav"
        jobs = plan_audio_jobs(args.input, output, "_reconstructed.wav")

    import torch

    from dashflow.audio import save_audio
    from dashflow.codecs import load_codec, reconstruct
    from dashflow.audio_stream import stream_file

    device = resolve_device(args.device)
    model = load_codec(checkpoint, device=device)
    if args.demo_signal:
        wav = torch.from_numpy(demo_signal(model.sample_rate))
        save_audio(output, reconstruct(model, wav), model.sample_rate)
        save_audio(demo_input, wav, model.sample_rate)
        print(f"wrote {output} and {demo_input}")
        return 0

    def reconstruct_file(source: Path, target: Path) -> None:
        stream_file(lambda chunk: reconstruct(model, chunk), source, target, model_rate=model.sample_rate,
                    chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS,
                    hop_multiple=model.samples_per_latent, min_samples=1, output_rate=model.sample_rate,
                    progress=len(jobs) == 1)

    if not Path(args.input).is_dir():
        reconstruct_file(*jobs[0])
        print(f"wrote {jobs[0][1]}")
        return 0
    run_each(jobs, reconstruct_file, "reconstruct")
    print(f"wrote {len(jobs)} files to {output}")
    return 0

"""`dashflow reconstruct`: encode and decode audio through a DashengTokenizer.

    dashflow reconstruct in.wav -o out.wav          # one file
    dashflow reconstruct clips/ -o recon/           # a folder, mirrored (progress bar)
    dashflow reconstruct --demo-signal -o demo.wav  # a synthetic chord + chirp (input saved too)

Outputs are 16 kHz mono WAV with the input's length (after resampling to 16 kHz).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dashflow.device import resolve_device
from dashflow.errors import DashflowError

if TYPE_CHECKING:
    import torch

    from tokenizer.model import DashengTokenizer

DEMO_SECONDS = 4.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="encode + decode audio through the tokenizer",
        description="Reconstruct audio through a DashengTokenizer (encode -> decode).")
    parser.add_argument("input", nargs="?", help="audio file or folder (omit with --demo-signal)")
    parser.add_argument("-o", "--output", required=True, help="output file (or folder for a folder input)")
    parser.add_argument("--checkpoint", default=None,
                        help="tokenizer folder or Hugging Face id (default: the bundled demo tokenizer)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--demo-signal", action="store_true",
                        help=f"reconstruct a synthetic {DEMO_SECONDS:.0f} s chord + chirp instead of INPUT")
    parser.set_defaults(handler=run)


def default_checkpoint() -> Path | None:
    """The tokenizer of the demo pipeline bundled at ``generation/demo/pipeline``, if installed."""
    try:
        folder = Path(str(resources.files("generation") / "demo" / "pipeline" / "tokenizer"))
    except ModuleNotFoundError:
        return None
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
    if args.input is not None and not Path(args.input).exists():
        raise DashflowError(f"{args.input}: no such file or folder")

    import torch

    from dashflow.audio import list_audio_files, load_audio, save_audio
    from tokenizer.model import DashengTokenizer

    device = resolve_device(args.device)
    model = DashengTokenizer.from_pretrained(checkpoint, device=device)
    output = Path(args.output)

    def reconstruct_file(wav: torch.Tensor, out_path: Path) -> None:
        recon = reconstruct(model, wav)
        try:
            save_audio(out_path, recon, model.sample_rate)
        except OSError as exc:
            raise DashflowError(f"{out_path}: cannot write ({exc.strerror or exc})") from None

    if args.demo_signal:
        wav = torch.from_numpy(demo_signal(model.sample_rate))
        demo_input = output.with_name(f"{output.stem}_input.wav")
        save_audio(demo_input, wav, model.sample_rate)
        reconstruct_file(wav, output)
        print(f"wrote {output} and {demo_input}")
        return 0

    source = Path(args.input)
    if source.is_file():
        if output.is_dir():
            output = output / f"{source.stem}.wav"
        reconstruct_file(load_audio(source, model.sample_rate), output)
        print(f"wrote {output}")
        return 0

    from tqdm import tqdm

    files = list_audio_files(source)
    if not files:
        raise DashflowError(f"{source}: no audio files found")
    if output.exists() and not output.is_dir():
        raise DashflowError(f"{output}: exists and is not a folder")
    failed = 0
    for path in tqdm(files, desc="reconstruct", unit="file"):
        try:
            reconstruct_file(load_audio(path, model.sample_rate),
                             output / path.relative_to(source).with_suffix(".wav"))
        except DashflowError as exc:
            failed += 1
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
    if failed:
        raise DashflowError(f"{failed} of {len(files)} files failed (see above); "
                            f"the other {len(files) - failed} are in {output}")
    print(f"wrote {len(files)} files to {output}")
    return 0


def reconstruct(model: DashengTokenizer, wav: torch.Tensor) -> torch.Tensor:
    """wav [S] 16 kHz -> reconstruction [S].

    The clip is zero-padded to whole latent frames, so its tail is encoded too.
    """
    import torch
    import torch.nn.functional as F

    size = wav.shape[-1]
    step = model.samples_per_latent
    target = -(-size // step) * step
    device = next(model.parameters()).device
    batch = F.pad(wav.float(), (0, target - size))[None].to(device)
    with torch.inference_mode():
        recon, _ = model(batch)
    return recon[0, :size].cpu()

"""The ``enhance`` console script: noisy speech file or folder -> enhanced speech.

    enhance noisy.wav -o clean.wav [--checkpoint SE_PIPELINE] [--mode mask|resynthesis]
        [--steps 25] [--cfg 1.0] [--samples 4] [--seed 0]   (the last four: flow enhancers)
    enhance noisy_dir/ -o clean_dir/ [--chunk-seconds 10] [--overlap-seconds 1] [--device cuda]

Any length: files stream through the model in overlapping chunks (bounded memory), and the
output has the input's sample rate and number of frames (mono), with a ``<name>.json`` sidecar of
the settings that made it (read by ``dashflow eval``). A folder is processed file by
file; a bad file is named on a ``warning:`` line and skipped, the others are still written, and
one closing ``error:`` line counts the failures (exit status 2; ``dashflow.outputs.run_each``).
``--checkpoint`` defaults to the demo enhancer bundled in the package.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dashflow.cli import (
    add_runtime_arguments,
    check_sampling_arguments,
    checkpoint_label,
    load_for_command,
    run_guarded,
    write_sidecar,
)
from dashflow.errors import DashflowError
from dashflow.hub import bundled_model
from dashflow.outputs import plan_audio_jobs, run_each

DEMO_ENHANCER = bundled_model("enhancer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enhance", description="Remove noise from speech (file or folder).",
                                     epilog="example: enhance noisy.wav -o clean.wav")
    parser.add_argument("input", help="a noisy audio file, or a folder of them")
    parser.add_argument("-o", "--output", help="output .wav (file input; default <name>_enhanced.wav) or "
                                               "folder (folder input; default <folder>_enhanced)")
    parser.add_argument("--checkpoint", default=None,
                        help="speech-enhancement pipeline folder or Hugging Face id (default: the bundled demo)")
    parser.add_argument("--mode", choices=("resynthesis", "mask"), default="mask",
                        help="mask: apply the enhanced latents' magnitude ratio to the noisy STFT, keeping its "
                             "phase (default; measured better here, see benchmarks/results/se_experiment.md); "
                             "resynthesis: decode the enhanced latents (the seed paper's protocol)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps of a flow enhancer (default 25)")
    parser.add_argument("--cfg", type=float, default=1.0, help="guidance scale of a flow enhancer (default 1.0 = off)")
    parser.add_argument("--samples", type=int, default=4,
                        help="latents a flow enhancer draws and averages per chunk (default 4, chosen on a "
                             "validation mix: 1 -> 4 samples raised SI-SDR 10.5 -> 11.4 dB); the denoiser "
                             "ignores it")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of a flow enhancer (default 0)")
    parser.add_argument("--chunk-seconds", type=float, default=10.0, help="chunk length (default 10)")
    parser.add_argument("--overlap-seconds", type=float, default=1.0, help="crossfaded overlap (default 1)")
    add_runtime_arguments(parser)
    return parser


def enhance_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: enhance_command(args))


def check_settings(args: argparse.Namespace) -> None:
    check_sampling_arguments(args.steps, args.cfg, args.seed)
    if args.samples < 1:
        raise DashflowError(f"--samples must be at least 1, got {args.samples}")
    from dashflow.audio_stream import chunk_plan

    chunk_plan(chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds)  # fail before loading


def chunk_enhancer(pipe, args: argparse.Namespace):
    """The chunk callback of one file ([S] float32 -> [S]) with the settings of ``args``: chunk i
    of a flow enhancer draws its samples' noise from ``args.seed + i * args.samples`` onwards."""
    counter = iter(range(args.seed, 2 ** 63, args.samples))
    return lambda chunk: pipe(chunk[None], output=args.mode, num_inference_steps=args.steps,
                              guidance_scale=args.cfg, num_samples=args.samples, seed=next(counter))[0]


def enhance_settings(pipe, checkpoint: str | Path, args) -> dict:
    """What a sidecar records of an enhancement run: checkpoint, enhancer kind, mode, the flow
    enhancer's sampling settings and the chunking (``args``: the command's, or any object with them)."""
    flow = {"steps": args.steps, "cfg": args.cfg, "samples": args.samples, "seed": args.seed}
    return {"checkpoint": checkpoint_label(checkpoint), "enhancer": pipe.kind, "mode": args.mode,
            **(flow if pipe.kind == "flow" else {}), "chunk_seconds": args.chunk_seconds,
            "overlap_seconds": args.overlap_seconds}


def enhance_command(args: argparse.Namespace) -> int:
    check_settings(args)
    jobs = plan_audio_jobs(args.input, args.output, "_enhanced.wav")
    checkpoint = args.checkpoint or DEMO_ENHANCER
    if args.checkpoint is None and not DEMO_ENHANCER.is_dir():
        raise DashflowError(f"the bundled demo enhancer is missing ({DEMO_ENHANCER}); pass --checkpoint "
                            "SE_PIPELINE (a folder written by recipes/se.py)")

    from dashflow.generation.pipelines.speech_enhancement import (
        SpeechEnhancementPipeline,
    )

    from dashflow.audio_stream import stream_file

    pipe, runtime = load_for_command(lambda dtype: SpeechEnhancementPipeline.from_pretrained(
        checkpoint, torch_dtype=dtype), args, progress=False)
    settings = {**enhance_settings(pipe, checkpoint, args), **runtime}

    folder = Path(args.input).is_dir()

    def enhance_file(source: Path, target: Path) -> dict:
        info = stream_file(chunk_enhancer(pipe, args), source, target, model_rate=pipe.sample_rate,
                           chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds,
                           hop_multiple=pipe.samples_per_latent, progress=not (args.quiet or folder))
        write_sidecar(target, {"output": target.name, "input": str(source), "seconds": info["seconds"],
                               "sample_rate": info["sample_rate"], **settings})
        return info

    if folder:
        run_each(jobs, enhance_file, "files", progress=not args.quiet)
        print(f"wrote {len(jobs)} files and their settings to {os.path.commonpath([t.parent for _, t in jobs])}")
        return 0
    [(source, target)] = jobs
    info = enhance_file(source, target)
    print(f"wrote {target} ({info['seconds']:.2f} s at {info['sample_rate']} Hz) and its settings "
          f"{target.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(enhance_main())

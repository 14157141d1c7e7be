"""The ``generate`` console script (``enhance`` lives in :mod:`dashflow.generation.cli.enhance`).

    generate "a dog barking" -o dog.wav [--duration 5] [--steps 25] [--cfg 5.0] [--seed 0]
    generate --batch prompts.txt -o outdir/ [--task ttm] [--checkpoint PIPELINE] [--device cuda]
    generate "rain" --negative "thunder"                    # guidance away from a negative prompt
    generate "a piano" --init-audio dog.wav --strength 0.7  # audio-to-audio
    generate "a piano" --inpaint dog.wav --region 1:2.5     # regenerate 1-2.5 s (repeatable)
    generate "a dog barking" --continue dog.wav --duration 5   # 5 s more after the clip
    generate "rain" --duration 120 --window 10              # long-form: 10 s windows, crossfaded

Each WAV (16 kHz, 16-bit, written atomically) gets a sidecar ``<name>.json`` with every setting
that decided it: prompts, requested and actual duration, steps, CFG, sway, seed, checkpoint and
weight hashes, text encoder, device, dtype, dashflow version, elapsed time. With ``--batch``
(one prompt a line; blank lines and ``#`` comments skipped) the outputs are
``outdir/<index>_<slug>.wav``; prompt i uses seed ``--seed + i``, so a prompt's audio does not
depend on ``--batch-size`` when ``--duration`` is given. ``--checkpoint`` defaults to the demo
pipeline bundled in the package (``generation/demo/pipeline``). An input clip (``--init-audio``,
``--inpaint`` or ``--continue``) steers every prompt; the sidecar records its path and the sha256
of its file with the steering settings (:mod:`dashflow.generation.pipelines.steering`).
"""

from __future__ import annotations

import argparse
import math
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dashflow.cli import (
    add_runtime_arguments,
    check_sampling_arguments,
    checkpoint_label,
    file_sha256,
    load_for_command,
    run_guarded,
    write_sidecar,
)
from dashflow.errors import DashflowError
from dashflow.generation.pipelines.tasks import TASKS, TEXT_TASKS
from dashflow.hub import bundled_model
from dashflow.outputs import check_audio_output, check_writable

DEMO_PIPELINE = bundled_model("pipeline")
TAG = re.compile(r"<\|\w+\|>")
MAX_PROMPT_CHARS = 2000


def build_generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate", description="Generate audio (or music, --task ttm) from text prompts.",
        epilog='example: generate "a dog barking in a park" -o dog.wav --duration 5 --seed 1')
    parser.add_argument("prompt", nargs="?", help="the text prompt (or use --batch)")
    parser.add_argument("--batch", metavar="FILE", help="a text file with one prompt per line")
    parser.add_argument("-o", "--output", help="output .wav (one prompt; default <slug>.wav) or folder "
                                                "(--batch; default <FILE stem>_audio)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per clip, at most 60 (tta) or 120 (ttm), or 3600 with --window; with "
                             "--continue the seconds added (default: the model's predicted duration)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    parser.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale, 1 = off (default 5.0)")
    parser.add_argument("--sway", type=float, default=-1.0, help="sway sampling coefficient, 0 = linear (default -1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, recorded)")
    parser.add_argument("--checkpoint", default=None,
                        help="pipeline folder, Dasheng-AudioGen model folder or Hugging Face id "
                             "(default: the bundled demo pipeline)")
    parser.add_argument("--task", choices=TEXT_TASKS, default=None,
                        help=" or ".join(f"{TASKS[t].description} ({t})" for t in TEXT_TASKS)
                        + " (default: the checkpoint's)")
    parser.add_argument("--tokenizer", default=None, help="replace the checkpoint's codec (folder or hub id)")
    parser.add_argument("--text-encoder", default=None, help="replace the checkpoint's text encoder (minilm, "
                                                              "flan-t5-large or a folder)")
    parser.add_argument("--batch-size", type=int, default=4, help="prompts generated together (default 4)")
    parser.add_argument("--lora", metavar="FILE[:WEIGHT]", action="append",
                        help="a LoRA adapter file (recipes/finetune.py) at WEIGHT (default 1); repeat to stack")
    steer = parser.add_argument_group("steering")
    steer.add_argument("--negative", metavar="TEXT",
                       help="negative prompt: guidance steers away from it (needs --cfg > 1)")
    steer.add_argument("--init-audio", metavar="FILE", help="audio-to-audio: start from this clip (same length out)")
    steer.add_argument("--strength", type=float, default=None,
                       help="with --init-audio: noise level in (0, 1] the clip starts from; 1 ignores it (default 0.8)")
    steer.add_argument("--inpaint", metavar="FILE", help="regenerate the --region parts of this clip, keep the rest")
    steer.add_argument("--region", metavar="START:END", action="append",
                       help="with --inpaint: seconds to regenerate (repeatable)")
    steer.add_argument("--continue", dest="continue_audio", metavar="FILE",
                       help="extend this clip by --duration seconds")
    steer.add_argument("--window", type=float, default=None, metavar="SECONDS",
                       help="long-form: make clips longer than this in windows of this length, crossfaded")
    steer.add_argument("--window-overlap", type=float, default=None, metavar="SECONDS",
                       help="with --window: seconds two windows share (default half the window)")
    add_runtime_arguments(parser)
    return parser


def parse_region(text: str) -> tuple[float, float]:
    """``--region START:END`` as seconds (the pipeline checks them against the clip)."""
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise DashflowError(f"--region {text!r} is not START:END in seconds (e.g. 1.5:3)") from None
    return start, end


def generate_main(argv: Sequence[str] | None = None) -> int:
    args = build_generate_parser().parse_args(argv)
    return run_guarded(lambda: generate_command(args))


# --- argument checks (before anything heavy is imported) -----------------------------------------

def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompt, or the prompts of ``--batch``; empty ones raise."""
    if (args.prompt is None) == (args.batch is None):
        raise DashflowError("give one prompt, or --batch FILE with one prompt per line")
    if args.prompt is not None:
        prompts = [args.prompt]
    else:
        path = Path(args.batch)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DashflowError(f"{path}: cannot read the prompts file ({exc.__class__.__name__})") from None
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not prompts:
            raise DashflowError(f"{path}: no prompts (one per line; blank lines and # comments are skipped)")
    for i, prompt in enumerate(prompts):
        where = "" if args.batch is None else f" {i} of {args.batch}"
        if not TAG.sub("", prompt).strip():
            raise DashflowError(f"prompt{where} is empty: describe the sound to generate")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise DashflowError(f"prompt{where} has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS} "
                                "(text encoders read at most a few hundred tokens)")
    return prompts


def check_settings(args: argparse.Namespace) -> None:
    if args.duration is not None and (not math.isfinite(args.duration) or args.duration <= 0):
        raise DashflowError(f"--duration must be a positive number of seconds, got {args.duration}")
    check_sampling_arguments(args.steps, args.cfg, args.seed)
    if not math.isfinite(args.sway):
        raise DashflowError(f"--sway must be a number, got {args.sway}")
    if args.batch_size < 1:
        raise DashflowError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_steering_flags(args)
    for spec in args.lora or ():
        parse_lora(spec)


def parse_lora(text: str) -> tuple[Path, float]:
    """``--lora FILE[:WEIGHT]`` as (file, weight); one DashflowError line for a missing file or a
    weight that is not a finite number."""
    path, _, weight = text.rpartition(":") if ":" in text and not Path(text).is_file() else (text, "", "1")
    try:
        value = float(weight)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DashflowError(f"--lora {text!r}: the weight after ':' must be a finite number")
    if not Path(path).is_file():
        raise DashflowError(f"--lora {path}: no such adapter file")
    return Path(path), value


def load_adapters(pipe, specs: Sequence[str]) -> list[dict]:
    """Load every ``--lora`` adapter into ``pipe`` at its weight; what the sidecar records of them."""
    adapters = []
    for i, spec in enumerate(specs):
        path, weight = parse_lora(spec)
        name = pipe.load_lora_weights(path, adapter_name=f"{i}_{path.stem}")
        adapters.append({"adapter": name, "file": str(path.resolve()), "sha256": file_sha256(path),
                         "weight": weight})
    pipe.set_adapters([a["adapter"] for a in adapters], [a["weight"] for a in adapters])
    return adapters


def check_steering_flags(args: argparse.Namespace) -> None:
    """The steering flags that go together (the pipeline checks their values)."""
    clips = [flag for flag, value in (("--init-audio", args.init_audio), ("--inpaint", args.inpaint),
                                      ("--continue", args.continue_audio)) if value is not None]
    if len(clips) > 1:
        raise DashflowError(f"use one of --init-audio, --inpaint, --continue, not {' and '.join(clips)}")
    if args.negative is not None and args.cfg == 1:
        raise DashflowError("--negative needs --cfg > 1: at 1 the negative branch is not run")
    if args.strength is not None and args.init_audio is None:
        raise DashflowError("--strength applies to --init-audio")
    if (args.region is not None) != (args.inpaint is not None):
        raise DashflowError("--inpaint FILE needs at least one --region START:END, and --region needs --inpaint")
    if args.continue_audio is not None and args.duration is None:
        raise DashflowError("--continue needs --duration: the seconds to add")
    if clips and clips[0] != "--continue" and args.duration is not None:
        raise DashflowError(f"{clips[0]} sets the clip's length: drop --duration")
    if args.window_overlap is not None and args.window is None:
        raise DashflowError("--window-overlap needs --window")
    for region in args.region or ():
        parse_region(region)
    for path in (args.init_audio, args.inpaint, args.continue_audio):
        if path is not None and not Path(path).is_file():
            raise DashflowError(f"{path}: no such audio file")


def steering_arguments(args: argparse.Namespace, pipe) -> tuple[dict, dict]:
    """The pipeline's steering keyword arguments (the input clip read and checked at the
    pipeline's rate) and what the sidecar records of the flags (the clip's path and file sha256)."""
    from dashflow.generation.pipelines.steering import check_clip

    from dashflow.audio import load_audio

    kwargs = {"negative_prompt": args.negative, "window_length_in_s": args.window,
              "window_overlap_in_s": args.window_overlap}
    record = {"negative_prompt": args.negative, "input_audio": None, "input_audio_sha256": None}
    for path, name in ((args.init_audio, "init_audio"), (args.inpaint, "inpaint_audio"),
                       (args.continue_audio, "continue_audio")):
        if path is not None:
            wav = load_audio(path, pipe.sample_rate, max_seconds=pipe.max_duration)
            kwargs[name] = check_clip(wav, path, pipe.sample_rate, pipe.max_duration, pipe.tokenizer.min_samples)
            record.update(input_audio=str(Path(path).resolve()), input_audio_sha256=file_sha256(path))
    if args.strength is not None:
        kwargs["strength"] = args.strength
    if args.region is not None:
        kwargs["inpaint_regions"] = [parse_region(region) for region in args.region]
    return kwargs, record

def slug(prompt: str, limit: int = 48) -> str:
    """File-name part from a prompt: tags dropped, lower-case words joined by ``-``."""
    text = re.sub(r"[^a-z0-9]+", "-", TAG.sub(" ", prompt).lower()).strip("-")
    return text[:limit].rstrip("-") or "prompt"


def output_paths(args: argparse.Namespace, prompts: list[str]) -> list[Path]:
    """One audio path per prompt, checked writable (``dashflow.outputs``); nothing is created here."""
    if args.batch is None:
        return [check_audio_output(args.output or f"{slug(prompts[0])}.wav")]
    folder = check_writable(args.output or f"{Path(args.batch).stem}_audio", folder=True)
    width = max(3, len(str(len(prompts) - 1)))
    return [folder / f"{i:0{width}d}_{slug(p)}.wav" for i, p in enumerate(prompts)]


# --- the command -----------------------------------------------------------------------------

def generate_command(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)
    check_settings(args)
    outputs = output_paths(args, prompts)
    checkpoint = args.checkpoint or DEMO_PIPELINE
    if args.checkpoint is None and not DEMO_PIPELINE.is_dir():
        raise DashflowError(f"the bundled demo pipeline is missing ({DEMO_PIPELINE}); pass --checkpoint "
                            "PIPELINE_FOLDER (a saved pipeline, a Dasheng-AudioGen folder or a Hugging Face id)")

    from tqdm.auto import tqdm

    from dashflow.audio import save_audio

    seed = secrets.randbelow(2 ** 31) if args.seed is None else args.seed
    start = time.perf_counter()
    pipe, runtime = load_for_command(lambda dtype: load(checkpoint, args, dtype), args, progress=not args.quiet)
    steering, steering_record = steering_arguments(args, pipe)
    pipe.check_inputs(prompts[0], args.duration, args.steps, args.cfg, **steering)  # before anything is written
    adapters = load_adapters(pipe, args.lora) if args.lora else []
    provenance = {**pipeline_provenance(pipe, checkpoint), "lora": adapters, **runtime,
                  "load_seconds": round(time.perf_counter() - start, 3)}

    bar = tqdm(delay=1.0, total=len(prompts), desc="prompts", unit="prompt", disable=args.quiet or len(prompts) == 1)
    for first in range(0, len(prompts), args.batch_size):
        chunk = range(first, min(first + args.batch_size, len(prompts)))
        tic = time.perf_counter()
        result = pipe([prompts[i] for i in chunk], args.duration, num_inference_steps=args.steps,
                      guidance_scale=args.cfg, sway_coef=args.sway, seed=[seed + i for i in chunk], **steering)
        elapsed = time.perf_counter() - tic
        check_finite(result, prompts[chunk[0]], args.cfg)
        for j, i in enumerate(chunk):
            save_audio(outputs[i], result.audios[j, :result.lengths[j]], result.sample_rate)
            sidecar = clip_sidecar(outputs[i], result, j, prompts[i], {
                "duration_requested": args.duration, "steps": args.steps, "cfg": args.cfg, "sway": args.sway,
                "seed": seed + i, "batch_index": i, **steering_record, **provenance,
                "elapsed_seconds": round(elapsed, 3)})
            write_sidecar(outputs[i], sidecar)
            if len(prompts) == 1:
                print(f"wrote {outputs[i]} ({sidecar['duration']:.2f} s) and its settings {outputs[i].with_suffix('.json').name}")
        bar.update(len(chunk))
    bar.close()
    if len(prompts) > 1:
        print(f"wrote {len(prompts)} clips to {outputs[0].parent}")
    return 0


def pipeline_provenance(pipe, checkpoint: str | Path) -> dict:
    """What every sidecar records of the loaded pipeline: checkpoint, task, weight hashes, text
    encoder, prompt template and instruction."""
    return {"checkpoint": checkpoint_label(checkpoint), "task": pipe.task,
            "model_weights_hash": pipe.transformer.weights_hash(), "tokenizer_hash": pipe.tokenizer.weights_hash(),
            "text_encoder": pipe.text_encoder.name, "text_encoder_hash": pipe.text_encoder.weights_hash(),
            "prompt_template": pipe.prompt_template, "instruction": pipe.config.instruction}


def check_finite(result, prompt: str, cfg: float) -> None:
    """One DashflowError line when sampling diverged (NaN / infinite samples in ``result.audios``)."""
    import numpy as np

    if not np.isfinite(result.audios).all():
        raise DashflowError(f"sampling diverged: the audio of {prompt!r} has NaN or infinite samples "
                            f"(cfg {cfg} is likely too high; 3-7 is usual); its clip was not written")


def clip_sidecar(output: Path, result, j: int, prompt: str, settings: dict) -> dict:
    """The sidecar of output ``j`` of a pipeline ``result`` written to ``output``: the prompt as given
    and as encoded, the clip's length, the steering and windows as run, then ``settings``."""
    return {"output": output.name, "prompt": prompt, "prompt_encoded": result.settings["prompts"][j],
            "duration": result.lengths[j] / result.sample_rate, "num_samples": result.lengths[j],
            "sample_rate": result.sample_rate, "steering": result.settings["steering"],
            "window": result.settings["window_length_in_s"], "window_overlap": result.settings["window_overlap_in_s"],
            **settings}


def load(checkpoint: str | Path, args: argparse.Namespace, dtype):
    """The pipeline of ``args.task`` from ``checkpoint``, with --tokenizer / --text-encoder swapped in."""
    from dashflow.codecs import load_codec
    from dashflow.generation.pipelines.audio import load_pipeline
    from dashflow.generation.pipelines.components import PipelineTextEncoder

    components = {}
    if args.tokenizer:
        components["tokenizer"] = load_codec(args.tokenizer, torch_dtype=dtype)
    if args.text_encoder:
        components["text_encoder"] = PipelineTextEncoder(args.text_encoder)
    return load_pipeline(checkpoint, task=args.task, torch_dtype=dtype, **components)


if __name__ == "__main__":
    sys.exit(generate_main())

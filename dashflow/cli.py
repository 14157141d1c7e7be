"""The CLI home: the ``dashflow`` command with its subcommands, and what every console script
and recipe shares (one error handler, the settings sidecars, quiet library loading).

Subcommands are registered explicitly in :func:`build_parser`: each module's ``register(
subparsers)`` adds parsers whose ``handler`` default takes the parsed args. Nothing heavy is
imported at module level, so ``generate --help`` and ``dashflow --help`` stay fast.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from dashflow.device import DTYPES
from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path

MAX_STEPS = 1000  # sampling steps any command accepts (25 is the default; > 100 rarely changes the audio)


class Terminated(BaseException):
    """SIGTERM inside :func:`run_guarded`: unwinds like Ctrl-C, so temporary files are removed."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def run_guarded(handler: Callable[[], int | None]) -> int:
    """Run ``handler``; a DashflowError becomes one ``error:`` line and exit status 2. SIGINT (Ctrl-C)
    and SIGTERM (service managers, containers) unwind it, then exit 130 / 143 with one line."""
    catch = (threading.current_thread() is threading.main_thread()
             and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)  # else an outer caller owns SIGTERM
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if catch else None
    try:
        return handler() or 0
    except DashflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    finally:
        if catch:
            signal.signal(signal.SIGTERM, previous)


# --- the sampling commands' shared arguments -------------------------------------------------------

def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype``, ``--compile`` and ``--quiet``, as ``generate`` and ``enhance`` take them."""
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="model dtype (default auto: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the DiT (CUDA graphs on cuda): a slow first call, faster later ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def check_sampling_arguments(steps: int, cfg: float, seed: int | None) -> None:
    """One DashflowError line for a ``--steps``, ``--cfg`` or ``--seed`` no sampler takes."""
    if not 1 <= steps <= MAX_STEPS:
        raise DashflowError(f"--steps must be in 1..{MAX_STEPS}, got {steps} (25 is the default; "
                            "more than 100 rarely changes the audio)")
    if not math.isfinite(cfg) or cfg < 1:
        raise DashflowError(f"--cfg must be at least 1 (1 = no guidance), got {cfg}")
    if seed is not None and not 0 <= seed < 2 ** 63:
        raise DashflowError(f"--seed must be in [0, 2^63), got {seed}")


def load_for_command(load: Callable, args: argparse.Namespace, progress: bool):
    """Quiet the libraries, resolve ``--device`` / ``--dtype``, load a pipeline with
    ``load(dtype)``, move it to the device and compile it on ``--compile``. Returns the pipeline
    and the sidecar's runtime fields (device, dtype, compile, dashflow version)."""
    from dashflow.device import resolve_device, resolve_dtype

    quiet_libraries()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    pipe = load(dtype).to(device)
    pipe.set_progress_bar_config(disable=not progress)
    if args.compile:
        pipe.compile()
    return pipe, {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "compile": args.compile,
                  "dashflow_version": dashflow_version()}


# --- sidecars -------------------------------------------------------------------------------------

def write_sidecar(wav_path: str | Path, record: dict) -> None:
    """Write ``record`` atomically as the settings sidecar ``<name>.json`` beside ``wav_path``."""
    with atomic_path(Path(wav_path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (sidecars record it for every input file; ``sha256sum`` agrees)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_label(checkpoint: str | Path) -> str:
    """A local checkpoint's absolute path, else the hub id as given (for sidecars)."""
    return str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else str(checkpoint)


def dashflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dashflow")
    except PackageNotFoundError:
        return "unknown"


def quiet_libraries() -> None:
    """Keep diffusers / transformers loading bars and notices off the terminal."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# --- the dashflow command -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from dashflow import prepare
    from dashflow.commands import bench_codec, probe, serve
    from dashflow.eval import cli as eval_cli
    from dashflow.generation.cli import cache_latents
    from dashflow.tokenizer import cli as tokenizer_cli

    parser = argparse.ArgumentParser(prog="dashflow", description="dashflow subcommands")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare.register(subparsers)          # prepare
    tokenizer_cli.register(subparsers)    # reconstruct
    cache_latents.register(subparsers)    # cache-latents
    eval_cli.register(subparsers)         # eval, download-weights, train-classifier
    probe.register(subparsers)            # probe
    bench_codec.register(subparsers)      # bench-codec
    serve.register(subparsers)            # serve
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

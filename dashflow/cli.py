"""The CLI home: the ``dashflow`` command with its subcommands, and what every console script
and recipe shares (one error handler, the settings sidecars, quiet library loading).

Subcommands are registered explicitly in :func:`build_parser`: each module's ``register(
subparsers)`` adds parsers whose ``handler`` default takes the parsed args. Nothing heavy is
imported at module level, so ``generate --help`` and ``dashflow --help`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path

MAX_STEPS = 1000  # sampling steps any command accepts (25 is the default; > 100 rarely changes the audio)


def run_guarded(handler: Callable[[], int | None]) -> int:
    """Run ``handler``; a DashflowError becomes one ``error:`` line and exit status 2."""
    try:
        return handler() or 0
    except DashflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# --- sidecars -------------------------------------------------------------------------------------

def write_sidecar(wav_path: str | Path, record: dict) -> None:
    """Write ``record`` atomically as the settings sidecar ``<name>.json`` beside ``wav_path``."""
    with atomic_path(Path(wav_path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


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
    from dashflow.eval import cli as eval_cli
    from dashflow.generation.cli import cache_latents
    from dashflow.tokenizer import cli as tokenizer_cli

    parser = argparse.ArgumentParser(prog="dashflow", description="dashflow subcommands")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare.register(subparsers)          # prepare
    tokenizer_cli.register(subparsers)    # reconstruct
    cache_latents.register(subparsers)    # cache-latents
    eval_cli.register(subparsers)         # eval, download-weights, train-classifier
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

"""`dashflow <subcommand>`: each package registers its own subcommands here.

A package module listed in ``SUBCOMMAND_MODULES`` exposes ``register(subparsers)``, which adds
parsers whose ``handler`` default takes the parsed args. Heavy imports stay inside handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from dashflow.errors import DashflowError

MAX_STEPS = 1000  # sampling steps any command accepts (25 is the default; > 100 rarely changes the audio)
SUBCOMMAND_MODULES = (
    "dashflow.prepare",     # prepare
    "tokenizer.cli",        # reconstruct
    "generation.commands",  # cache-latents
    "eval.cli",             # eval, download-weights, train-classifier
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashflow", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

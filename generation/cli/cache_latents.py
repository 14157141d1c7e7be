"""`dashflow cache-latents`: store codec latents of every manifest clip.

    dashflow cache-latents --manifest train.jsonl --tokenizer TOKENIZER_DIR --out latents/

writes ``latents/<tokenizer weights hash>/<audio_id>.safetensors`` (see generation.latent_cache).
Already cached clips are skipped, so an interrupted run resumes. Bad audio files are named on
``warning:`` lines and skipped; everything else is cached, then one ``error:`` line counts the
failures (exit status 2), as every many-input command does (``dashflow.outputs``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dashflow.device import resolve_device
from dashflow.errors import DashflowError
from dashflow.outputs import check_failures, check_writable

DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache-latents", help="encode a manifest's clips into a tokenizer latent cache",
        description="Encode every clip of a JSON-lines manifest with a latent codec and store "
                    "the latents under OUT/<tokenizer weights hash>/<audio_id>.safetensors.")
    parser.add_argument("--manifest", required=True, help="JSON-lines manifest (audio_id, audio, ...)")
    parser.add_argument("--tokenizer", required=True, help="codec folder or Hugging Face id (DashengTokenizer, EnCodec, DAC, Mimi, ...)")
    parser.add_argument("--out", required=True, help="cache folder (one subfolder per tokenizer)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips encoded together (default 8)")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="audio-reading processes (default 2; 0 reads in the main process)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="storage dtype of the latents (default float32)")
    parser.set_defaults(handler=cache_latents_command)


def cache_latents_command(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise DashflowError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_workers < 0:
        raise DashflowError(f"--num-workers must be 0 or more, got {args.num_workers}")
    check_writable(args.out, folder=True, flag="--out")

    import torch
    from dashflow.generation.training.latent_cache import cache_latents

    from dashflow.codecs import load_codec
    from dashflow.manifests import read_manifest

    records = read_manifest(args.manifest)
    device = resolve_device(args.device)
    tokenizer = load_codec(args.tokenizer, device=device)
    source = str(Path(args.tokenizer).resolve()) if Path(args.tokenizer).exists() else args.tokenizer
    folder = Path(args.out) / tokenizer.weights_hash()
    failures = cache_latents(records, tokenizer, args.out, batch_size=args.batch_size,
                             num_workers=args.num_workers, dtype=getattr(torch, args.dtype), source=source)
    check_failures(len(failures), len(records), folder)
    print(f"{len(records)} clips cached in {folder}")
    return 0

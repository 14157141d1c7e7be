"""`dashflow serve`: a web page and an HTTP API over models loaded once and kept warm.

    dashflow serve [--checkpoint PIPELINE] [--enhancer SE_PIPELINE] [--lora FILE[:WEIGHT]] [--host 127.0.0.1] [--port 7860]

One process loads the text-to-audio pipeline (text-to-music and reconstruction share its
modules; ``--lora`` adapters apply to both) and the speech enhancer, then serves:

- the page at ``/`` (Gradio): generate with every steering control, enhance and reconstruct with
  before / after players and spectrograms, progress, a Cancel button, each result's settings;
- the API under ``/api``: ``POST /api/generate``, ``/api/enhance``, ``/api/reconstruct`` take JSON
  (input audio as a base64-encoded file) and answer with the WAV itself and its settings sidecar
  as JSON in the ``X-Dashflow-Settings`` header; ``GET /api/health`` lists models, queues and limits.
  A bad request is one line, ``{"error": ...}``, with a 4xx status; a full queue is 503.

Gradio gives the page; the API is plain FastAPI routes beside it (Gradio's own API reports errors
inside an event stream with status 200, and a WAV body suits ``curl -o``), and Gradio's own API
is switched off so that there is one. Requests for one model run one at a time in arrival order
(:mod:`.serve_jobs`); a request whose client disconnects, or whose Cancel is pressed, stops at the
next sampling step. Every file the server writes (results, uploads, Gradio's uploads) lies under
``--out-dir``; it binds to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dashflow.errors import DashflowError


@dataclass
class Limits:
    """What one request may ask for."""

    max_seconds: float = 30.0      # generated audio, and uploaded audio
    max_steps: int = 100
    max_prompt_chars: int = 500
    max_upload_mb: float = 20.0
    max_queued: int = 16           # per model, running one included


# --- the command ----------------------------------------------------------------------------------

def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="web page + HTTP API with the models kept loaded",
        description="Serve a web page (Gradio) and an HTTP API (/api/generate, /api/enhance, /api/reconstruct) "
                    "over models loaded once.",
        epilog='example: dashflow serve --port 7860, then open http://127.0.0.1:7860 or\n'
               '  curl -X POST http://127.0.0.1:7860/api/generate -H "Content-Type: application/json" '
               "-d '{\"prompt\": \"a dog barking\"}' -o dog.wav")
    parser.add_argument("--checkpoint", default=None, help="text-to-audio pipeline (default: the bundled demo)")
    parser.add_argument("--enhancer", default=None, help="speech-enhancement pipeline (default: the bundled demo)")
    parser.add_argument("--lora", metavar="FILE[:WEIGHT]", action="append",
                        help="a LoRA adapter for the text pipelines (recipes/finetune.py); repeat to stack")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--out-dir", default="dashflow_serve", help="where results and uploads are written "
                                                                     "(default ./dashflow_serve)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="auto", help="model dtype (default auto)")
    defaults = Limits()
    for name in asdict(defaults):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                            default=getattr(defaults, name), help=f"request limit (default {getattr(defaults, name)})")
    parser.set_defaults(handler=serve_command)


def prepare_out_dir(out_dir: str | Path) -> Path:
    """The output folder, created and checked writable; Gradio's uploads go inside it."""
    from dashflow.outputs import check_writable

    folder = check_writable(out_dir, folder=True, flag="--out-dir").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return folder


def serve_command(args: argparse.Namespace) -> int:
    from dashflow.generation.cli.enhance import DEMO_ENHANCER
    from dashflow.generation.cli.generate import DEMO_PIPELINE

    if not 0 <= args.port < 65536:
        raise DashflowError(f"--port must be in 0..65535, got {args.port}")
    limits = Limits(**{name: getattr(args, name) for name in asdict(Limits())})
    if min(asdict(limits).values()) <= 0:
        raise DashflowError("request limits must be positive")
    out_dir = prepare_out_dir(args.out_dir)
    import uvicorn

    try:
        from dashflow.commands.serve_app import build_app
        from dashflow.commands.serve_models import Models
    except ImportError as exc:
        raise DashflowError(f"dashflow serve needs the serve extra ({exc.name} is missing): "
                            "pip install -e '.[serve]'") from None

    start = time.perf_counter()
    enhancer = args.enhancer or (DEMO_ENHANCER if DEMO_ENHANCER.is_dir() else None)
    models = Models(args.checkpoint or DEMO_PIPELINE, enhancer, out_dir, limits, args.device, args.dtype, args.lora)
    app = build_app(models)
    print(f"dashflow serve: models loaded in {time.perf_counter() - start:.1f} s; "
          f"http://{args.host}:{args.port} (page), /api (API); results in {out_dir}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        models.close()
    return 0

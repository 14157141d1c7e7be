"""End-to-end text-to-audio latency: text encoder + 25-step CFG sampling + decode, as ``generate`` runs it.

    python -m benchmarks.generate_latency                              # paper DiT + tokenizer, cuda, bf16
    python -m benchmarks.generate_latency --device cpu --preset tiny --batches 1 2 --repeats 1

Random weights at the preset's size (timing does not depend on them), or ``--checkpoint`` (a
pipeline folder; ``demo`` is the bundled one): the DiT preset, the
tokenizer preset of the same name (``tiny`` for ``tiny``, else the official size) and a text
encoder of the preset's width (``tiny``: the bundled MiniLM; otherwise a randomly initialised
Flan-T5-large encoder with a word-level tokenizer built on the spot, as no T5 files are reachable
offline and a bare GPU machine has no MiniLM either). Weights
in bf16 on CUDA, float32 on CPU, exactly as ``generate`` loads them. Each measurement is the
median wall time of ``pipe(prompts, duration, 25 steps, CFG 5.0)`` after a warm-up call, once
eager and once with ``pipe.compile()`` (``--compile both``); the compile row also reports the
first (compiling) call. One JSON line per measurement, appended to
benchmarks/results/generate_latency.jsonl; ``peak_mem_gib`` is the CUDA allocator peak, on CPU
the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines import TextToAudioPipeline
from dashflow.text_encoders import TextEncoder, load_text_encoder
from dashflow.tokenizer.model import DashengTokenizer
from diffusers import FlowMatchEulerDiscreteScheduler

from benchmarks.common import record
from dashflow.hub import bundled_model

RESULTS = Path(__file__).resolve().parent / "results" / "generate_latency.jsonl"
PROMPT = "a dog barks twice while rain falls on a tin roof"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="DiT preset: paper, audiogen, small or tiny")
    parser.add_argument("--checkpoint", default=None,
                        help="a pipeline folder (or 'demo', the bundled one) instead of random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--text-encoder", choices=("minilm", "random-t5-large"), default=None,
                        help="default: minilm for the tiny preset, else random-t5-large")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="clips per call")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--compile", choices=("no", "yes", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median kept)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def text_encoder(name: str, device: torch.device) -> TextEncoder:
    """The bundled MiniLM, or a random Flan-T5-large-sized encoder with a word-level tokenizer
    built here (no model files needed: what a bare GPU machine can run)."""
    if name == "minilm":
        return load_text_encoder("minilm", device=device)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "<unk>": 1} | {word: i + 2 for i, word in enumerate(dict.fromkeys(PROMPT.split()))}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", unk_token="<unk>")
    config = T5Config(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16, vocab_size=32128,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    return TextEncoder(T5EncoderModel(config).to(device), tokenizer, name=name, max_length=512)


def build(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> TextToAudioPipeline:
    if args.checkpoint:
        folder = bundled_model("pipeline") if args.checkpoint == "demo" else args.checkpoint
        pipe = TextToAudioPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    torch.manual_seed(0)
    tokenizer = DashengTokenizer.from_preset("tiny" if args.preset == "tiny" else "paper")
    encoder = text_encoder(args.text_encoder or ("minilm" if args.preset == "tiny" else "random-t5-large"), device)
    model = AudioGenModel.from_preset(args.preset, latent_dim=tokenizer.latent_dim, text_embed_dim=encoder.dim)
    pipe = TextToAudioPipeline(tokenizer=tokenizer.to(device, dtype), text_encoder=encoder,
                               transformer=model.to(device, dtype),
                               scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def call_seconds(pipe: TextToAudioPipeline, batch: int, args: argparse.Namespace, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    pipe([PROMPT] * batch, duration=args.seconds, num_inference_steps=args.steps, guidance_scale=5.0, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = build(args, device, dtype)
    common = {"preset": args.checkpoint or args.preset, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(),
              "dtype": str(dtype).removeprefix("torch."), "seconds": args.seconds, "steps": args.steps,
              "guidance": 5.0, "text_encoder": pipe.text_encoder.name, "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]
    records = []
    for compiled in modes:
        if compiled:
            pipe.compile()
        for batch in args.batches:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            first = call_seconds(pipe, batch, args, device)  # warm-up (compiles when compiled)
            latency = statistics.median(call_seconds(pipe, batch, args, device) for _ in range(args.repeats))
            records.append({"benchmark": "generate_latency", "batch": batch, "compile": compiled,
                            "latency_s": round(latency, 4), "first_call_s": round(first, 4),
                            "clips_per_s": round(batch / latency, 3),
                            "rtf": round(latency / (batch * args.seconds), 4),
                            "peak_mem_gib": round(peak_memory(device), 2)})
    for values in records:
        record(args.results, {**values, **common})
    return 0


if __name__ == "__main__":
    sys.exit(main())

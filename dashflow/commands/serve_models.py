"""What ``dashflow serve`` serves: the models loaded once, the API's request bodies, and one
checked job per request (generate, enhance, reconstruct) that writes a WAV and its settings
sidecar into the server's output folder."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from argparse import Namespace
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dashflow.commands.serve import Limits
from dashflow.commands.serve_jobs import Job, Slot
from dashflow.errors import DashflowError

GENERATE_SLOT, ENHANCE_SLOT = "generation", "enhancement"
AUDIO_MODES = {"init": "init_audio", "inpaint": "inpaint", "continue": "continue_audio"}
# the generate command's flag names in its shared checks -> this API's field names
FIELD_NAMES = {"--init-audio": "audio (mode init)", "--inpaint FILE": "audio (mode inpaint)",
               "--inpaint": "audio (mode inpaint)", "--continue": "audio (mode continue)",
               "--region START:END": "regions", "--region": "regions", "--negative": "negative_prompt",
               "--strength": "strength", "--duration": "duration", "--cfg": "cfg", "--steps": "steps",
               "--seed": "seed"}


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(Request):
    """``audio`` (a base64-encoded audio file) steers as ``audio_mode`` says: ``init`` (audio-to-audio,
    with ``strength``), ``inpaint`` (regenerate ``regions`` [[start, end], ...] seconds) or
    ``continue`` (``duration`` more seconds)."""

    prompt: str
    task: Literal["tta", "ttm"] = "tta"
    duration: float | None = Field(None, gt=0, description="seconds; none = the model's predicted length")
    steps: int = Field(25, ge=1)
    cfg: float = Field(5.0, ge=1, le=30)
    seed: int | None = Field(None, ge=0, lt=2 ** 63)
    negative_prompt: str | None = None
    audio: str | None = None
    audio_mode: Literal["init", "inpaint", "continue"] | None = None
    strength: float | None = Field(None, gt=0, le=1)
    regions: list[tuple[float, float]] | None = None


class EnhanceRequest(Request):
    audio: str
    mode: Literal["mask", "resynthesis"] = "mask"
    steps: int = Field(25, ge=1)
    cfg: float = Field(1.0, ge=1, le=30)
    samples: int = Field(4, ge=1, le=16)
    seed: int = Field(0, ge=0, lt=2 ** 63)


class ReconstructRequest(Request):
    audio: str


@dataclass
class Result:
    path: Path
    sidecar: dict


def api_message(exc: DashflowError) -> str:
    """An error line of the shared command-line checks, in this API's field names."""
    text = str(exc)
    for flag, name in FIELD_NAMES.items():
        text = text.replace(flag, name)
    return text


class Models:
    """The loaded models, their queues and the output folder (see the module docstring)."""

    def __init__(self, checkpoint: str | Path, enhancer: str | Path | None, out_dir: Path, limits: Limits,
                 device: str | None = None, dtype: str = "auto", lora: list[str] | None = None):
        from dashflow.generation.cli.generate import load_adapters, pipeline_provenance
        from dashflow.generation.pipelines.audio import load_pipeline
        from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline

        from dashflow.cli import load_for_command

        self.limits, self.out_dir = limits, out_dir
        self.uploads = out_dir / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        runtime_args = Namespace(device=device, dtype=dtype, compile=False)
        text, self.runtime = load_for_command(lambda torch_dtype: load_pipeline(checkpoint, task="tta",
                                                                                torch_dtype=torch_dtype),
                                              runtime_args, progress=False)
        self.pipelines = {"tta": text, "ttm": load_pipeline(checkpoint, task="ttm", **text.components)}
        for pipe in self.pipelines.values():
            pipe.set_progress_bar_config(disable=True)
        adapters = load_adapters(text, lora) if lora else []  # the DiT is shared: every text task gets them
        self.provenance = {task: {**pipeline_provenance(pipe, checkpoint), "lora": adapters}
                           for task, pipe in self.pipelines.items()}
        self.codec = text.tokenizer
        self.enhancer, self.enhancer_checkpoint = None, enhancer
        if enhancer is not None:
            self.enhancer, _ = load_for_command(lambda torch_dtype: SpeechEnhancementPipeline.from_pretrained(
                enhancer, torch_dtype=torch_dtype), runtime_args, progress=False)
        self.slots = {GENERATE_SLOT: Slot(GENERATE_SLOT, limits.max_queued),
                      ENHANCE_SLOT: Slot(ENHANCE_SLOT, limits.max_queued)}

    def health(self) -> dict:
        return {"models": {task: p["checkpoint"] for task, p in self.provenance.items()}
                | {"se": None if self.enhancer is None else str(self.enhancer_checkpoint)},
                "queued": {name: slot.pending for name, slot in self.slots.items()},
                "limits": asdict(self.limits), **self.runtime}

    # --- inputs -------------------------------------------------------------------------------

    def decode_upload(self, data: str, field: str = "audio") -> Path:
        """A base64-encoded audio file, size-checked and saved under the uploads folder."""
        limit = int(self.limits.max_upload_mb * 2 ** 20)
        if len(data) > limit * 4 // 3 + 4:
            raise DashflowError(f"{field} is over the {self.limits.max_upload_mb:g} MB upload limit")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise DashflowError(f"{field} is not base64: send the audio file's bytes base64-encoded") from None
        if not raw:
            raise DashflowError(f"{field} is empty")
        path = self.uploads / f"{secrets.token_hex(8)}-{field}"
        path.write_bytes(raw)
        return path

    def read_upload(self, path: Path, sample_rate: int, field: str = "audio"):
        """wav [S] at ``sample_rate``; audio errors name the field, not the server's file."""
        from dashflow.audio import load_audio

        try:
            return load_audio(path, sample_rate, max_seconds=self.limits.max_seconds)
        except DashflowError as exc:
            raise DashflowError(str(exc).replace(str(path), field)) from None

    def output_path(self, kind: str) -> Path:
        return self.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(4)}.wav"

    # --- jobs -----------------------------------------------------------------------------------

    def generate_job(self, request: GenerateRequest, audio: Path | None = None):
        """Check ``request`` (``audio``: its uploaded clip) and return (slot, Job); DashflowError if bad."""
        from dashflow.generation.cli.generate import (
            check_finite,
            check_settings,
            clip_sidecar,
            read_prompts,
            steering_arguments,
        )

        from dashflow.audio import save_audio
        from dashflow.cli import write_sidecar

        limits, pipe = self.limits, self.pipelines[request.task]
        [prompt] = read_prompts(Namespace(prompt=request.prompt, batch=None))
        if len(prompt) > limits.max_prompt_chars:
            raise DashflowError(f"prompt has {len(prompt)} characters; this server's limit is {limits.max_prompt_chars}")
        if request.duration is not None and request.duration > limits.max_seconds:
            raise DashflowError(f"duration {request.duration:g} s is over this server's {limits.max_seconds:g} s limit")
        if request.steps > limits.max_steps:
            raise DashflowError(f"steps {request.steps} is over this server's limit of {limits.max_steps}")
        if (audio is None) != (request.audio_mode is None):
            raise DashflowError("audio and audio_mode go together (audio_mode: init, inpaint or continue)")
        if audio is not None:
            self.read_upload(audio, pipe.sample_rate)  # an unreadable clip is named as the upload
        clips = {flag: None for flag in AUDIO_MODES.values()}
        if request.audio_mode is not None:
            clips[AUDIO_MODES[request.audio_mode]] = str(audio)
        args = Namespace(negative=request.negative_prompt, cfg=request.cfg, steps=request.steps, seed=request.seed,
                         sway=-1.0, batch_size=1, duration=request.duration, strength=request.strength,
                         region=None if request.regions is None else [f"{s}:{e}" for s, e in request.regions],
                         window=None, window_overlap=None, lora=None, **clips)
        try:
            check_settings(args)
            steering, record = steering_arguments(args, pipe)
            pipe.check_inputs(prompt, request.duration, request.steps, request.cfg, **steering)
        except DashflowError as exc:
            raise DashflowError(api_message(exc).replace(str(audio), "audio")) from None
        if audio is not None:
            record["input_audio"] = "upload"
        seed = secrets.randbelow(2 ** 31) if request.seed is None else request.seed

        def run(job: Job) -> Result:
            def step_end(_, step, timestep, tensors):
                job.advance(step + 1, request.steps)
                return {}

            tic = time.perf_counter()
            result = pipe(prompt, request.duration, num_inference_steps=request.steps, guidance_scale=request.cfg,
                          seed=seed, callback_on_step_end=step_end, **steering)
            check_finite(result, prompt, request.cfg)
            path = self.output_path(request.task)
            save_audio(path, result.audios[0, :result.lengths[0]], result.sample_rate)
            sidecar = clip_sidecar(path, result, 0, prompt, {
                "duration_requested": request.duration, "steps": request.steps, "cfg": request.cfg, "sway": -1.0,
                "seed": seed, **record, **self.provenance[request.task], **self.runtime,
                "elapsed_seconds": round(time.perf_counter() - tic, 3)})
            write_sidecar(path, sidecar)
            return Result(path, sidecar)

        return self.slots[GENERATE_SLOT], Job(run, f"generate {prompt[:40]!r}", total=request.steps)

    def enhance_job(self, request: EnhanceRequest, audio: Path):
        from dashflow.generation.cli.enhance import chunk_enhancer, enhance_settings

        from dashflow.audio_stream import stream_file
        from dashflow.cli import file_sha256, write_sidecar

        if self.enhancer is None:
            raise DashflowError("this server has no speech enhancer (start it with --enhancer SE_PIPELINE)")
        if request.steps > self.limits.max_steps:
            raise DashflowError(f"steps {request.steps} is over this server's limit of {self.limits.max_steps}")
        pipe = self.enhancer
        wav = self.read_upload(audio, pipe.sample_rate)
        settings = Namespace(**request.model_dump(exclude={"audio"}), chunk_seconds=10.0, overlap_seconds=1.0)
        chunks = -(-wav.numel() // int((settings.chunk_seconds - settings.overlap_seconds) * pipe.sample_rate))

        def run(job: Job) -> Result:
            enhance, done = chunk_enhancer(pipe, settings), iter(range(1, 2 ** 31))

            def enhance_chunk(chunk):
                out = enhance(chunk)
                job.advance(next(done), chunks)
                return out

            path = self.output_path("enhanced")
            info = stream_file(enhance_chunk, audio, path, model_rate=pipe.sample_rate,
                               chunk_seconds=settings.chunk_seconds, overlap_seconds=settings.overlap_seconds,
                               hop_multiple=pipe.samples_per_latent)
            sidecar = {"output": path.name, "input": "upload", "input_sha256": file_sha256(audio),
                       "seconds": info["seconds"], "sample_rate": info["sample_rate"],
                       **enhance_settings(pipe, self.enhancer_checkpoint, settings), **self.runtime}
            write_sidecar(path, sidecar)
            return Result(path, sidecar)

        return self.slots[ENHANCE_SLOT], Job(run, "enhance", total=chunks)

    def reconstruct_job(self, audio: Path):
        from dashflow.audio import save_audio
        from dashflow.cli import file_sha256, write_sidecar
        from dashflow.codecs import reconstruct

        codec = self.codec
        wav = self.read_upload(audio, codec.sample_rate)
        if wav.numel() < codec.min_samples:
            raise DashflowError(f"audio is {wav.numel() / codec.sample_rate:.3f} s long; the codec needs at least "
                                f"{codec.min_samples} samples")

        def run(job: Job) -> Result:
            path = self.output_path("reconstructed")
            save_audio(path, reconstruct(codec, wav), codec.sample_rate)
            sidecar = {"output": path.name, "input": "upload", "input_sha256": file_sha256(audio),
                       "seconds": wav.numel() / codec.sample_rate, "sample_rate": codec.sample_rate,
                       "codec": type(codec).__name__, "codec_hash": codec.weights_hash(), **self.runtime}
            write_sidecar(path, sidecar)
            return Result(path, sidecar)

        return self.slots[GENERATE_SLOT], Job(run, "reconstruct", total=1)

    def close(self) -> None:
        for slot in self.slots.values():
            slot.shutdown()



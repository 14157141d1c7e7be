"""The web side of ``dashflow serve``: the HTTP API (FastAPI routes) and the page (Gradio)
mounted beside it, both over one :class:`~dashflow.commands.serve_models.Models`."""

from __future__ import annotations

import asyncio
import json

import gradio as gr
import numpy as np
from dashflow.eval.plots import log_mel_image
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from matplotlib import colormaps

from dashflow.audio import load_audio
from dashflow.commands.serve_jobs import Busy, Cancelled, wait_for_job
from dashflow.commands.serve_models import EnhanceRequest, GenerateRequest, Models, ReconstructRequest
from dashflow.errors import DashflowError

# --- the HTTP API ---------------------------------------------------------------------------------

def build_app(models: Models):
    """The FastAPI app: the API routes, then the Gradio page mounted at ``/``."""
    app = FastAPI(title="dashflow", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    max_body = int(models.limits.max_upload_mb * 2 ** 20 * 4 / 3) + 2 ** 16

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HTTPRequest, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return error(422, "; ".join(problems))

    app.add_middleware(BodyLimit, limit=max_body,
                       message=f"request body is over this server's {models.limits.max_upload_mb:g} MB upload limit")

    async def answer(request: HTTPRequest, make_job, upload: str | None = None) -> Response:
        """Decode the upload (if any), check the request into a job, wait for it in its model's
        queue; the WAV with its sidecar, or one error line. The upload is removed in every case."""
        path = None
        try:
            if upload is not None:
                path = await asyncio.to_thread(models.decode_upload, upload)
            slot, job = await asyncio.to_thread(make_job, path)
            result = await wait_for_job(slot, job, disconnected=request.is_disconnected)
        except Busy as exc:
            return error(503, str(exc))
        except DashflowError as exc:
            return error(400, str(exc))
        except Cancelled as exc:
            return error(499, str(exc))  # nobody is listening
        finally:
            if path is not None:
                path.unlink(missing_ok=True)  # a job still running holds it open
        headers = {"X-Dashflow-Settings": json.dumps(result.sidecar, ensure_ascii=True),
                   "Content-Disposition": f'attachment; filename="{result.path.name}"'}
        return Response(result.path.read_bytes(), media_type="audio/wav", headers=headers)

    @app.post("/api/generate", response_class=Response)
    async def generate(body: GenerateRequest, request: HTTPRequest):
        return await answer(request, lambda path: models.generate_job(body, path), body.audio)

    @app.post("/api/enhance", response_class=Response)
    async def enhance(body: EnhanceRequest, request: HTTPRequest):
        return await answer(request, lambda path: models.enhance_job(body, path), body.audio)

    @app.post("/api/reconstruct", response_class=Response)
    async def reconstruct(body: ReconstructRequest, request: HTTPRequest):
        return await answer(request, models.reconstruct_job, body.audio)

    @app.get("/api/health")
    async def health():
        return models.health()

    page = build_page(models)
    return gr.mount_gradio_app(app, page, path="", max_file_size=f"{models.limits.max_upload_mb:g}mb",
                               footer_links=[], ssr_mode=False, allowed_paths=[str(models.out_dir)])


class BodyLimit:
    """ASGI middleware: an API request whose Content-Length is over ``limit`` bytes gets 413 before
    its body is read (a plain ASGI class: Starlette's ``BaseHTTPMiddleware`` would hide client
    disconnects from the routes)."""

    def __init__(self, app, limit: int, message: str):
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.limit:
                await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --- the page ------------------------------------------------------------------------------------

MODE_CHOICES = [("none", ""), ("audio-to-audio", "init"), ("inpaint regions", "inpaint"), ("continue", "continue")]


def spectrogram(path) -> np.ndarray | None:
    """An audio file -> RGB image [80, T, 3] uint8 of its log-mel spectrogram (low bins at the bottom)."""
    if not path:
        return None

    image = log_mel_image(load_audio(path).numpy(), 16000)
    scaled = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    return (colormaps["magma"](scaled[::-1])[..., :3] * 255).astype(np.uint8)


def parse_regions(text: str) -> list[tuple[float, float]] | None:
    """``"1:2.5, 3:4"`` -> [(1.0, 2.5), (3.0, 4.0)]; empty -> None."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        return [tuple(float(x) for x in part.split(":")) for part in parts]
    except ValueError:
        raise gr.Error(f"regions {text!r}: write START:END in seconds, comma-separated (e.g. 1:2.5, 3:4)") from None


async def run_job(make_job, progress: gr.Progress):
    """Check and run one job through its model's queue, reporting progress; errors as one line."""
    try:
        slot, job = make_job()
        progress((0, job.total), desc="queued" if slot.pending else "running")
        return await wait_for_job(slot, job, on_progress=lambda j: progress((j.step, j.total), desc="running"))
    except DashflowError as exc:
        raise gr.Error(str(exc)) from None
    except Cancelled:
        raise gr.Error("cancelled") from None


def build_page(models: Models) -> gr.Blocks:
    limits = models.limits

    async def generate(prompt, task, negative, duration, steps, cfg, seed, audio, mode, strength, regions,
                       progress=gr.Progress()):
        try:
            request = GenerateRequest(prompt=prompt, task=task, negative_prompt=negative.strip() or None,
                                      duration=duration or None, steps=int(steps), cfg=cfg,
                                      seed=None if seed is None or seed < 0 else int(seed),
                                      audio_mode=mode or None, strength=strength if mode == "init" else None,
                                      regions=parse_regions(regions) if mode == "inpaint" else None)
        except ValueError as exc:
            raise gr.Error(str(exc).splitlines()[0]) from None
        clip = audio if mode else None
        result = await run_job(lambda: models.generate_job(request, clip), progress)
        return str(result.path), spectrogram(result.path), result.sidecar

    async def enhance(audio, mode, progress=gr.Progress()):
        if not audio:
            raise gr.Error("upload or record noisy speech first")
        result = await run_job(lambda: models.enhance_job(EnhanceRequest(audio="", mode=mode), audio), progress)
        return spectrogram(audio), str(result.path), spectrogram(result.path), result.sidecar

    async def reconstruct(audio, progress=gr.Progress()):
        if not audio:
            raise gr.Error("upload or record audio first")
        result = await run_job(lambda: models.reconstruct_job(audio), progress)
        return spectrogram(audio), str(result.path), spectrogram(result.path), result.sidecar

    def before_after(label: str):
        with gr.Row():
            with gr.Column():
                before = gr.Image(label="input spectrogram", interactive=False)
            with gr.Column():
                after_audio = gr.Audio(label=label, type="filepath", interactive=False, elem_id=f"{label}-audio")
                after = gr.Image(label=f"{label} spectrogram", interactive=False)
        settings = gr.JSON(label="settings")
        return [before, after_audio, after, settings]

    with gr.Blocks(title="dashflow") as page:
        gr.Markdown("# dashflow\nText-to-audio and text-to-music with a flow-matching DiT on tokenizer latents; "
                    "speech enhancement; codec reconstruction. Every result keeps the settings that made it.")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="prompt", placeholder="a dog barking", max_length=limits.max_prompt_chars,
                                        elem_id="prompt")
                    task = gr.Radio([("text to audio", "tta"), ("text to music", "ttm")], value="tta", label="task")
                    negative = gr.Textbox(label="negative prompt (steer away from)", value="")
                    with gr.Row():
                        duration = gr.Number(label="seconds (0 = the model's choice)", value=0, minimum=0,
                                             maximum=limits.max_seconds)
                        seed = gr.Number(label="seed (-1 = random)", value=-1, precision=0)
                    steps = gr.Slider(1, limits.max_steps, value=25, step=1, label="steps")
                    cfg = gr.Slider(1, 15, value=5.0, step=0.5, label="guidance (CFG)")
                    with gr.Accordion("start from audio", open=False):
                        audio_in = gr.Audio(label="input clip", type="filepath")
                        mode = gr.Radio(MODE_CHOICES, value="", label="use it for")
                        strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="strength (audio-to-audio)")
                        regions = gr.Textbox(label="regions to regenerate, seconds (inpaint)", placeholder="1:2.5, 3:4")
                    with gr.Row():
                        run = gr.Button("Generate", variant="primary", elem_id="generate")
                        cancel = gr.Button("Cancel")
                with gr.Column():
                    audio_out = gr.Audio(label="result", type="filepath", interactive=False, elem_id="result-audio")
                    image_out = gr.Image(label="spectrogram", interactive=False)
                    settings_out = gr.JSON(label="settings")
            event = run.click(generate, [prompt, task, negative, duration, steps, cfg, seed, audio_in, mode, strength,
                                         regions], [audio_out, image_out, settings_out], api_visibility="private")
            cancel.click(None, cancels=[event], api_visibility="private")
        with gr.Tab("Enhance speech"):
            noisy = gr.Audio(label="noisy speech", type="filepath")
            se_mode = gr.Radio(["mask", "resynthesis"], value="mask", label="mode")
            se_run = gr.Button("Enhance", variant="primary")
            se_outputs = before_after("enhanced")
            se_run.click(enhance, [noisy, se_mode], se_outputs, api_visibility="private")
        with gr.Tab("Reconstruct"):
            original = gr.Audio(label="audio", type="filepath")
            rc_run = gr.Button("Encode + decode", variant="primary")
            rc_outputs = before_after("reconstruction")
            rc_run.click(reconstruct, [original], rc_outputs, api_visibility="private")
    page.queue(default_concurrency_limit=None, max_size=limits.max_queued * 2)
    return page

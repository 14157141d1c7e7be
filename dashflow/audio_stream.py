"""Stream an audio file of any length through a chunk model with bounded memory.

``stream_file`` reads the source in blocks (never the whole file), downmixes to mono,
resamples to the model rate with a streaming resampler, cuts overlapping chunks whose lengths
are multiples of the model's samples per latent frame, runs the model (an enhancer, a tokenizer
round trip) on each chunk, crossfades the overlaps with weights that sum to 1, resamples back to
the source rate and writes a mono file of exactly the source's length (in the format its suffix
names) to a temporary file that replaces the target only when everything succeeded. Memory is
O(chunk + block), independent of the file length.

    info = stream_file(model_fn, "noisy.wav", "clean.wav", chunk_seconds=10, overlap_seconds=1)
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from dashflow.errors import DashflowError, first_line, quiet_stderr
from dashflow.outputs import atomic_path, audio_format, check_audio_output

BLOCK_FRAMES = 1 << 16  # source frames read at a time (1.4 s at 48 kHz)
RESAMPLE_QUALITY = "VHQ"  # as dashflow.audio.resample
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, ValueError)  # what soundfile raises on bad files
WAV_LIMIT_BYTES = 2 ** 32 - 2 ** 16  # beyond this a RIFF size field overflows: write RF64

Enhancer = Callable[[torch.Tensor], torch.Tensor]
Resampler = Callable[..., np.ndarray]


@dataclass(frozen=True)
class ChunkPlan:
    """Chunk geometry at the model rate; all lengths are multiples of ``hop_multiple`` samples."""

    chunk: int
    overlap: int
    hop_multiple: int
    fade_in: np.ndarray = field(init=False, repr=False, compare=False)  # [overlap] float32

    def __post_init__(self) -> None:
        # raised-cosine fade; the fade-out is 1 - fade_in, so the two always sum to 1
        ramp = np.sin(0.5 * np.pi * (np.arange(self.overlap) + 0.5) / max(self.overlap, 1)) ** 2
        object.__setattr__(self, "fade_in", ramp.astype(np.float32))

    @property
    def step(self) -> int:
        """Distance between chunk starts."""
        return self.chunk - self.overlap

    def count(self, samples: int) -> int:
        """Number of chunks that cover ``samples`` model-rate samples."""
        return 1 if samples <= self.chunk else 1 + math.ceil((samples - self.chunk) / self.step)


def chunk_plan(model_rate: int = 16000, chunk_seconds: float = 10.0, overlap_seconds: float = 1.0,
               hop_multiple: int = 640) -> ChunkPlan:
    """Round chunk and overlap to multiples of ``hop_multiple`` and check them (cheap: call it early).

    A positive overlap is at least one hop; ``overlap_seconds = 0`` butts chunks together.
    """
    if not isinstance(model_rate, int) or model_rate <= 0:
        raise DashflowError(f"the model sample rate must be a positive integer, got {model_rate}")
    if not isinstance(hop_multiple, int) or hop_multiple <= 0:
        raise DashflowError(f"the chunk length multiple must be a positive integer, got {hop_multiple}")
    if not math.isfinite(chunk_seconds) or chunk_seconds <= 0:
        raise DashflowError(f"--chunk-seconds must be a positive number, got {chunk_seconds}")
    if not math.isfinite(overlap_seconds) or overlap_seconds < 0:
        raise DashflowError(f"--overlap-seconds must be zero or positive, got {overlap_seconds}")
    if chunk_seconds <= 2 * overlap_seconds:
        raise DashflowError(f"--chunk-seconds ({chunk_seconds}) must be more than twice "
                            f"--overlap-seconds ({overlap_seconds})")
    chunk = max(1, round(chunk_seconds * model_rate / hop_multiple)) * hop_multiple
    overlap_hops = round(overlap_seconds * model_rate / hop_multiple)
    overlap = (max(1, overlap_hops) if overlap_seconds > 0 else 0) * hop_multiple
    if chunk <= 2 * overlap:
        raise DashflowError(
            f"--chunk-seconds {chunk_seconds} and --overlap-seconds {overlap_seconds} round to "
            f"{chunk / model_rate:g} s and {overlap / model_rate:g} s ({hop_multiple}-sample steps at "
            f"{model_rate} Hz): the chunk must be more than twice the overlap")
    return ChunkPlan(chunk, overlap, hop_multiple)


class OverlapAdd:
    """Cuts a model-rate stream into overlapping chunks, enhances them and crossfades the overlaps.

    ``push(x [n])`` returns the samples that are final so far; ``finish()`` returns the rest.
    Chunk k covers ``[k*step, k*step + chunk)``; the last one is shorter, zero-padded up to a
    multiple of ``hop_multiple`` for the enhancer and trimmed back. Holds < chunk + n samples.
    """

    def __init__(self, enhance: Enhancer, plan: ChunkPlan, name: str):
        self.enhance, self.plan, self.name = enhance, plan, name
        self.buffer = np.zeros(0, np.float32)  # unprocessed samples from the next chunk's start
        self.tail = np.zeros(0, np.float32)    # previous chunk's faded-out overlap
        self.chunks = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        self.buffer = np.concatenate([self.buffer, x])
        done = []
        while len(self.buffer) > self.plan.chunk:  # more samples follow, so this is not the last chunk
            done.append(self._run(self.buffer[:self.plan.chunk], last=False))
            self.buffer = self.buffer[self.plan.step:]
        return np.concatenate(done) if done else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        if self.buffer.size == 0:  # only when chunks butt together (no overlap) and end exactly
            if self.chunks == 0:
                raise DashflowError(f"{self.name}: no samples left after resampling to the model rate")
            return self.buffer
        out, self.buffer = self._run(self.buffer, last=True), np.zeros(0, np.float32)
        return out

    def _run(self, x: np.ndarray, last: bool) -> np.ndarray:
        n, overlap, multiple = len(x), self.plan.overlap, self.plan.hop_multiple
        padded = np.zeros(-(-n // multiple) * multiple, np.float32)
        padded[:n] = x
        with torch.inference_mode():
            result = self.enhance(torch.from_numpy(padded))
        if not isinstance(result, torch.Tensor) or tuple(result.shape) != padded.shape:
            got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise DashflowError(f"{self.name}: the enhancer returned {got} for a chunk of "
                                f"{len(padded)} samples (it must return the same shape)")
        y = result.detach().to("cpu", torch.float32).numpy()[:n].copy()
        if not np.isfinite(y).all():
            raise DashflowError(f"{self.name}: the enhancer returned NaN or infinite samples "
                                f"(chunk {self.chunks + 1})")
        if self.chunks > 0 and overlap:
            y[:overlap] = self.tail + y[:overlap] * self.plan.fade_in
        self.chunks += 1
        if last or not overlap:
            self.tail = np.zeros(0, np.float32)
            return y
        self.tail = y[n - overlap:] * (1.0 - self.plan.fade_in)
        return y[:n - overlap]


class ExactLengthWriter:
    """Writes mono float samples to ``out``, never past ``limit()`` frames, clipping for PCM."""

    def __init__(self, out: sf.SoundFile, name: str):
        self.out, self.name, self.written = out, name, 0
        self.clip = out.subtype not in FLOAT_SUBTYPES

    def write(self, samples: np.ndarray, limit: int) -> None:
        samples = samples[:max(0, limit - self.written)]
        if self.clip:
            samples = np.clip(samples, -1.0, 1.0)
        try:
            self.out.write(samples)
        except (OSError, sf.LibsndfileError) as exc:
            raise DashflowError(f"{self.name}: cannot write the output ({first_line(exc)})") from None
        self.written += len(samples)

    def pad_to(self, frames: int) -> None:
        """Zero-pad to ``frames`` (covers the resamplers' rounding of the length)."""
        self.write(np.zeros(max(0, frames - self.written), np.float32), frames)


def stream_file(enhance: Enhancer, source: str | os.PathLike, target: str | os.PathLike, *,
                model_rate: int = 16000, chunk_seconds: float = 10.0, overlap_seconds: float = 1.0,
                hop_multiple: int = 640, min_samples: int | None = None, output_rate: int | None = None,
                progress: bool = False) -> dict:
    """Run ``enhance`` over ``source`` into the mono ``target``, streaming: at the source's rate and
    length, or at ``output_rate`` (the source's duration, rounded to a sample).

    ``enhance`` maps one mono float32 chunk [S] at ``model_rate`` (S a multiple of
    ``hop_multiple``, a short last chunk zero-padded) to [S]; it is called once per chunk, in
    order. Sources shorter than ``min_samples`` at the model rate (default: one
    ``hop_multiple``) are refused. Returns ``{"frames",
    "sample_rate", "channels", "seconds", "chunks"}`` of the source. Raises DashflowError (one
    line) for bad settings, unreadable / empty / too short / non-finite audio or an unwritable
    target; then no output or temporary file is left and an existing target is untouched.
    """
    from tqdm.auto import tqdm

    plan = chunk_plan(model_rate, chunk_seconds, overlap_seconds, hop_multiple)
    source, target = Path(source), Path(target)
    with open_source(source) as reader:
        rate, channels, frames = reader.samplerate, reader.channels, reader.frames
        check_length(source, frames, rate, model_rate, hop_multiple if min_samples is None else min_samples)
        check_audio_output(target, [source])
        file_format, subtype = output_format(target, frames, reader.subtype in FLOAT_SUBTYPES)
        out_rate = output_rate or rate
        to_model, to_source = resampler(rate, model_rate), resampler(model_rate, out_rate)

        def out_frames(source_frames: int) -> int:
            return source_frames if out_rate == rate else (2 * source_frames * out_rate + rate) // (2 * rate)
        chunker = OverlapAdd(enhance, plan, str(source))
        expected = frames if rate == model_rate else (2 * frames * model_rate + rate) // (2 * rate)
        bar = tqdm(delay=1.0, total=plan.count(expected), desc=source.name, unit="chunk", file=sys.stderr,
                   disable=not progress, leave=False)
        read = 0
        with bar, ExitStack() as stack:
            try:
                tmp = stack.enter_context(atomic_path(target))
                out = stack.enter_context(sf.SoundFile(str(tmp), "w", samplerate=out_rate, channels=1,
                                                       subtype=subtype, format=file_format))
            except (OSError, sf.LibsndfileError) as exc:
                raise DashflowError(f"{target}: cannot write the output ({first_line(exc)})") from None
            writer = ExactLengthWriter(out, str(target))
            while True:
                block = read_block(reader, source)
                if not len(block):
                    break
                if not np.isfinite(block).all():
                    bad = read + int(np.argmin(np.isfinite(block).all(axis=1)))
                    raise DashflowError(f"{source}: audio contains NaN or infinite samples "
                                        f"(first at {bad / rate:.3f} s)")
                read += len(block)
                mono = block[:, 0] if channels == 1 else block.mean(axis=1)
                enhanced = chunker.push(to_model(np.ascontiguousarray(mono, np.float32)))
                writer.write(to_source(enhanced), out_frames(read))  # output lags input; only the final flush reaches it
                bar.update(chunker.chunks - bar.n)
            if read == 0:
                raise DashflowError(f"{source}: audio file is empty")
            enhanced = np.concatenate([chunker.push(to_model(np.zeros(0, np.float32), last=True)),
                                       chunker.finish()])
            writer.write(to_source(enhanced, last=True), out_frames(read))
            writer.pad_to(out_frames(read))
            bar.total = chunker.chunks  # the header's frame count may have been an estimate
            bar.update(chunker.chunks - bar.n)
    return {"frames": read, "sample_rate": rate, "channels": channels, "seconds": read / rate,
            "chunks": chunker.chunks}


def open_source(path: Path) -> sf.SoundFile:
    """Open ``path`` for block reading; one-line errors for missing or undecodable files."""
    if not path.is_file():
        raise DashflowError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with quiet_stderr():
            return sf.SoundFile(str(path))
    except DECODE_ERRORS as exc:
        raise DashflowError(f"{path}: cannot read audio ({first_line(exc)})") from None


def read_block(reader: sf.SoundFile, path: Path) -> np.ndarray:
    """Next block [n, channels] float32 (n = 0 at the end)."""
    try:
        with quiet_stderr():
            return reader.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
    except DECODE_ERRORS as exc:
        raise DashflowError(f"{path}: cannot decode audio ({first_line(exc)})") from None


def check_length(path: Path, frames: int, rate: int, model_rate: int, min_samples: int) -> None:
    """Empty files and files shorter than ``min_samples`` at the model rate raise."""
    if frames <= 0 or rate <= 0:
        raise DashflowError(f"{path}: audio file is empty")
    if frames * model_rate < min_samples * rate:
        raise DashflowError(f"{path}: {frames / rate:.3f} s is too short for the model (the minimum is "
                            f"{min_samples / model_rate:.3f} s)")


def output_format(target: Path, frames: int, float_source: bool) -> tuple[str, str]:
    """(format, subtype) for ``target``'s suffix: a float source stays float in WAV (RF64 when
    the data would overflow a WAV's 4 GiB size fields), 24-bit in FLAC; else 16-bit PCM; Vorbis for .ogg."""
    named = audio_format(target)
    if named == "OGG":
        return named, "VORBIS"
    if named == "FLAC":
        return named, "PCM_24" if float_source else "PCM_16"
    subtype = "FLOAT" if float_source else "PCM_16"
    width = 4 if float_source else 2
    return ("RF64" if frames * width > WAV_LIMIT_BYTES else "WAV"), subtype


def resampler(rate_in: int, rate_out: int) -> Resampler:
    """``f(x [n], last=False) -> y [m]``: a soxr stream, or the identity when the rates match."""
    if rate_in == rate_out:
        return lambda x, last=False: x
    return soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality=RESAMPLE_QUALITY).resample_chunk

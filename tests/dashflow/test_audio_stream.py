"""The streaming enhancement engine: exact lengths and rates, crossfades that sum to 1, chunk
alignment, bounded memory and one-line errors that leave no output behind."""

from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dashflow import audio_stream
from dashflow.audio_stream import chunk_plan, output_format, stream_file
from dashflow.errors import DashflowError
from tests.conftest import chirp, noise, tone

HOP = 640


def write(path: Path, wav: np.ndarray, sr: int = 16000, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), wav, sr, subtype=subtype)
    return path


def read(path: Path) -> tuple[np.ndarray, sf._SoundFileInfo]:
    return sf.read(str(path), dtype="float32")[0], sf.info(str(path))


class Recorder:
    """An enhancer that records each chunk it sees and applies ``fn`` to it."""

    def __init__(self, fn=lambda x: x):
        self.fn, self.chunks = fn, []

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        assert chunk.dtype == torch.float32 and chunk.dim() == 1
        self.chunks.append(chunk.clone())
        return self.fn(chunk)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("subtype, tol", [("FLOAT", 1e-6), ("PCM_16", 1e-4)])
def test_identity_reproduces_input_at_the_model_rate(tmp_path, subtype, tol):
    wav = tone(440.0, 25.0) + noise(25.0, amp=0.05)
    wav = np.concatenate([wav, wav[:123]])  # a length that is a multiple of nothing
    source = write(tmp_path / "in.wav", wav, subtype=subtype)
    info = stream_file(Recorder(), source, tmp_path / "out.wav", chunk_seconds=4.0, overlap_seconds=0.5)
    out, meta = read(tmp_path / "out.wav")
    original, _ = read(source)
    assert info == {"frames": len(wav), "sample_rate": 16000, "channels": 1, "seconds": len(wav) / 16000,
                    "chunks": 7}
    assert (meta.samplerate, meta.channels, meta.frames, meta.subtype) == (16000, 1, len(wav), subtype)
    np.testing.assert_allclose(out, original, atol=tol)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stereo_at_other_rates_comes_back_mono_at_the_same_rate_and_length(tmp_path, rate):
    seconds = 12.3
    stereo = np.stack([tone(440.0, seconds, rate), chirp(200.0, 3000.0, seconds, rate)], axis=1)
    source = write(tmp_path / "in.wav", stereo, rate, subtype="PCM_16")
    recorder = Recorder()
    info = stream_file(recorder, source, tmp_path / "out.wav", chunk_seconds=4.0, overlap_seconds=0.5)
    out, meta = read(tmp_path / "out.wav")
    mix = read(source)[0].mean(axis=1)
    assert (meta.samplerate, meta.channels, meta.frames, meta.subtype) == (rate, 1, len(stereo), "PCM_16")
    assert info["channels"] == 2 and info["frames"] == len(stereo)
    # the enhancer saw the 16 kHz mix; apart from the resamplers' edges the round trip is transparent
    assert sum(len(c) for c in recorder.chunks) >= seconds * 16000
    edge = rate // 20
    np.testing.assert_allclose(out[edge:-edge], mix[edge:-edge], atol=2e-4)


def test_gain_halves_the_signal_everywhere_including_overlaps(tmp_path):
    wav = noise(20.0, amp=0.3, seed=3)
    source = write(tmp_path / "in.wav", wav)
    stream_file(lambda x: 0.5 * x, source, tmp_path / "out.wav", chunk_seconds=3.0, overlap_seconds=1.0)
    np.testing.assert_allclose(read(tmp_path / "out.wav")[0], 0.5 * wav, atol=1e-6)


def test_crossfade_weights_sum_to_one_and_blend_smoothly(tmp_path):
    source = write(tmp_path / "in.wav", noise(14.0, seed=1))
    stream_file(torch.ones_like, source, tmp_path / "ones.wav", chunk_seconds=3.0, overlap_seconds=1.0)
    np.testing.assert_allclose(read(tmp_path / "ones.wav")[0], 1.0, atol=1e-6)

    calls = []

    def chunk_index(x: torch.Tensor) -> torch.Tensor:  # chunk k returns the constant k
        calls.append(len(x))
        return torch.full_like(x, float(len(calls) - 1))

    stream_file(chunk_index, source, tmp_path / "index.wav", chunk_seconds=3.0, overlap_seconds=1.0)
    out = read(tmp_path / "index.wav")[0]
    plan = chunk_plan(16000, 3.0, 1.0, HOP)
    assert np.diff(out).min() > -1e-6  # a monotone ramp from chunk to chunk (up to rounding), no jumps back
    for k in range(1, len(calls)):
        start = k * plan.step
        np.testing.assert_array_equal(out[start - plan.step + plan.overlap:start], k - 1)  # chunk k-1 alone
        fade = out[start:start + plan.overlap]
        assert fade[0] < k - 1 + 0.01 and fade[-1] > k - 0.01 and np.all((fade > k - 1 - 1e-6) & (fade < k + 1e-6))


def test_chunks_start_on_multiples_of_the_hop_and_only_the_last_is_padded(tmp_path):
    frames = 300_001
    ramp = (np.arange(frames) * 1e-6).astype(np.float32)  # each sample encodes its own index
    source = write(tmp_path / "in.wav", ramp)
    recorder = Recorder()
    # 3.33 s and 0.37 s round to 83 and 9 frames of 640 samples
    stream_file(recorder, source, tmp_path / "out.wav", chunk_seconds=3.33, overlap_seconds=0.37)
    plan = chunk_plan(16000, 3.33, 0.37, HOP)
    assert (plan.chunk, plan.overlap) == (83 * HOP, 9 * HOP)
    starts = [round(float(c[0]) / 1e-6) for c in recorder.chunks]
    assert starts == [k * plan.step for k in range(len(recorder.chunks))]
    assert all(s % HOP == 0 for s in starts) and all(len(c) % HOP == 0 for c in recorder.chunks)
    assert all(len(c) == plan.chunk for c in recorder.chunks[:-1])
    last, real = recorder.chunks[-1], frames - starts[-1]
    assert plan.overlap < real < len(last) and len(last) == math.ceil(real / HOP) * HOP
    assert torch.all(last[real:] == 0) and torch.all(last[:real] > 0)
    np.testing.assert_allclose(read(tmp_path / "out.wav")[0], ramp, atol=1e-6)


def test_file_shorter_than_one_chunk_is_one_padded_call(tmp_path):
    wav = tone(300.0, 1.5)
    source = write(tmp_path / "in.wav", wav)
    recorder = Recorder()
    info = stream_file(recorder, source, tmp_path / "out.wav")  # default 10 s chunks
    assert [len(c) for c in recorder.chunks] == [38 * HOP] and info["chunks"] == 1
    np.testing.assert_allclose(read(tmp_path / "out.wav")[0], wav, atol=1e-6)


def test_zero_overlap_butts_chunks_together(tmp_path):
    wav = noise(12.0, seed=5)  # exactly three 4 s chunks
    source = write(tmp_path / "in.wav", wav)
    recorder = Recorder(lambda x: -x)
    info = stream_file(recorder, source, tmp_path / "out.wav", chunk_seconds=4.0, overlap_seconds=0.0)
    assert info["chunks"] == 3 and [len(c) for c in recorder.chunks] == [64000] * 3
    np.testing.assert_allclose(read(tmp_path / "out.wav")[0], -wav, atol=1e-6)


def test_memory_is_bounded_independent_of_file_length(tmp_path, monkeypatch):
    blocks = []
    original_read = sf.SoundFile.read

    def recording_read(self, frames=-1, *args, **kwargs):
        data = original_read(self, frames, *args, **kwargs)
        blocks.append((frames, len(data)))
        return data

    monkeypatch.setattr(sf.SoundFile, "read", recording_read)
    peaks, longest = {}, {}
    for seconds in (30, 300):
        source = tmp_path / f"{seconds}.wav"
        with sf.SoundFile(str(source), "w", samplerate=22050, channels=2, subtype="PCM_16") as f:
            for i in range(seconds // 10):
                f.write(np.stack([noise(10.0, 22050, seed=i), tone(220.0, 10.0, 22050)], axis=1))
        blocks.clear()
        recorder = Recorder(lambda x: 0.5 * x)
        tracemalloc.start()
        info = stream_file(recorder, source, tmp_path / f"{seconds}_out.wav", chunk_seconds=4.0,
                            overlap_seconds=0.5)
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert info["frames"] == seconds * 22050
        longest[seconds] = max(len(c) for c in recorder.chunks)
        assert all(0 < requested <= audio_stream.BLOCK_FRAMES for requested, _ in blocks)
        assert sum(got for _, got in blocks) == seconds * 22050  # read piecewise, never whole
        recorder.chunks.clear()
    assert longest[30] == longest[300] == 64000
    # traced allocations (numpy buffers included) do not grow with a 10x longer file
    assert peaks[300] < 1.5 * peaks[30]


def test_progress_bar_goes_to_stderr_with_the_chunk_total_once_work_passes_a_second(tmp_path, capsys):
    source = write(tmp_path / "in.wav", noise(10.0))
    stream_file(Recorder(), source, tmp_path / "fast.wav", chunk_seconds=4.0, overlap_seconds=0.5, progress=True)
    assert capsys.readouterr().err == ""  # under a second: no bar

    def slow(chunk: torch.Tensor) -> torch.Tensor:
        time.sleep(0.45)
        return chunk

    stream_file(slow, source, tmp_path / "a.wav", chunk_seconds=4.0, overlap_seconds=0.5, progress=True)
    captured = capsys.readouterr()
    assert "/3" in captured.err and "chunk" in captured.err and captured.out == ""
    stream_file(slow, source, tmp_path / "b.wav", chunk_seconds=4.0, overlap_seconds=0.5)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fn, needle", [
    (lambda x: x[:-1], "returned (63999,) for a chunk of 64000"),
    (lambda x: x[None], "returned (1, 64000)"),
    (lambda x: x.numpy(), "returned ndarray"),
    (lambda x: x * float("nan"), "NaN or infinite"),
])
def test_bad_enhancer_output_raises_and_leaves_the_target_untouched(tmp_path, fn, needle):
    source = write(tmp_path / "in.wav", noise(9.0))
    target = write(tmp_path / "out.wav", tone(100.0, 0.5))
    before = target.read_bytes()
    with pytest.raises(DashflowError) as exc:
        stream_file(fn, source, target, chunk_seconds=4.0, overlap_seconds=0.5)
    assert_one_line(exc, str(source), needle)
    assert target.read_bytes() == before and leftovers(tmp_path) == []


def test_nan_in_the_middle_is_found_while_streaming_and_nothing_is_written(tmp_path):
    wav = noise(30.0)
    wav[20 * 16000 + 5] = np.nan
    source = write(tmp_path / "in.wav", wav)
    recorder = Recorder()
    with pytest.raises(DashflowError) as exc:
        stream_file(recorder, source, tmp_path / "out.wav", chunk_seconds=4.0, overlap_seconds=0.5)
    assert_one_line(exc, str(source), "NaN or infinite", "20.000 s")
    assert len(recorder.chunks) >= 3  # earlier chunks were already processed and written to the temp file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_a_decoding_error_mid_file_leaves_nothing(tmp_path, monkeypatch):
    source = write(tmp_path / "in.wav", noise(12.0))
    original_read, calls = sf.SoundFile.read, []

    def failing_read(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise sf.LibsndfileError(0, "Internal psf_fseek() failed.\nmore detail")
        return original_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", failing_read)
    with pytest.raises(DashflowError) as exc:
        stream_file(Recorder(), source, tmp_path / "out.wav", chunk_seconds=4.0, overlap_seconds=0.5)
    assert_one_line(exc, str(source), "cannot decode audio (Internal psf_fseek() failed.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_empty_corrupt_missing_and_too_short_files_give_one_line(tmp_path):
    write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    write(tmp_path / "short.wav", tone(440.0, 0.02))
    cases = {"empty.wav": "audio file is empty", "corrupt.wav": "cannot read audio",
             "missing.wav": "no such file", "short.wav": "0.020 s is too short for the model (the minimum is 0.040 s"}
    for name, needle in cases.items():
        with pytest.raises(DashflowError) as exc:
            stream_file(Recorder(), tmp_path / name, tmp_path / f"out_{name}")
        assert_one_line(exc, str(tmp_path / name), needle)
        assert not (tmp_path / f"out_{name}").exists()
    assert leftovers(tmp_path) == []


def test_a_file_of_exactly_one_model_frame_at_another_rate_is_enough(tmp_path):
    source = write(tmp_path / "in.wav", noise(0.04, 44100), 44100)
    info = stream_file(Recorder(), source, tmp_path / "out.wav")
    assert info["frames"] == 1764 and read(tmp_path / "out.wav")[1].frames == 1764


@pytest.mark.parametrize("settings, needle", [
    ({"chunk_seconds": 2.0, "overlap_seconds": 1.0}, "more than twice"),
    ({"chunk_seconds": 0.0}, "--chunk-seconds must be a positive"),
    ({"chunk_seconds": float("nan")}, "--chunk-seconds must be a positive"),
    ({"overlap_seconds": -0.5}, "--overlap-seconds must be zero or positive"),
    ({"hop_multiple": 0}, "multiple must be a positive integer"),
    ({"model_rate": -16000}, "sample rate must be a positive integer"),
    ({"chunk_seconds": 0.1, "overlap_seconds": 0.04}, "round to 0.08 s and 0.04 s"),
])
def test_bad_settings_raise_before_anything_is_read(tmp_path, settings, needle):
    with pytest.raises(DashflowError) as exc:
        stream_file(Recorder(), tmp_path / "not-even-there.wav", tmp_path / "out.wav", **settings)
    assert_one_line(exc, needle)


def test_bad_targets_raise_and_keep_the_source(tmp_path):
    source = write(tmp_path / "in.wav", noise(2.0))
    before = source.read_bytes()
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {source: "is an input file", tmp_path / "folder.wav": "is a folder",
             tmp_path / "out.mp4": "cannot write audio with suffix '.mp4'",
             tmp_path / "file" / "out.wav": "is a file, not a folder"}
    for target, needle in cases.items():
        with pytest.raises(DashflowError) as exc:
            stream_file(Recorder(), source, target)
        assert_one_line(exc, str(target), needle)
    assert source.read_bytes() == before and leftovers(tmp_path) == []


def test_huge_outputs_switch_to_rf64():
    wav = Path("out.wav")
    assert output_format(wav, 10 * 60 * 48000, False) == ("WAV", "PCM_16")
    assert output_format(wav, 2 ** 31, False) == ("RF64", "PCM_16")
    assert output_format(wav, 2 ** 30, True) == ("RF64", "FLOAT")


def test_the_suffix_names_the_written_format(tmp_path):
    source = write(tmp_path / "in.wav", noise(2.0))
    for name, container in (("out.flac", "FLAC"), ("out.ogg", "OGG"), ("out.wav", "WAV")):
        stream_file(Recorder(), source, tmp_path / name, chunk_seconds=4.0, overlap_seconds=0.5)
        info = sf.info(str(tmp_path / name))
        assert info.format == container and info.frames == 32000

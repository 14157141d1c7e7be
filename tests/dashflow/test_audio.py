"""dashflow.audio: every clip comes back mono 16 kHz float32, bad files give one named error."""

import os
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from dashflow.audio import load_audio, save_audio
from dashflow.errors import quiet_stderr
from dashflow.audio_stream import stream_file
from dashflow.errors import DashflowError
from dashflow.manifests import list_audio_files
from tests.conftest import tone, write_wav


def test_resamples_and_mixes_down(tmp_path):
    left, right = tone(440, 1.0, sr=44100), tone(440, 1.0, sr=44100, amp=0.1)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), sr=44100)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.numel() - 16000) <= 1
    # the mixdown is the channel mean: amplitude (0.3 + 0.1) / 2 and still a 440 Hz tone
    assert wav.abs().max().item() == pytest.approx(0.2, abs=0.01)
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.numel() - 440) < 2


@pytest.mark.parametrize("case", ["empty", "nan", "garbage", "missing", "too_long"])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    elif case == "nan":
        data = tone(440, 0.5)
        data[100] = np.nan
        sf.write(str(path), data, 16000, subtype="FLOAT")
    elif case == "garbage":
        path.write_bytes(b"RIFF not really a wave file")
    elif case == "too_long":
        write_wav(path, tone(440, 2.0))
    with pytest.raises(DashflowError) as info:
        load_audio(path, max_seconds=1.0 if case == "too_long" else 3600.0)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path):
    path = save_audio(tmp_path / "out.wav", torch.tensor(tone(440, 0.5)))
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_audio(path, object())  # not audio: the write fails
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    assert load_audio(path).numel() == 8000


def test_list_audio_files_sorted_and_filtered(tmp_path):
    for name in ("b.wav", "a.flac", "notes.txt", "sub/c.ogg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_audio_files(tmp_path)] == ["a.flac", "b.wav", "c.ogg"]
    with pytest.raises(DashflowError):
        list_audio_files(tmp_path / "nope")


def test_atomic_write_uses_the_umask_mode(tmp_path):
    import os
    path = save_audio(tmp_path / "shared.wav", torch.zeros(160))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def garbage_mp3(path, decodable: bool = False):
    """Random bytes with MPEG frame headers: every 417 bytes mpg123 decodes them (printing errors as
    it goes); every 1000 bytes its probe fails, printing "Illegal Audio-MPEG-Header" notes."""
    data = bytearray(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    for start in range(0, len(data), 417 if decodable else 1000):
        data[start:start + 4] = b"\xff\xfb\x90\x64"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_decoder_notes_stay_off_stderr(tmp_path, capfd):
    bad, noisy = garbage_mp3(tmp_path / "bad.mp3"), garbage_mp3(tmp_path / "noisy.mp3", decodable=True)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(bad))
    if "Illegal Audio-MPEG-Header" not in capfd.readouterr().err:
        pytest.skip("this libsndfile's MP3 decoder prints nothing to silence; the silencing itself is "
                    "covered by test_quiet_stderr_restores_descriptor_2 (C-level writes to fd 2)")
    for read in (load_audio, lambda path: stream_file(lambda chunk: chunk, path, tmp_path / "copy.wav")):
        with pytest.raises(DashflowError, match="bad.mp3: cannot read audio"):
            read(bad)
        read(noisy)  # decodes, while mpg123 complains about every frame
    assert sf.info(str(tmp_path / "copy.wav")).frames > 0
    assert capfd.readouterr().err == ""


def test_quiet_stderr_restores_descriptor_2(capfd):
    with quiet_stderr():
        os.write(2, b"C library note\n")
        with quiet_stderr():
            os.write(2, b"nested\n")
        os.write(2, b"still quiet\n")
    os.write(2, b"after\n")
    with pytest.raises(ValueError), quiet_stderr():
        raise ValueError("raised inside")
    os.write(2, b"restored\n")
    assert capfd.readouterr().err == "after\nrestored\n"


def test_quiet_stderr_lasts_until_the_last_thread_leaves(capfd):
    inside, first_left = threading.Barrier(2), threading.Event()

    def first():
        with quiet_stderr():
            inside.wait()
        first_left.set()

    def second():
        with quiet_stderr():
            inside.wait()
            first_left.wait()
            os.write(2, b"still quiet\n")

    threads = [threading.Thread(target=run) for run in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    os.write(2, b"back\n")
    assert capfd.readouterr().err == "back\n"

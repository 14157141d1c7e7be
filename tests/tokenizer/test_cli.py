"""`dashflow reconstruct` with a tiny random tokenizer: files, folders, demo signal, bad input."""

import numpy as np
import pytest
import soundfile as sf
import torch
from dashflow.tokenizer import DashengTokenizer
from dashflow.tokenizer import cli as tokenizer_cli

from dashflow.cli import main
from tests.conftest import chirp, tone, write_wav

SR = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tok") / "tiny"
    DashengTokenizer.from_preset("tiny").save_pretrained(folder)
    return str(folder)


def _read(path):
    wav, sr = sf.read(str(path), dtype="float32")
    return wav, sr


@pytest.mark.parametrize("samples", [100, 16000, 23_456])
def test_file_round_trip_keeps_length(tmp_path, checkpoint, samples):
    source = write_wav(tmp_path / "in.wav", tone(440, samples / SR))
    assert main(["reconstruct", str(source), "-o", str(tmp_path / "out.wav"), "--checkpoint", checkpoint,
                 "--device", "cpu"]) == 0
    wav, sr = _read(tmp_path / "out.wav")
    assert sr == SR and wav.shape == (samples,) and np.isfinite(wav).all()


def test_file_into_an_existing_folder_keeps_its_name(tmp_path, checkpoint):
    source = write_wav(tmp_path / "speech.wav", tone(440, 0.5))
    (tmp_path / "out").mkdir()
    assert main(["reconstruct", str(source), "-o", str(tmp_path / "out"), "--checkpoint", checkpoint]) == 0
    assert _read(tmp_path / "out" / "speech.wav")[0].shape == (8000,)


def test_stereo_44k_is_mixed_down_and_resampled(tmp_path, checkpoint):
    stereo = np.stack([tone(440, 1.5, sr=44100), chirp(200, 3000, 1.5, sr=44100)], axis=1)
    source = write_wav(tmp_path / "stereo.wav", stereo, sr=44100)
    assert main(["reconstruct", str(source), "-o", str(tmp_path / "out.wav"), "--checkpoint", checkpoint]) == 0
    wav, sr = _read(tmp_path / "out.wav")
    assert sr == SR and wav.ndim == 1 and wav.shape[0] == 24000


def test_folder_mode_skips_bad_files_and_keeps_good_outputs(tmp_path, checkpoint, capsys):
    source = tmp_path / "clips"
    write_wav(source / "a.wav", tone(330, 1.0))
    write_wav(source / "sub" / "b.flac", chirp(100, 4000, 0.7))
    write_wav(source / "empty.wav", np.zeros(0, np.float32))
    sf.write(str(source / "nan.wav"), np.full(8000, np.nan, np.float32), SR, subtype="FLOAT")
    (source / "garbage.wav").write_bytes(b"RIFF....not audio")
    out = tmp_path / "recon"
    assert main(["reconstruct", str(source), "-o", str(out), "--checkpoint", checkpoint]) == 2
    err = capsys.readouterr().err
    for bad in ("empty.wav", "nan.wav", "garbage.wav"):
        assert bad in err
    assert "3 of 5 files failed" in err
    assert _read(out / "a.wav")[0].shape == (16000,)
    assert _read(out / "sub" / "b.wav")[0].shape == (11200,)
    assert sorted(p.name for p in out.rglob("*.wav")) == ["a.wav", "b.wav"]


def test_demo_signal_writes_input_and_output(tmp_path, checkpoint):
    out = tmp_path / "demo" / "recon.wav"
    assert main(["reconstruct", "--demo-signal", "-o", str(out), "--checkpoint", checkpoint]) == 0
    recon, sr = _read(out)
    source, _ = _read(tmp_path / "demo" / "recon_input.wav")
    assert sr == SR and recon.shape == source.shape == (int(tokenizer_cli.DEMO_SECONDS * SR),)
    assert 0.4 < np.abs(source).max() <= 0.5


def test_demo_signal_is_a_chord_then_a_chirp():
    wav = tokenizer_cli.demo_signal()
    first, second = np.abs(np.fft.rfft(wav[:SR])), np.abs(np.fft.rfft(wav[-SR:]))
    assert sorted(np.argsort(first)[-3:]) == [262, 330, 392]  # 1 Hz bins: the C-E-G chord
    assert (second[3100:5900] > 0.1 * second.max()).mean() > 0.8  # last second of the sweep to 6 kHz


@pytest.mark.parametrize("make,args,match", [
    (lambda d: (d / "bad.wav").write_bytes(b"junk"), ["bad.wav"], "bad.wav: cannot read audio"),
    (lambda d: None, ["missing.wav"], "missing.wav: no such file"),
    (lambda d: None, [], "either an INPUT"),
    (lambda d: write_wav(d / "x.wav", tone(440, 0.5)), ["x.wav", "--demo-signal"], "either an INPUT"),
    (lambda d: write_wav(d / "x.wav", tone(440, 0.5)), ["x.wav", "--device", "tpu9"], "not a torch device"),
    (lambda d: write_wav(d / "x.wav", tone(440, 0.5)), ["x.wav", "--checkpoint", "nowhere"], "nowhere: codec folder not found"),
])
def test_bad_invocations_print_one_error_line(tmp_path, checkpoint, capsys, make, args, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    if "--checkpoint" not in args:
        args = [*args, "--checkpoint", checkpoint]
    assert main(["reconstruct", *args, "-o", str(tmp_path / "out.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0]
    assert not (tmp_path / "out.wav").exists()


def test_without_bundled_tokenizer_the_error_names_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tokenizer_cli, "default_checkpoint", lambda: None)
    write_wav(tmp_path / "x.wav", tone(440, 0.5))
    assert main(["reconstruct", str(tmp_path / "x.wav"), "-o", str(tmp_path / "y.wav")]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_default_checkpoint_is_the_bundled_demo_tokenizer_when_present(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr(tokenizer_cli, "default_checkpoint", lambda: checkpoint)
    write_wav(tmp_path / "x.wav", tone(440, 0.5))
    assert main(["reconstruct", str(tmp_path / "x.wav"), "-o", str(tmp_path / "y.wav")]) == 0
    assert _read(tmp_path / "y.wav")[0].shape == (8000,)

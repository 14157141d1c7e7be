"""`dashflow cache-latents` + LatentCache with a tiny random DashengTokenizer and synthetic clips."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from dashflow.generation.cli.cache_latents import cache_latents_command, register
from dashflow.generation.training import latent_cache
from dashflow.generation.training.latent_cache import (
    INFO_NAME,
    LatentCache,
    latent_filename,
)
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.audio import load_audio
from dashflow.cli import build_parser, run_guarded
from dashflow.errors import DashflowError
from dashflow.manifests import write_manifest
from tests.conftest import chirp, noise, tone, write_wav

ATOL = 1e-5  # a clip in a zero-padded batch vs alone: fp32 rounding only
GOOD = ("tone", "chirp", "noise/long")


def tiny_tokenizer(folder, seed: int) -> DashengTokenizer:
    torch.manual_seed(seed)
    model = DashengTokenizer.from_preset("tiny").eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture()
def setup(tmp_path):
    """A tokenizer folder, a manifest of three good clips (0.7-2.3 s), a corrupt file and a 10 ms clip."""
    audio = tmp_path / "audio"
    write_wav(audio / "tone.wav", tone(440, 0.7))
    write_wav(audio / "chirp.wav", chirp(200, 3000, 1.3, sr=22050), sr=22050)
    write_wav(audio / "noise.wav", noise(2.3))
    (audio / "bad.wav").write_bytes(b"RIFF this is not audio")
    write_wav(audio / "short.wav", tone(440, 0.01))
    records = [{"audio_id": "tone", "audio": str(audio / "tone.wav"), "caption": "a tone"},
               {"audio_id": "bad", "audio": str(audio / "bad.wav")},
               {"audio_id": "chirp", "audio": str(audio / "chirp.wav")},
               {"audio_id": "short", "audio": str(audio / "short.wav")},
               {"audio_id": "noise/long", "audio": str(audio / "noise.wav")}]
    manifest = write_manifest(records, tmp_path / "train.jsonl")
    tokenizer = tiny_tokenizer(tmp_path / "tok", seed=0)
    return tmp_path, manifest, tokenizer


def run(tmp_path, manifest, *extra: str) -> int:
    """`dashflow cache-latents ...` through this module's parser alone (as dashflow.cli runs it)."""
    parser = argparse.ArgumentParser(prog="dashflow")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cache-latents", "--manifest", str(manifest), "--tokenizer",
                              str(tmp_path / "tok"), "--out", str(tmp_path / "cache"), "--device", "cpu",
                              *extra])
    return run_guarded(lambda: args.handler(args))


def test_registered_with_the_dashflow_cli():
    args = build_parser().parse_args(["cache-latents", "--manifest", "m.jsonl", "--tokenizer", "tok",
                                      "--out", "cache"])
    assert args.handler is cache_latents_command
    assert (args.batch_size, args.num_workers, args.dtype, args.device) == (8, 2, "float32", None)


def test_caches_good_clips_reports_bad_ones_and_exits_nonzero(setup, capsys):
    tmp_path, manifest, tokenizer = setup
    assert run(tmp_path, manifest, "--batch-size", "3") == 2  # default 2 reader processes
    err = capsys.readouterr().err
    assert "warning: skipped bad:" in err and "bad.wav" in err and "warning: skipped short:" in err
    assert err.strip().splitlines()[-1].startswith("error: 2 of 5 files failed (see warnings above); the other 3 are in ")

    cache = LatentCache.for_tokenizer(tmp_path / "cache", tokenizer)
    assert cache.folder.name == tokenizer.weights_hash()
    assert not cache.has("bad") and not cache.has("short")
    for audio_id, name in zip(GOOD, ("tone", "chirp", "noise")):
        wav = load_audio(tmp_path / "audio" / f"{name}.wav")
        with torch.inference_mode():
            alone = tokenizer.encode(wav[None]).latents[0]
        latents = cache.load(audio_id)
        assert latents.shape == (tokenizer.latent_length(wav.numel()), 64) == alone.shape
        torch.testing.assert_close(latents, alone, atol=ATOL, rtol=0)
        meta = cache.metadata(audio_id)
        assert float(meta["duration"]) == pytest.approx(wav.numel() / 16000)
        assert meta["sample_rate"] == "16000" and int(meta["frames"]) == latents.shape[0]
    info = json.loads((cache.folder / INFO_NAME).read_text())
    assert info["weights_hash"] == cache.weights_hash and info["latent_dim"] == 64
    assert not list(cache.folder.glob(".*.tmp"))


def test_rerun_skips_cached_clips(setup, monkeypatch):
    tmp_path, manifest, _ = setup
    run(tmp_path, manifest, "--num-workers", "0")
    folder = next(p for p in (tmp_path / "cache").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.safetensors")}
    (folder / latent_filename("chirp")).unlink()
    encoded = []
    original = DashengTokenizer.encode
    monkeypatch.setattr(DashengTokenizer, "encode",
                        lambda self, wav, lengths=None: encoded.append(len(wav)) or original(self, wav, lengths))
    assert run(tmp_path, manifest, "--num-workers", "0", "--batch-size", "8") == 2  # bad clips again
    assert encoded == [1]  # only the deleted clip
    for name, stamp in stamps.items():
        if name != latent_filename("chirp"):
            assert (folder / name).stat().st_mtime_ns == stamp
    assert (folder / latent_filename("chirp")).is_file()


def test_interrupted_run_keeps_finished_clips(setup, monkeypatch):
    tmp_path, manifest, tokenizer = setup
    calls = []
    original = latent_cache._encode_and_write

    def interrupt_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(latent_cache, "_encode_and_write", interrupt_second_batch)
    assert run(tmp_path, manifest, "--num-workers", "0", "--batch-size", "1") == 130
    cache = LatentCache.for_tokenizer(tmp_path / "cache", tokenizer)
    assert cache.has("tone") and cache.load("tone").shape[1] == 64
    assert not cache.has("chirp") and not list(cache.folder.glob(".*.tmp"))
    monkeypatch.setattr(latent_cache, "_encode_and_write", original)
    run(tmp_path, manifest, "--num-workers", "0")
    assert all(cache.has(audio_id) for audio_id in GOOD)


def test_other_tokenizer_gets_its_own_folder_and_a_clear_error(setup):
    tmp_path, manifest, tokenizer = setup
    run(tmp_path, manifest, "--num-workers", "0")
    other = tiny_tokenizer(tmp_path / "other", seed=1)
    stale = LatentCache.for_tokenizer(tmp_path / "cache", other)
    assert stale.weights_hash != tokenizer.weights_hash() and not stale.has("tone")
    with pytest.raises(DashflowError) as excinfo:
        stale.load("tone")
    message = str(excinfo.value)
    assert "\n" not in message and other.weights_hash() in message
    assert f"{tokenizer.weights_hash()} from {(tmp_path / 'tok').resolve()}" in message
    with pytest.raises(DashflowError, match="'missing': not in latent cache"):
        LatentCache.for_tokenizer(tmp_path / "cache", tokenizer).load("missing")


def test_bfloat16_storage(setup):
    tmp_path, manifest, tokenizer = setup
    run(tmp_path, manifest, "--num-workers", "0", "--dtype", "bfloat16")
    cache = LatentCache.for_tokenizer(tmp_path / "cache", tokenizer)
    stored = latent_cache.load_file(cache.path("tone"))["latents"]
    assert stored.dtype == torch.bfloat16
    loaded = cache.load("tone")
    assert loaded.dtype == torch.float32 and torch.equal(loaded, stored.float())


@pytest.mark.parametrize("audio_id", ["a/b", "..", ".hidden", "x" * 300, "ü ñ?*"])
def test_any_audio_id_maps_to_a_safe_unique_file(audio_id):
    name = latent_filename(audio_id)
    assert "/" not in name and not name.startswith(".") and len(name.encode()) <= 240
    assert name.endswith(".safetensors")
    assert latent_filename(audio_id + "y") != name


@pytest.mark.parametrize("extra, message", [(("--batch-size", "0"), "--batch-size must be at least 1"),
                                            (("--device", "cuda:9" if not torch.cuda.is_available() else "nope"),
                                             "--device")])
def test_bad_arguments_are_one_line(setup, capsys, extra, message):
    tmp_path, manifest, _ = setup
    assert run(tmp_path, manifest, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_manifest(setup, capsys):
    tmp_path, _, _ = setup
    assert run(tmp_path, tmp_path / "nope.jsonl") == 2
    assert "nope.jsonl: manifest not found" in capsys.readouterr().err

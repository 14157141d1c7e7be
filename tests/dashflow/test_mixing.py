"""On-the-fly SE mixing: exact SNRs, determinism, valid-length and clipping rules, partial noise
reads, synthetic reverberation, and the SE loaders (exact resume, workers, paired manifests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dashflow import mixing
from dashflow.data import write_shards
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest
from dashflow.mixing import (
    DRR_DB,
    PEAK,
    SPEECH_POWER,
    MixingConfig,
    NoiseMixer,
    build_se_loader,
    check_mixing,
    mix_at_snr,
    synthetic_rir,
)
from tests.conftest import chirp, noise, tone, write_wav

SR = 16000


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    clean, residual = clean.double(), (noisy - clean).double()
    return 10 * math.log10(float(clean.square().mean()) / float(residual.square().mean()))


def padded(wav: np.ndarray, total: int) -> torch.Tensor:
    return torch.nn.functional.pad(torch.from_numpy(wav), (0, total - wav.size))


@pytest.fixture()
def noises(tmp_path) -> list[dict]:
    """Three noise files: 5 s white at 16 kHz, 2 s stereo at 44.1 kHz, 0.1 s tone-burst at 16 kHz."""
    write_wav(tmp_path / "white.wav", noise(5.0, amp=0.1, seed=7))
    sf.write(str(tmp_path / "stereo.wav"),
             np.random.default_rng(8).standard_normal((88200, 2)).astype(np.float32) * 0.05, 44100)
    write_wav(tmp_path / "short.wav", noise(0.1, amp=0.2, seed=9) + tone(500, 0.1))
    return [{"audio_id": name, "audio": str(tmp_path / f"{name}.wav")}
            for name in ("white", "stereo", "short")]


@pytest.mark.parametrize("target", [-5.0, 0.0, 12.5, 30.0])
def test_mix_at_snr_hits_the_snr(target):
    clean = torch.from_numpy(tone(300, 1.0) + tone(1200, 1.0, amp=0.05))
    noisy = mix_at_snr(clean, torch.from_numpy(noise(1.0, seed=3)), target)
    assert noisy.dtype == torch.float32 and noisy.shape == clean.shape
    assert abs(snr_db(clean, noisy) - target) < 1e-3


def test_mix_at_snr_rejects_silence_and_shape_mismatch():
    wav = torch.from_numpy(noise(0.1))
    with pytest.raises(DashflowError, match="clean signal is silent"):
        mix_at_snr(torch.zeros_like(wav), wav, 5.0)
    with pytest.raises(DashflowError, match="noise signal is silent"):
        mix_at_snr(wav, torch.zeros_like(wav), 5.0)
    with pytest.raises(DashflowError, match="two \\[S\\] signals"):
        mix_at_snr(wav, wav[:-1], 5.0)


@pytest.mark.parametrize("changes, message", [
    ({"snr_db": [20.0, -5.0]}, "mixing.snr_db"),
    ({"snr_db": [5.0]}, "mixing.snr_db"),
    ({"reverb_prob": 1.5}, "mixing.reverb_prob"),
    ({"rt60": [0.0, 0.5]}, "mixing.rt60"),
    ({"rt60": [0.5, 9.0]}, "mixing.rt60"),
])
def test_check_mixing_rejects_bad_values(changes, message):
    check_mixing(MixingConfig())
    with pytest.raises(DashflowError, match=message) as error:
        check_mixing(MixingConfig(**changes))
    assert "\n" not in str(error.value)


def test_synthetic_rir_decays_60_db_in_rt60():
    for rt60 in (0.3, 0.8):
        rir = synthetic_rir(rt60, SR, np.random.default_rng(1))
        assert rir.shape == (round(rt60 * SR),) and rir.dtype == np.float32
        assert rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0
        tail = rir[1:].astype(np.float64)
        drr = -10 * math.log10(np.square(tail).sum())
        assert DRR_DB[0] - 1e-6 <= drr <= DRR_DB[1] + 1e-6
        # Schroeder backward integration: the -5 .. -25 dB slope extrapolated to 60 dB is rt60
        edc = 10 * np.log10(np.cumsum(np.square(tail)[::-1])[::-1] / np.square(tail).sum())
        t5, t25 = np.argmax(edc < -5) / SR, np.argmax(edc < -25) / SR
        assert abs(3 * (t25 - t5) - rt60) < 0.15 * rt60
    assert np.array_equal(synthetic_rir(0.5, SR, np.random.default_rng(2)),
                          synthetic_rir(0.5, SR, np.random.default_rng(2)))


def test_mixer_is_a_pure_function_of_seed_epoch_and_key(noises):
    clean = torch.from_numpy(tone(220, 1.0))
    mixer = NoiseMixer(noises, MixingConfig(reverb_prob=0.5), seed=4)
    first = mixer(clean, SR, epoch=2, key="clip")
    again = NoiseMixer(noises, MixingConfig(reverb_prob=0.5), seed=4)(clean, SR, 2, "clip")
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for other in (mixer(clean, SR, 3, "clip"), mixer(clean, SR, 2, "other"),
                  NoiseMixer(noises, MixingConfig(reverb_prob=0.5), seed=5)(clean, SR, 2, "clip")):
        assert not torch.equal(first[0], other[0])
    drawn = {mixer.draw(clean, SR, epoch, "clip").noise_id for epoch in range(30)}
    assert drawn == {"white", "stereo", "short"}


def test_noise_stays_inside_the_valid_length_at_the_drawn_snr(noises):
    length, total = 12000, SR
    clean = padded(tone(250, length / SR), total)
    mixer = NoiseMixer(noises, MixingConfig(snr_db=[0.0, 10.0]), seed=0)
    for epoch in range(6):
        mix = mixer.draw(clean, length, epoch, 0)
        assert mix.noisy.shape == mix.target.shape == (total,)
        assert mix.noisy[length:].abs().max() == 0 and mix.target[length:].abs().max() == 0
        assert torch.equal(mix.target, clean) and 0.0 <= mix.snr_db <= 10.0 and mix.rt60 is None
        assert abs(snr_db(mix.target[:length], mix.noisy[:length]) - mix.snr_db) < 1e-3


def test_clipping_guard_scales_both_and_keeps_the_snr(noises):
    clean = torch.from_numpy(tone(200, 1.0, amp=0.95))
    mix = NoiseMixer(noises[:1], MixingConfig(snr_db=[-5.0, -5.0]), seed=0).draw(clean, SR, 0, 0)
    assert abs(float(mix.noisy.abs().max()) - PEAK) < 1e-6
    scale = float(mix.target[100] / clean[100])
    assert scale < 0.8
    torch.testing.assert_close(mix.target, scale * clean, atol=1e-6, rtol=0)
    assert abs(snr_db(mix.target, mix.noisy) + 5.0) < 1e-3


def test_long_noise_is_read_partially(noises, monkeypatch):
    reads = []
    real_read = sf.read

    def spy(path, start=0, frames=-1, **kwargs):
        reads.append((Path(path).name, start, frames))
        return real_read(path, start=start, frames=frames, **kwargs)

    monkeypatch.setattr(mixing.sf, "read", spy)
    mixer = NoiseMixer(noises[:2], MixingConfig(), seed=0)
    clean = torch.from_numpy(tone(200, 0.5))
    segments = set()
    for epoch in range(8):
        mix = mixer.draw(clean, clean.numel(), epoch, "x")
        name, start, frames = reads[-1]
        rate = 44100 if name == "stereo.wav" else SR
        assert frames <= math.ceil(0.5 * rate) + 1 < sf.info(noises[0]["audio"]).frames
        assert torch.isfinite(mix.noisy).all()
        segments.add((name, start))
    assert len(segments) == 8 and {name for name, _ in segments} == {"white.wav", "stereo.wav"}


def test_noise_shorter_than_the_clip_is_looped(noises):
    mixer = NoiseMixer(noises[2:], MixingConfig(snr_db=[5.0, 5.0]), seed=0)
    mix = mixer.draw(torch.zeros(SR), SR, 0, "silent")
    added = (mix.noisy - mix.target).double()
    period = 1600  # the 0.1 s file
    torch.testing.assert_close(added[period:], added[:-period], atol=1e-6, rtol=0)
    # a silent crop gets its noise at the SNR below SPEECH_POWER (-25 dBFS)
    expected = SPEECH_POWER / 10 ** 0.5
    assert abs(float(added.square().mean()) / expected - 1) < 1e-4


def test_reverb_changes_the_noisy_not_the_dry_target(noises):
    clean = padded(chirp(100, 6000, 0.6, amp=0.1), SR)  # then 0.4 s of silence
    dry_mixer = NoiseMixer(noises[:1], MixingConfig(snr_db=[30.0, 30.0]), seed=1)
    wet_mixer = NoiseMixer(noises[:1], MixingConfig(snr_db=[30.0, 30.0], reverb_prob=1.0), seed=1)
    keep_mixer = NoiseMixer(noises[:1], MixingConfig(snr_db=[30.0, 30.0], reverb_prob=1.0,
                                                    dereverb=False), seed=1)
    dry, wet, keep = (m.draw(clean, SR, 0, "k") for m in (dry_mixer, wet_mixer, keep_mixer))
    assert dry.rt60 is None and 0.2 <= wet.rt60 <= 0.8 and keep.rt60 == wet.rt60
    assert torch.equal(wet.target, clean) and torch.equal(dry.target, clean)
    tail = slice(int(0.6 * SR), int(0.7 * SR))  # after the speech ends, the room still rings
    assert float(wet.noisy[tail].square().mean()) > 30 * float(dry.noisy[tail].square().mean())
    assert (keep.target - clean).abs().max() > 0.01     # dereverb=False: the target is wet
    assert abs(snr_db(keep.target, keep.noisy) - 30.0) < 1e-3  # SNR over the reverberant speech


def test_unreadable_noise_is_reported_by_name(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    for name in ("broken.wav", "gone.wav"):
        with pytest.raises(DashflowError, match=f"{name}: cannot read noise"):
            NoiseMixer([{"audio_id": "n", "audio": str(tmp_path / name)}], MixingConfig())
    with pytest.raises(DashflowError, match="no noise files"):
        NoiseMixer([], MixingConfig())


# ----------------------------------------------------------------------------- loaders

@pytest.fixture()
def se_corpus(tmp_path, noises) -> Path:
    """Six clean clips (0.3-2.3 s) in clean.jsonl, the three noises in noise.jsonl."""
    for i in range(6):
        write_wav(tmp_path / "clean" / f"c{i}.wav", tone(200 + 100 * i, 0.3 + 0.4 * i))
    lines = [{"audio_id": f"c{i}", "audio": f"clean/c{i}.wav", "speaker": f"s{i % 2}"}
             for i in range(6)]
    (tmp_path / "clean.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    write_manifest(noises, tmp_path / "noise.jsonl")
    return tmp_path


def batches(corpus: Path, start: int, count: int, workers: int = 0, **kwargs) -> list[dict]:
    loader = build_se_loader(corpus / "clean.jsonl", corpus / "noise.jsonl", 2, 0.5, seed=3,
                             start_step=start, num_workers=workers, **kwargs)
    return [b for b, _ in zip(loader, range(count))]


def same(a: list[dict], b: list[dict]) -> bool:
    return all(x["audio_id"] == y["audio_id"] and torch.equal(x["audio"], y["audio"])
               and torch.equal(x["noisy"], y["noisy"]) for x, y in zip(a, b, strict=True))


def test_mixing_loader_yields_target_and_noisy(se_corpus):
    epoch = batches(se_corpus, 0, 3, mixing=MixingConfig(snr_db=[0.0, 0.0]))
    assert sorted(i for b in epoch for i in b["audio_id"]) == [f"c{i}" for i in range(6)]
    lengths = []
    for batch in epoch:
        assert batch["audio"].shape == batch["noisy"].shape == (2, 8000)
        for row, length in enumerate(batch["length"].tolist()):
            assert batch["noisy"][row, length:].abs().sum() == 0
            assert abs(snr_db(batch["audio"][row, :length], batch["noisy"][row, :length])) < 1e-3
            lengths.append(length)
    assert min(lengths) == int(0.3 * SR) and max(lengths) == 8000  # c0 is shorter than a crop


def test_mixing_loader_resumes_exactly_with_any_workers(se_corpus):
    full = batches(se_corpus, 0, 7)  # 2 epochs and a bit of 3 batches
    assert same(batches(se_corpus, 0, 7, workers=2), full)
    assert same(batches(se_corpus, 4, 3, workers=2), full[4:])
    assert same(batches(se_corpus, 4, 3), full[4:])
    # the same clip in another epoch gets other noise
    ids = [(step, row, b["audio_id"][row]) for step, b in enumerate(full) for row in range(2)]
    c5 = [(step, row) for step, row, clip in ids if clip == "c5"]
    (s0, r0), (s1, r1) = c5[0], c5[1]
    assert not torch.equal(full[s0]["noisy"][r0] - full[s0]["audio"][r0],
                           full[s1]["noisy"][r1] - full[s1]["audio"][r1])


def test_paired_manifests_and_shards_load_without_noise(se_corpus):
    records = read_manifest(se_corpus / "clean.jsonl")
    for record in records:
        wav, _ = sf.read(record["audio"], dtype="float32")
        record["noisy"] = str(write_wav(se_corpus / "noisy" / Path(record["audio"]).name,
                                        wav + noise(wav.size / SR, amp=0.01)))
    paired = write_manifest(records, se_corpus / "paired.jsonl")
    batch = next(iter(build_se_loader(paired, None, 2, 0.5, seed=1)))
    assert batch["noisy"].shape == (2, 8000)
    assert 0 < float((batch["noisy"] - batch["audio"]).abs().max()) < 0.1
    write_shards(paired, se_corpus / "paired_shards", clips_per_shard=3)
    shard_batch = next(iter(build_se_loader(se_corpus / "paired_shards", None, 2, 0.5)))
    assert shard_batch["noisy"].shape == (2, 8000)


def test_unpaired_sources_without_noise_are_one_line_errors(se_corpus):
    with pytest.raises(DashflowError, match="6 record\\(s\\) have no 'noisy' path \\(first: 'c0'\\)"):
        build_se_loader(se_corpus / "clean.jsonl", None, 2, 0.5)
    write_shards(se_corpus / "clean.jsonl", se_corpus / "shards", clips_per_shard=3)
    with pytest.raises(DashflowError, match="shards hold no noisy audio"):
        build_se_loader(se_corpus / "shards", None, 2, 0.5)
    with pytest.raises(DashflowError, match="on-the-fly mixing reads a clean-speech manifest"):
        build_se_loader(se_corpus / "shards", se_corpus / "noise.jsonl", 2, 0.5)

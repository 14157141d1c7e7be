"""Pieces of the offline demo corpora: the splits by source, clips of natural event length, crops,
augmentation, speech at a chosen rate."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import soundfile as sf

from dashflow import demo_corpus
from dashflow.demo_corpus import (
    augment,
    babble,
    coloured_noise,
    event_clip,
    loud_crop,
    mains_hum,
    package_licences,
    split_by_source,
    split_three_ways,
    synthesize,
    trim,
)
from dashflow.errors import DashflowError

SR = 16000


def bark(seconds: float = 0.3, freq: float = 600.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (np.sin(2 * np.pi * freq * t) * np.hanning(t.size)).astype(np.float32)


def test_split_by_source_is_deterministic_disjoint_and_per_class():
    pairs = [("dog", f"dog_{i}") for i in range(14)] + [("cat", f"cat_{i}") for i in range(8)]
    held = split_by_source(pairs)
    assert held == split_by_source(list(reversed(pairs)))  # independent of order
    assert len({s for s in held if s.startswith("dog")}) == 4  # round(0.3 * 14)
    assert len({s for s in held if s.startswith("cat")}) == 3  # at least 3
    # adding a source to one class never moves another class's sources across the split
    more = split_by_source([*pairs, ("dog", "dog_new")])
    assert {s for s in more if s.startswith("cat")} == {s for s in held if s.startswith("cat")}


def test_event_clips_repeat_short_events_with_gaps_to_a_natural_length():
    rng = np.random.default_rng(0)
    for _ in range(20):
        clip, events = event_clip([bark(), bark(0.2, 800.0)], rng, seconds=(3.0, 6.0))
        assert 3.0 * SR <= clip.size <= 6.0 * SR and clip.dtype == np.float32
        assert events >= 4  # 0.2-0.3 s events with <= 0.8 s gaps: several barks in 3 s
        loud = np.abs(clip) > 0.05
        onsets = np.flatnonzero(loud[1:] & ~loud[:-1])
        assert len(onsets) >= 3  # silence between events, not one smeared block


def test_a_long_recording_is_cropped_not_repeated():
    long = ((np.arange(20 * SR) + 1) * 1e-6).astype(np.float64)  # a ramp: a crop reveals where it starts
    clip, events = event_clip([long], np.random.default_rng(2), seconds=(3.0, 6.0))
    assert events == 1 and 3.0 * SR <= clip.size <= 6.0 * SR
    gain = (clip[1] - clip[0]) / 1e-6
    start = round(clip[0] / gain / 1e-6) - 1
    np.testing.assert_allclose(clip, gain * long[start:start + clip.size], rtol=1e-6)


def test_augment_keeps_a_finite_clip_with_a_bounded_peak_and_names_what_it_did():
    rng = np.random.default_rng(3)
    clip = np.tile(bark(), 10)
    for _ in range(10):
        out, done = augment(clip, rng)
        assert np.isfinite(out).all() and 0.3 - 1e-6 <= np.abs(out).max() <= 0.9 + 1e-6
        assert abs(out.size - clip.size) <= 0.13 * clip.size  # +-2 semitones changes the length by < 13 %
        assert done[-1].startswith("peak")
    out, done = augment(clip, rng, semitones=0.0, reverb=0.0, noise=0.0)
    assert out.size == clip.size and len(done) == 1
    np.testing.assert_allclose(out / np.abs(out).max(), clip / np.abs(clip).max(), atol=1e-6)


def test_trim_cuts_quiet_edges():
    wav = np.concatenate([np.zeros(800), bark(), np.full(1600, 1e-5)]).astype(np.float32)
    assert trim(wav).size <= bark().size and trim(np.zeros(10, np.float32)).size == 0


def test_package_licences_of_an_absent_package_is_unknown():
    assert package_licences("no-such-package-here") == "unknown"


def test_split_three_ways_is_disjoint_per_label_seeded_and_order_free():
    pairs = [("dog", f"dog_{i}") for i in range(10)] + [("cat", f"cat_{i}") for i in range(3)]
    splits = split_three_ways(pairs, seed=0)
    assert splits == split_three_ways(list(reversed(pairs)), seed=0)
    assert set(splits) == {s for _, s in pairs}  # each source exactly once, so on one side only
    dogs = [splits[f"dog_{i}"] for i in range(10)]
    assert (dogs.count("train"), dogs.count("val"), dogs.count("test")) == (5, 2, 3)
    assert sorted(splits[f"cat_{i}"] for i in range(3)) == ["test", "train", "val"]  # one each
    assert any(split_three_ways(pairs, seed=s) != splits for s in range(1, 5))  # the seed matters
    with pytest.raises(DashflowError, match="needs 3"):
        split_three_ways([("cat", "a"), ("cat", "b"), ("dog", "c"), ("dog", "d"), ("dog", "e")])
    with pytest.raises(DashflowError, match="two labels"):
        split_three_ways([("cat", "a"), ("dog", "a")])


def test_loud_crop_lasts_one_to_three_seconds_and_avoids_silence():
    rng = np.random.default_rng(0)
    wav = np.zeros(20 * SR, np.float32)
    wav[14 * SR:17 * SR] = bark(3.0)  # 3 s of sound in 20 s of silence
    for _ in range(20):
        crop = loud_crop(wav, rng, tries=50)
        assert SR <= crop.size <= 3 * SR and crop.dtype == np.float32
        assert np.sqrt(np.mean(crop ** 2)) > 0.05
    short = loud_crop(bark(0.4), rng)
    assert short.size == SR and np.abs(short).max() > 0.5  # padded to 1 s, the sound kept


@pytest.mark.parametrize("engine, flag", [("flite", ["--setf", "duration_stretch=0.8000"]), ("espeak-ng", ["-s", "219"])])
def test_synthesize_passes_the_rate_to_the_engine_and_writes_16k(tmp_path, monkeypatch, engine, flag):
    commands = []

    def fake_run(command, **_):
        commands.append(command)
        out = command[command.index("-o" if engine == "flite" else "-w") + 1]
        sf.write(out, bark(0.5), 22050)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo_corpus.subprocess, "run", fake_run)
    assert synthesize(engine, "v", "stop", tmp_path / "a.wav", rate=1.25) == pytest.approx(8000 / 22050, abs=1e-3)
    synthesize(engine, "v", "stop", tmp_path / "b.wav")
    joined = [" ".join(c) for c in commands]
    assert " ".join(flag) in joined[0] and flag[0] not in commands[1]  # rate 1 leaves the command as it was
    assert sf.info(str(tmp_path / "a.wav")).samplerate == SR


def test_synthesize_sets_flites_mean_pitch_and_refuses_one_for_espeak(tmp_path, monkeypatch):
    commands = []

    def fake_run(command, **_):
        commands.append(command)
        sf.write(command[command.index("-o") + 1], bark(0.5), 16000)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo_corpus.subprocess, "run", fake_run)
    synthesize("flite", "slt", "stop", tmp_path / "a.wav", pitch_hz=130.0)
    assert commands[0][commands[0].index("--setf") + 1] == "int_f0_target_mean=130"
    with pytest.raises(DashflowError, match="flite only"):
        synthesize("espeak-ng", "en+m1", "stop", tmp_path / "b.wav", pitch_hz=130.0)
    assert len(commands) == 1  # refused before running anything


def test_new_classes_match_their_recordings_and_nothing_the_demo_knows():
    """The fine-tuning demo's classes (build_corpus.py --new-classes) take the packages' cow and sheep
    recordings, not a cowbell, a voice line called Coward, a music track or any demo class's file."""
    def label_of(path: str) -> list[str]:
        classes = {**demo_corpus.SFX, **demo_corpus.NEW_SFX}
        return [label for label, (_, pattern) in classes.items() if re.search(pattern, path, re.IGNORECASE)]

    games = "/usr/share/games"
    assert label_of(f"{games}/megaglest/techs/megapack/commondata/sounds/cow_select2.wav") == ["cow"]
    assert label_of("/usr/share/tuxpaint/stamps/animals/mammals/bovines/cow_white.ogg") == ["cow"]
    assert label_of(f"{games}/scorched3d/data/globalmods/apoc/data/wav/misc/moo.wav") == ["cow"]
    assert label_of(f"{games}/megaglest/techs/megapack/factions/persian/units/sheep/sounds/sheep10.wav") == ["sheep"]
    assert label_of(f"{games}/widelands/data/sound/farm/sheep_02.ogg") == ["sheep"]
    for other in ("/usr/share/sonic-pi/samples/drum_cowbell.flac", f"{games}/hedgewars/Data/Music/Sheep.ogg",
                  f"{games}/hedgewars/Data/Sounds/voices/Default/Coward.ogg",
                  f"{games}/megaglest/tilesets/pine_peat/sounds/mudchute_cow_1.ogg"):  # = tuxpaint cow_white
        assert label_of(other) == [], other
    for label in demo_corpus.NEW_SFX:
        assert label not in demo_corpus.SFX and len(demo_corpus.NEW_SFX[label][0]) == 4


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_has_unit_rms_and_the_asked_spectral_slope(exponent):
    wav = coloured_noise(exponent, 4 * SR, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(wav.size, 1 / SR)
    band = (freqs > 100) & (freqs < 4000)
    slope = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
    assert np.sqrt(np.square(wav).mean()) == pytest.approx(1.0)
    assert slope == pytest.approx(-exponent, abs=0.1)
    np.testing.assert_array_equal(wav, coloured_noise(exponent, 4 * SR, np.random.default_rng(0)))


@pytest.mark.parametrize("fundamental", [50.0, 60.0])
def test_mains_hum_peaks_at_its_fundamental_with_falling_harmonics(fundamental):
    wav = mains_hum(fundamental, 4 * SR, np.random.default_rng(1))
    power = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(wav.size, 1 / SR)
    def level(hz):
        return power[np.abs(freqs - hz) < 2].sum()
    assert freqs[power.argmax()] == pytest.approx(fundamental, abs=1)
    assert level(fundamental) > level(2 * fundamental) > level(5 * fundamental) > 100 * level(fundamental + 25)
    assert np.sqrt(np.square(wav).mean()) == pytest.approx(1.0)


def test_babble_sums_distinct_speakers_of_the_records_it_is_given(tmp_path):
    records = []
    for number, speaker in enumerate(["a", "b", "c", "d"]):
        for index in range(2):
            path = tmp_path / f"{speaker}{index}.wav"
            sf.write(path, bark(0.5, 300.0 + 100 * number) * (number + 1), SR)
            records.append({"audio_id": f"{speaker}/{index}", "audio": str(path), "speaker": speaker})
    wav, used = babble(records, 2 * SR, np.random.default_rng(0), voices=3)
    assert wav.shape == (2 * SR,) and np.sqrt(np.square(wav).mean()) == pytest.approx(1.0)
    assert len(used) == 3 and len({u.split("/")[0] for u in used}) == 3
    assert set(used) <= {r["audio_id"] for r in records}
    _, every = babble(records, SR, np.random.default_rng(0), voices=10)  # at most one voice per speaker
    assert sorted(u.split("/")[0] for u in every) == ["a", "b", "c", "d"]

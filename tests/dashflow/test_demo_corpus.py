"""Pieces of the offline demo corpora: the split by source, clips of natural event length, augmentation."""

from __future__ import annotations

import numpy as np

from dashflow.demo_corpus import (
    augment,
    event_clip,
    package_licences,
    split_by_source,
    trim,
)

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

"""recipes/demo/build_se_corpus.py: the synthetic training noises it adds to the SE corpus."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import soundfile as sf

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "build_se_corpus.py"
SR = 16000


def load_script():
    spec = importlib.util.spec_from_file_location("build_se_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_noises_are_written_with_records_and_attribution(tmp_path):
    script = load_script()
    speech = []
    for speaker in ("a", "b", "c", "d", "e", "f", "g"):
        path = tmp_path / "speech" / f"{speaker}.wav"
        path.parent.mkdir(exist_ok=True)
        t = np.arange(SR) / SR
        sf.write(path, 0.3 * np.sin(2 * np.pi * (200 + 30 * len(speech)) * t), SR)
        speech.append({"audio_id": f"{speaker}/000", "audio": str(path), "speaker": speaker})
    records, rows = script.build_synthetic_noise(tmp_path, speech)
    kinds = [r["type"] for r in records]
    assert kinds == ["white noise", "pink noise", "brown noise", "hum", "hum", "babble", "babble", "babble"]
    assert {r["source"] for r in records} == {"synthetic"}
    for record in records:
        wav, rate = sf.read(record["audio"])
        assert rate == SR and wav.size == round(script.SYNTHETIC_SECONDS * SR)
        assert 0.24 < np.abs(wav).max() <= 0.26  # peak -12 dBFS, as the attribution says
    assert [row[0] for row in rows] == [r["audio_id"] for r in records]
    babble_rows = [row for row in rows if row[0].startswith("synthetic_babble")]
    assert all(row[4].count("/000") == 6 for row in babble_rows)  # names the six utterances it sums
    again, _ = script.build_synthetic_noise(tmp_path / "again", speech)
    np.testing.assert_array_equal(sf.read(records[5]["audio"])[0], sf.read(again[5]["audio"])[0])


def test_extra_voices_read_training_phrases_and_keep_clear_of_the_test_voices(tmp_path, monkeypatch):
    script = load_script()
    spoken = []

    def fake_synthesize(engine, voice, text, path, rate=1.0, pitch_hz=None):
        spoken.append((engine, voice, pitch_hz, text))
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * np.ones(SR // 2), SR)
        return 0.5

    monkeypatch.setattr(script, "synthesize", fake_synthesize)
    train = [{"audio_id": f"slt/{i:03d}", "text": f"phrase number {i}"} for i in range(6)]
    records, rows = script.build_extra_speech(tmp_path, train, per_speaker=3)
    assert len(records) == 3 * len(script.EXTRA_SPEAKERS) == len(rows)
    assert {r["speaker"] for r in records} == set(script.EXTRA_SPEAKERS)
    assert {text for *_, text in spoken} <= {t["text"] for t in train}  # training phrases only
    for speaker in script.EXTRA_SPEAKERS:  # three distinct phrases each
        assert len({r["text"] for r in records if r["speaker"] == speaker}) == 3
    test_voices = {voice for name, (_, voice) in script.SPEAKERS.items() if name in script.TEST_SPEAKERS}
    assert not {voice for _, voice, _, _ in spoken} & test_voices
    assert not any(voice.endswith("+f4") for _, voice, _, _ in spoken)  # espeak_f4's variant, in any accent
    assert set(script.VAL_SPEAKERS) < set(script.EXTRA_SPEAKERS)
    pitched = [row for row in rows if row[0].startswith("slt_f0_130/")]
    assert pitched and all("at a mean pitch of 130 Hz reading the phrase of slt/" in row[4] for row in pitched)
    again, _ = script.build_extra_speech(tmp_path / "again", train, per_speaker=3)
    assert [r["text"] for r in again] == [r["text"] for r in records]  # deterministic

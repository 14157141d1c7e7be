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

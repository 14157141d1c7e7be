"""The feature cache is keyed by file content and embedder settings; bad files are excluded by name."""

from __future__ import annotations

import numpy as np
from dashflow.eval.features import FeatureCache, cache_key, extract

from tests.conftest import tone, write_wav


class CountingEmbedder:
    """Mean and length of the clip; counts its calls."""

    name = "counting"
    sample_rate = 16000

    def __init__(self, weights_sha256: str = "a" * 64):
        self.settings = {"sha256": weights_sha256, "sample_rate": self.sample_rate}
        self.calls = 0

    def __call__(self, wav, content_hash):
        self.calls += 1
        return {"stats": np.array([wav.mean(), wav.shape[0]], np.float32)}


def test_cache_hits_misses_on_changed_content_and_weights(tmp_path):
    clips = {"a": write_wav(tmp_path / "a.wav", tone(440, 0.5)), "b": write_wav(tmp_path / "b.wav", tone(220, 0.5))}
    cache = FeatureCache(tmp_path / "cache")
    embedder = CountingEmbedder()
    first = extract(clips, [embedder], cache)
    assert embedder.calls == 2 and not first.bad
    again = extract(clips, [embedder], cache)
    assert embedder.calls == 2  # both from the cache
    np.testing.assert_array_equal(again.features["counting"]["a"]["stats"], first.features["counting"]["a"]["stats"])
    write_wav(clips["a"], tone(440, 0.25))  # same name, new content: never stale
    changed = extract(clips, [embedder], cache)
    assert embedder.calls == 3 and changed.features["counting"]["a"]["stats"][1] == 4000
    other_weights = CountingEmbedder("b" * 64)
    assert cache_key(other_weights) != cache_key(embedder)
    extract(clips, [other_weights], cache)
    assert other_weights.calls == 2
    uncached = CountingEmbedder()
    extract(clips, [uncached], FeatureCache(None))
    extract(clips, [uncached], FeatureCache(None))
    assert uncached.calls == 4


def test_unreadable_and_empty_files_are_reported_not_zero_filled(tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(440, 0.5))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav file")
    header_only = write_wav(tmp_path / "header.wav", np.zeros(0, np.float32))
    embedder = CountingEmbedder()
    result = extract({"good": good, "empty": empty, "junk": junk, "header": header_only}, [embedder],
                     FeatureCache(tmp_path / "cache"))
    assert set(result.features["counting"]) == {"good"}
    assert set(result.bad) == {"empty", "junk", "header"}
    assert "junk.wav" in result.bad["junk"] and "empty" in result.bad["header"]
    assert embedder.calls == 1

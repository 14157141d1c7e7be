"""TextEmbeddingCache: same answers as the encoder, hits skip it, other weights never see old entries."""

from __future__ import annotations

import pytest
import torch
from dashflow.text_encoders import TextEmbeddingCache, load_text_encoder

from tests.text_encoders.conftest import CAPTIONS, save_official_layout

ATOL = 1e-5  # cached items were encoded in other batches (other padded lengths)


class CountingEncoder:
    """Records every batch the wrapped encoder is asked to encode."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []
        self._encode = encoder.encode
        encoder.encode = self

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return self._encode(prompts)


@pytest.fixture()
def encoder(t5_folder):
    return load_text_encoder(t5_folder)


def test_get_matches_encode_and_skips_hits(tmp_path, encoder):
    prompts = [CAPTIONS[0], "", CAPTIONS[1], CAPTIONS[0]]
    expected, expected_mask = encoder.encode(prompts)
    counter = CountingEncoder(encoder)
    cache = TextEmbeddingCache(tmp_path, encoder)
    emb, mask = cache.get(prompts)
    assert counter.calls == [[CAPTIONS[0], "", CAPTIONS[1]]]  # duplicates encoded once
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(emb, expected, atol=ATOL, rtol=0)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3

    again, again_mask = cache.get([CAPTIONS[1], CAPTIONS[2]])
    assert counter.calls[1:] == [[CAPTIONS[2]]]  # only the new prompt reaches the encoder
    fresh, fresh_mask = encoder.encode([CAPTIONS[1], CAPTIONS[2]])
    assert torch.equal(again_mask, fresh_mask)
    torch.testing.assert_close(again, fresh, atol=ATOL, rtol=0)


def test_misses_are_batched(tmp_path, encoder):
    counter = CountingEncoder(encoder)
    TextEmbeddingCache(tmp_path, encoder, batch_size=2).get(list(CAPTIONS[:5]))
    assert [len(call) for call in counter.calls] == [2, 2, 1]


def test_other_weights_never_read_old_entries(tmp_path, encoder, spiece_model):
    other_folder = tmp_path / "other"
    save_official_layout(other_folder, spiece_model, seed=1)
    other = load_text_encoder(other_folder)
    cache_folder = tmp_path / "cache"
    first, _ = TextEmbeddingCache(cache_folder, encoder).get(list(CAPTIONS[:3]))
    second, _ = TextEmbeddingCache(cache_folder, other).get(list(CAPTIONS[:3]))
    torch.testing.assert_close(second, other.encode(list(CAPTIONS[:3]))[0], atol=ATOL, rtol=0)
    assert not torch.allclose(first, second)
    assert len(list(cache_folder.rglob("*.safetensors"))) == 6


def test_damaged_entry_is_recomputed(tmp_path, encoder):
    cache = TextEmbeddingCache(tmp_path, encoder)
    expected, _ = cache.get([CAPTIONS[3]])
    cache.path(CAPTIONS[3]).write_bytes(b"not a safetensors file")
    counter = CountingEncoder(encoder)
    emb, _ = cache.get([CAPTIONS[3]])
    assert counter.calls == [[CAPTIONS[3]]]
    torch.testing.assert_close(emb, expected, atol=ATOL, rtol=0)
    assert cache.get([CAPTIONS[3]])[0].shape == expected.shape and len(counter.calls) == 1

"""One weight I/O: strict safetensors save / load and one weights hash, recorded at save time or
cached by file identity, so loading never hashes a recorded file and hashes an official one once."""

from __future__ import annotations

import os

import pytest
import torch
from dashflow.tokenizer.model import DashengTokenizer
from safetensors import safe_open
from safetensors.torch import save_file

from dashflow import weights
from dashflow.errors import DashflowError


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "HASH_CACHE", tmp_path / "cache" / "hashes.json")
    return weights.HASH_CACHE


@pytest.fixture(scope="module")
def tokenizer() -> DashengTokenizer:
    torch.manual_seed(0)
    return DashengTokenizer.from_preset("tiny")


def no_hashing(monkeypatch):
    def refuse(_tensors):
        raise AssertionError("hashed the weights again")

    monkeypatch.setattr(weights, "weights_hash", refuse)


def test_save_records_the_hash_and_load_trusts_it(tokenizer, tmp_path, monkeypatch):
    tokenizer.save_pretrained(tmp_path / "tok")
    expected = weights.weights_hash(tokenizer.state_dict().items())
    with safe_open(str(tmp_path / "tok" / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"weights_hash": expected}
    no_hashing(monkeypatch)
    assert DashengTokenizer.from_pretrained(tmp_path / "tok").weights_hash() == expected


def test_an_official_file_is_hashed_once_per_machine(tokenizer, tmp_path, monkeypatch, hash_cache):
    folder = tmp_path / "official"
    tokenizer.save_config(folder)
    save_file({k: v.contiguous() for k, v in tokenizer.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})  # as downloaded: no dashflow metadata
    first = DashengTokenizer.from_pretrained(folder).weights_hash()
    assert first == weights.weights_hash(tokenizer.state_dict().items()) and hash_cache.is_file()
    with monkeypatch.context() as patch:
        no_hashing(patch)
        assert DashengTokenizer.from_pretrained(folder).weights_hash() == first  # from the cache
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in tokenizer.state_dict().items()}
    save_file({k: v.contiguous() for k, v in changed.items()}, str(folder / "model.safetensors"))
    os.utime(folder / "model.safetensors", ns=(1, 1))  # a new identity even within the same mtime tick
    assert DashengTokenizer.from_pretrained(folder).weights_hash() != first


def test_weights_never_saved_are_hashed_as_held(tokenizer):
    model = DashengTokenizer.from_preset("tiny")
    before = model.weights_hash()
    with torch.no_grad():
        model.decoder.head.out.bias.add_(1.0)
    assert model.weights_hash() != before


def test_load_strict_names_every_kind_of_mismatch_in_one_line(tokenizer):
    state = dict(tokenizer.state_dict())
    del state["decoder.head.out.bias"]
    state["extra"] = torch.zeros(1)
    model = DashengTokenizer.from_preset("tiny")
    with pytest.raises(DashflowError) as info:
        weights.load_strict(model, state, "x.safetensors")
    message = str(info.value)
    assert "\n" not in message and "1 missing keys (first: decoder.head.out.bias)" in message
    assert "1 unexpected keys (first: extra)" in message and message.startswith("x.safetensors: ")


def test_save_is_deterministic(tokenizer, tmp_path):
    weights.save_weights(tokenizer.state_dict(), tmp_path / "a")
    weights.save_weights(tokenizer.state_dict(), tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()

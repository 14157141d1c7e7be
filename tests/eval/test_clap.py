"""CLAPScore: 10 s windows, cosine on fixed vectors, the transformers backend on a tiny random
ClapConfig, and the laion-clap glue (checkpoint loading) against a stand-in module."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from dashflow.eval.clap import (
    CLIP_SAMPLES,
    HFClap,
    LaionClap,
    clap_clip,
    cosine_scores,
    load_clap,
)
from dashflow.eval.embedders import ClapEmbedder

from dashflow.errors import DashflowError


def _quantised(x: np.ndarray) -> np.ndarray:
    return ((np.clip(x, -1, 1) * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def test_short_clips_are_repeat_padded():
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, 70000).astype(np.float32)  # 1.46 s at 48 kHz
    out = clap_clip(wav)
    assert out.shape == (CLIP_SAMPLES,)
    repeats = CLIP_SAMPLES // 70000  # 6 whole copies, then zeros
    np.testing.assert_array_equal(out[: repeats * 70000], np.tile(_quantised(wav), repeats))
    assert not out[repeats * 70000:].any()


def test_long_clips_are_cropped_reproducibly():
    wav = np.random.default_rng(1).uniform(-0.5, 0.5, 12 * 48000).astype(np.float32)
    np.testing.assert_array_equal(clap_clip(wav, "start"), _quantised(wav[:CLIP_SAMPLES]))
    a = clap_clip(wav, "random", seed=0, content_hash="ab" * 32)
    b = clap_clip(wav, "random", seed=0, content_hash="ab" * 32)
    np.testing.assert_array_equal(a, b)
    starts = {int(np.flatnonzero(np.isclose(_quantised(wav), c[0]))[0]) for c in
              (clap_clip(wav, "random", seed=s, content_hash="ab" * 32) for s in range(8))}
    assert len(starts) > 1  # the seed moves the window
    for seed in range(3):
        c = clap_clip(wav, "random", seed=seed, content_hash="cd" * 32)
        start = next(i for i in range(len(wav) - CLIP_SAMPLES + 1)
                     if np.array_equal(_quantised(wav[i:i + 4]), c[:4]))
        np.testing.assert_array_equal(c, _quantised(wav[start:start + CLIP_SAMPLES]))
    with pytest.raises(ValueError):
        clap_clip(wav, "middle")


def test_int16_round_trip_and_clipping():
    wav = np.full(CLIP_SAMPLES, 1.7, np.float32)
    assert clap_clip(wav)[0] == pytest.approx(1.0)
    x = np.float32(0.123456789)
    assert clap_clip(np.full(CLIP_SAMPLES, x))[0] == pytest.approx(int(x * 32767) / 32767, abs=1e-9)


def test_cosine_on_fixed_vectors():
    audio = np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    text = np.array([[1.0, 1.0], [6.0, 8.0], [-2.0, -2.0]])
    np.testing.assert_allclose(cosine_scores(audio, text), [1 / np.sqrt(2), 1.0, -1.0])


def test_transformers_backend_on_tiny_random_clap(tiny_clap):
    model = load_clap(tiny_clap)
    assert isinstance(model, HFClap)
    clips = torch.from_numpy(np.stack([clap_clip(np.random.default_rng(i).uniform(-0.3, 0.3, 96000))
                                       for i in range(2)]))
    audio = model.embed_audio(clips)
    assert audio.shape == (2, 16)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(model.embed_audio(clips[:1]), audio[:1], atol=1e-5, rtol=1e-5)  # no random is_longer
    text = model.embed_text(["a dog barks", "rain on a tin roof " * 40])  # the second is truncated to 77 tokens
    assert text.shape == (2, 16)
    torch.testing.assert_close(model.embed_text(["a dog barks"]), text[:1], atol=1e-5, rtol=1e-5)
    assert model.settings["backend"] == "transformers" and len(model.settings["sha256"]) == 64


def test_clap_embedder_records_crop_policy(tiny_clap):
    embedder = ClapEmbedder(load_clap(tiny_clap), crop="start", seed=3)
    out = embedder(np.random.default_rng(0).uniform(-0.3, 0.3, 12 * 48000).astype(np.float32), "0" * 64)
    assert out["embedding"].shape == (16,)
    assert embedder.settings["long_clips"] == "start 10 s crop" and embedder.settings["sample_rate"] == 48000


class _FakeClapModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.audio_projection = torch.nn.Linear(CLIP_SAMPLES // 48000, 4)
        self.text_projection = torch.nn.Linear(3, 4)


def _fake_laion(calls: list) -> types.ModuleType:
    module = types.ModuleType("laion_clap")

    class CLAP_Module(torch.nn.Module):
        def __init__(self, enable_fusion=False, device=None, amodel="HTSAT-tiny", tmodel="roberta"):
            super().__init__()
            calls.append(("init", enable_fusion, amodel))
            self.model = _FakeClapModel()

        def get_audio_embedding_from_data(self, x, use_tensor=False):
            calls.append(("audio", tuple(x.shape), use_tensor))
            pooled = x.reshape(x.shape[0], -1, 48000).mean(-1)
            return torch.nn.functional.normalize(self.model.audio_projection(pooled), dim=-1)

        def get_text_embedding(self, x, tokenizer=None, use_tensor=False):
            calls.append(("text", len(x), use_tensor))
            return torch.nn.functional.normalize(self.model.text_projection(torch.ones(len(x), 3)), dim=-1)

    module.CLAP_Module = CLAP_Module
    return module


def test_laion_backend_loads_checkpoint_safely(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "laion_clap", _fake_laion(calls))
    reference = _FakeClapModel()
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]  # dropped, as laion-clap does
    path = tmp_path / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "state_dict": state, "optimizer": {"param_groups": [{"lr": 1e-4}]}}, path)
    model = load_clap(path)
    assert isinstance(model, LaionClap) and calls[0] == ("init", False, "HTSAT-tiny")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.module.model.state_dict()[key], value)
    assert model.embed_audio(torch.zeros(2, CLIP_SAMPLES)).shape == (2, 4)
    assert calls[-1] == ("audio", (2, CLIP_SAMPLES), True)  # tensors in: no second int16 quantisation
    assert model.embed_text(["a", "b", "c"]).shape == (3, 4)
    # a checkpoint that does not fit is refused with the file's name
    torch.save({"state_dict": {"audio_projection.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(DashflowError, match="bad.pt"):
        load_clap(tmp_path / "bad.pt")


def test_laion_backend_without_package_and_missing_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "630k-audioset-best.pt"
    torch.save({"state_dict": {}}, path)
    monkeypatch.setitem(sys.modules, "laion_clap", None)
    with pytest.raises(DashflowError, match=r"dashflow\[clap\]"):
        load_clap(path)
    with pytest.raises(DashflowError, match="huggingface.co/lukewys/laion_clap"):
        load_clap(tmp_path / "absent.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DashflowError, match="config.json"):
        load_clap(tmp_path / "folder")

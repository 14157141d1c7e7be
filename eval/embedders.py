"""The embedders behind FAD (VGGish), FD/KL/IS (Cnn14), CLAPScore and the in-house classifier metrics,
with their recorded settings.

VGGish and Cnn14 see audio prepared as audioldm_eval (GitHub HEAD, used by UniFlow) prepares it:
mono at 16 kHz, DC removed (mean subtracted), right zero-padded to at least 2 s, no cropping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from dashflow.eval import clap as clap_lib
from dashflow.eval.cnn14 import Cnn14, cnn14_outputs
from dashflow.eval.features import Features
from dashflow.eval.inhouse import InhouseClassifier
from dashflow.eval.vggish import VGGish, vggish_embeddings
from dashflow.eval.weights import OFFICIAL, sha256_file

MIN_SAMPLES_16K = 32000
AUDIO_RULES = {"mono": "channel mean", "resampler": "soxr VHQ", "dc_removal": True,
               "min_length": "zero-pad to 2 s", "cropping": "none"}


def audioldm_prepare(wav: np.ndarray) -> np.ndarray:
    """16 kHz wav [S] -> DC-free wav [max(S, 32000)] (float32)."""
    wav = np.asarray(wav, dtype=np.float32)
    wav = wav - wav.mean()
    if wav.shape[0] < MIN_SAMPLES_16K:
        wav = np.pad(wav, (0, MIN_SAMPLES_16K - wav.shape[0]))
    return wav


def _weights_settings(key: str, path: Path, official_size: bool) -> dict[str, Any]:
    digest = sha256_file(path)
    return {"weights": path.name, "sha256": digest, "official_file": OFFICIAL[key].matches(digest),
            "official_architecture": official_size}


class VGGishEmbedder:
    """Clip -> ``{"frames": [N, 128]}`` pre-activation VGGish embeddings (0.96 s, no overlap)."""

    name = "vggish"
    sample_rate = 16000

    def __init__(self, weights: Path, device: torch.device):
        self.model = VGGish.from_weight_file(weights).to(device)
        self.device = device
        self.settings = {"model": "VGGish (torchvggish port), no PCA, pre-ReLU 128-d",
                         **_weights_settings("vggish", weights, self.model.is_official_size),
                         "sample_rate": self.sample_rate, "frames": "0.96 s, hop 0.96 s", **AUDIO_RULES}

    def __call__(self, wav: np.ndarray, content_hash: str) -> Features:
        return {"frames": vggish_embeddings(self.model, audioldm_prepare(wav), self.device)}


class Cnn14Embedder:
    """Clip -> ``{"features": [2048], "logits": [527]}`` from PANNs Cnn14 (16 kHz)."""

    name = "cnn14"
    sample_rate = 16000

    def __init__(self, weights: Path, device: torch.device):
        self.model = Cnn14.from_weight_file(weights).to(device)
        self.device = device
        self.settings = {"model": "PANNs Cnn14_16k, ReLU(fc1) 2048-d + 527 logits",
                         **_weights_settings("cnn14", weights, self.model.is_official_size),
                         "sample_rate": self.sample_rate, **AUDIO_RULES}

    def __call__(self, wav: np.ndarray, content_hash: str) -> Features:
        features, logits = cnn14_outputs(self.model, audioldm_prepare(wav), self.device)
        return {"features": features, "logits": logits}


class ClapEmbedder:
    """Clip -> ``{"embedding": [D]}`` in CLAP space from a 10 s 48 kHz window."""

    name = "clap"
    sample_rate = clap_lib.SAMPLE_RATE

    def __init__(self, model: clap_lib.LaionClap | clap_lib.HFClap, crop: str = "random", seed: int = 0):
        if crop not in clap_lib.CROP_POLICIES:
            raise ValueError(f"unknown CLAP crop policy {crop!r}")
        self.model, self.crop, self.seed = model, crop, seed
        self.settings = {**model.settings, "sample_rate": self.sample_rate, "clip": "10 s",
                         "long_clips": f"{crop} 10 s crop" + (f" (seed {seed}, per clip content)"
                                                               if crop == "random" else ""),
                         "short_clips": "repeat-pad", "int16_round_trip": True,
                         "mono": AUDIO_RULES["mono"], "resampler": AUDIO_RULES["resampler"]}

    def __call__(self, wav: np.ndarray, content_hash: str) -> Features:
        clip = clap_lib.clap_clip(wav, self.crop, self.seed, content_hash)
        return {"embedding": self.model.embed_audio(torch.from_numpy(clip)[None])[0].numpy()}


class InhouseEmbedder:
    """Clip -> ``{"embedding": [E], "logits": [C]}`` from an in-house classifier folder, averaged over
    its windows."""

    name = "inhouse"
    sample_rate = 16000

    def __init__(self, folder: Path, device: torch.device):
        self.classifier = InhouseClassifier.load(folder, device)
        self.settings = self.classifier.settings()

    def __call__(self, wav: np.ndarray, content_hash: str) -> Features:
        embedding, logits = self.classifier.outputs(wav)
        return {"embedding": embedding, "logits": logits}

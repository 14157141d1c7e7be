"""CLAPScore as the papers compute it: mean cosine between a caption and its clip in LAION-CLAP space.

Audio is read at 48 kHz and made exactly 10 s here, the same way for both backends: longer clips
get a 10 s crop (``random``: laion-clap's ``rand_trunc`` made reproducible by seeding it with the
clip's content hash; ``start``: the first 10 s), shorter clips are tiled ``int(480000 / len)``
times and zero-padded (``repeatpad``), and samples round-trip through int16 as in laion-clap's
``get_audio_embedding_from_data``. Captions are tokenised to 77 tokens (pad / truncate).

Backends:
- ``laion``: a LAION-CLAP ``.pt`` checkpoint (``630k-audioset-best.pt``, HTSAT-tiny + RoBERTa)
  through the ``laion-clap`` package (extra ``clap``), imported only when used. We load the
  checkpoint ourselves with ``weights_only=True`` (laion-clap's ``load_ckpt`` unpickles). Offline,
  ``import laion_clap`` needs the ``roberta-base``, ``bert-base-uncased`` and ``facebook/bart-base``
  tokenizers in the Hugging Face cache and ``HF_HUB_OFFLINE=1`` (LAION-AI/CLAP#171).
- ``hf``: a local Hugging Face ``ClapModel`` folder (``config.json`` + weights + processor files).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from dashflow.eval.weights import load_state_dict, sha256_file, sha256_folder

from dashflow.errors import DashflowError
from dashflow.weights import load_strict

SAMPLE_RATE = 48000
CLIP_SAMPLES = 480000
TEXT_TOKENS = 77
CROP_POLICIES = ("random", "start")


def clap_clip(wav: np.ndarray, crop: str = "random", seed: int = 0, content_hash: str = "0") -> np.ndarray:
    """48 kHz wav [S] -> exactly 10 s [480000] float32 (crop or repeat-pad, int16 round trip)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.shape[0] == 0:
        raise ValueError("empty clip")
    if wav.shape[0] > CLIP_SAMPLES:
        overflow = wav.shape[0] - CLIP_SAMPLES
        if crop == "random":
            start = int(np.random.default_rng([seed, int(content_hash[:15], 16)]).integers(0, overflow + 1))
        elif crop == "start":
            start = 0
        else:
            raise ValueError(f"unknown CLAP crop policy {crop!r}; use one of {CROP_POLICIES}")
        wav = wav[start:start + CLIP_SAMPLES]
    elif wav.shape[0] < CLIP_SAMPLES:
        wav = np.tile(wav, CLIP_SAMPLES // wav.shape[0])
        wav = np.pad(wav, (0, CLIP_SAMPLES - wav.shape[0]))
    quantised = (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)
    return (quantised / 32767.0).astype(np.float32)


def cosine_scores(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of audio [N, D] and text [N, D] embeddings -> [N] (float64)."""
    a = np.asarray(audio, dtype=np.float64)
    t = np.asarray(text, dtype=np.float64)
    return (a * t).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(t, axis=1))


class LaionClap:
    """LAION-CLAP ``.pt`` checkpoint through the ``laion-clap`` package (HTSAT-tiny, no fusion)."""

    backend = "laion-clap"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", amodel: str = "HTSAT-tiny"):
        try:
            import laion_clap
        except ImportError:
            raise DashflowError(f"{path}: a LAION-CLAP .pt checkpoint needs the laion-clap package "
                                "(pip install 'dashflow[clap]'), or pass a Hugging Face CLAP folder") from None
        self.path = Path(path)
        self.module = laion_clap.CLAP_Module(enable_fusion=False, device=str(device), amodel=amodel)
        state = load_state_dict(self.path)
        model_keys = set(self.module.model.state_dict())
        # laion-clap 1.1.7 deletes this buffer unconditionally (CLAP#127); keep it only if the model has it
        state = {k: v for k, v in state.items() if k in model_keys or not k.endswith("embeddings.position_ids")}
        load_strict(self.module.model, state, self.path)
        self.module.eval()
        self.settings = {"backend": self.backend, "model": f"LAION-CLAP {amodel} + RoBERTa",
                         "checkpoint": self.path.name,
                         "sha256": sha256_file(self.path)}

    @torch.no_grad()
    def embed_audio(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, 480000] at 48 kHz -> L2-normalised embeddings [B, D]."""
        return self.module.get_audio_embedding_from_data(clips, use_tensor=True).float().cpu()

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """captions -> L2-normalised embeddings [B, D]."""
        return self.module.get_text_embedding(list(texts), use_tensor=True).float().cpu()


class HFClap:
    """A local Hugging Face ``ClapModel`` folder (e.g. a copy of ``laion/clap-htsat-unfused``)."""

    backend = "transformers"

    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu"):
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self.path = Path(folder)
        try:
            self.model = ClapModel.from_pretrained(self.path).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.features = ClapFeatureExtractor.from_pretrained(self.path)
        except (OSError, ValueError) as exc:
            raise DashflowError(f"{self.path}: cannot load a CLAP model ({str(exc).splitlines()[0]})") from None
        self.device = torch.device(device)
        self.fusion = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        self.settings = {"backend": self.backend,
                         "model": f"Hugging Face ClapModel (HTSAT, fusion {'on' if self.fusion else 'off'})",
                         "checkpoint": self.path.name, "sha256": sha256_folder(self.path)}

    @torch.no_grad()
    def embed_audio(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, 480000] at 48 kHz -> L2-normalised embeddings [B, D]."""
        batch = self.features([c.numpy() for c in clips], sampling_rate=SAMPLE_RATE, return_tensors="pt",
                              truncation="fusion" if self.fusion else "rand_trunc", padding="repeatpad")
        # every clip is exactly 10 s: no clip is "longer" (the extractor would otherwise pick one at random)
        is_longer = torch.zeros(len(clips), 1, dtype=torch.bool, device=self.device)
        out = self.model.get_audio_features(input_features=batch["input_features"].to(self.device),
                                            is_longer=is_longer)
        return _pooled(out)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """captions -> L2-normalised embeddings [B, D]."""
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True,
                                max_length=TEXT_TOKENS, return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _pooled(out)


def _pooled(out) -> torch.Tensor:
    """transformers 4.x returns the projected tensor, 5.x an output whose pooler_output holds it."""
    feats = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()


def load_clap(path: str | os.PathLike, device: str | torch.device = "cpu") -> LaionClap | HFClap:
    """A folder with ``config.json`` -> transformers backend; a ``.pt``/``.ckpt`` file -> laion-clap."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DashflowError(f"{path}: a CLAP folder needs config.json (Hugging Face ClapModel format)")
        return HFClap(path, device)
    if not path.is_file():
        raise DashflowError(f"missing CLAP checkpoint {path}: get 630k-audioset-best.pt from "
                            "https://huggingface.co/lukewys/laion_clap (or run `dashflow download-weights clap`)")
    return LaionClap(path, device)

"""DashengTokenizer configuration: the official ``config.json`` fields and named presets.

Field names are exactly those of ``mispeech/dashengtokenizer``'s ``config.json``; other keys
found there (``model_type``, ``architectures``, ``auto_map``, ``torch_dtype``, diffusers'
``_class_name``...) are ignored when reading.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from dashflow.tokenizer.frontends import SAMPLE_RATE
from dashflow.tokenizer.semantic import DASHENG_SIZES

from dashflow.errors import DashflowError

__all__ = ["PRESETS", "SAMPLE_RATE", "TokenizerConfig", "config_from_dict", "preset_config", "read_config_json"]
MEL_HOP = 160  # the semantic front end's hop; the acoustic hop must equal it
FRAMES_PER_LATENT = 4  # mel frames per 25 Hz latent (patch width of both branches)


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of a DashengTokenizer (defaults: the official 0.6B release)."""

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    n_mels_patch: int = 128
    hop_length: int = 160
    upsample_tokens: int = 2
    decoder_embed_dim: int = 1280
    decoder_depth: int = 12
    decoder_intermediate_size: int = 5120
    istft_n_fft: int = 1280
    istft_hop: int = 320

    def validate(self) -> TokenizerConfig:
        """Raise DashflowError when the two branches or the decoder cannot line up."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DashflowError(f"tokenizer config: {f.name} must be a positive integer, got {value!r}")
        if self.hop_length != MEL_HOP:
            raise DashflowError(f"tokenizer config: hop_length must be {MEL_HOP} (the semantic "
                                f"encoder's hop), got {self.hop_length}")
        if self.embed_dim % self.num_heads:
            raise DashflowError(f"tokenizer config: embed_dim {self.embed_dim} is not divisible by "
                                f"num_heads {self.num_heads}")
        if self.upsample_tokens * self.istft_hop != FRAMES_PER_LATENT * self.hop_length:
            raise DashflowError(
                f"tokenizer config: upsample_tokens x istft_hop = {self.upsample_tokens * self.istft_hop} "
                f"must equal the {FRAMES_PER_LATENT * self.hop_length} samples of one latent frame")
        if (self.istft_n_fft - self.istft_hop) % 2:
            raise DashflowError("tokenizer config: istft_n_fft - istft_hop must be even")
        return self


def _semantic(size: str) -> dict[str, int]:
    embed_dim, depth, num_heads = DASHENG_SIZES[size]
    return {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}


PRESETS: dict[str, TokenizerConfig] = {
    "paper": TokenizerConfig(),  # = the official release (Dasheng 0.6B semantic encoder)
    "base": TokenizerConfig(**_semantic("base")),
    "1.2b": TokenizerConfig(**_semantic("1.2b")),
    "tiny": TokenizerConfig(embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=64,
                            decoder_depth=2, decoder_intermediate_size=128),
    # the bundled demo model (CPU-trainable, a few MB): 128-d latents, 4 Vocos blocks
    "demo": TokenizerConfig(embed_dim=128, depth=2, num_heads=4, decoder_embed_dim=256,
                            decoder_depth=4, decoder_intermediate_size=768),
}


def preset_config(name: str) -> dict[str, int]:
    """The constructor kwargs of preset ``name`` (paper, base, 1.2b, tiny, demo)."""
    if name not in PRESETS:
        raise DashflowError(f"unknown tokenizer preset {name!r} (choose from {', '.join(PRESETS)})")
    return asdict(PRESETS[name])


def config_from_dict(raw: dict) -> TokenizerConfig:
    """Build a validated config from an official or diffusers ``config.json`` dict.

    Known fields override the defaults; unknown keys are ignored.
    """
    known = {f.name for f in fields(TokenizerConfig)}
    return replace(TokenizerConfig(), **{k: v for k, v in raw.items() if k in known}).validate()


def read_config_json(path: str | os.PathLike) -> TokenizerConfig:
    """Read ``config.json``; DashflowError naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DashflowError(f"{path}: tokenizer config.json not found")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DashflowError(f"{path}: cannot parse config.json ({exc})") from None
    if not isinstance(raw, dict):
        raise DashflowError(f"{path}: config.json must hold a JSON object")
    try:
        return config_from_dict(raw)
    except DashflowError as exc:
        raise DashflowError(f"{path}: {exc}") from None

"""DashengTokenizer: frozen Dasheng semantic encoder + acoustic injection + Vocos decoder.

``encode`` maps 16 kHz audio [B, S] to 25 Hz latents [B, T, D] (T = (S // 160 + 1) // 4, so
10.0 s -> 250 frames); ``decode`` maps latents back to [B, 640 T] samples. The state dict uses
the official ``mispeech/dashengtokenizer`` key names, and ``from_pretrained`` reads its
``config.json`` + ``model.safetensors`` strictly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from dashflow.tokenizer.config import (
    FRAMES_PER_LATENT,
    SAMPLE_RATE,
    TokenizerConfig,
    preset_config,
    read_config_json,
)
from dashflow.tokenizer.decoder import VocosDecoder
from dashflow.tokenizer.frontends import AcousticFrontEnd, frame_counts
from dashflow.tokenizer.semantic import DashengEncoder, read_dasheng_checkpoint
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dashflow.codecs import LatentEncoding
from dashflow.errors import DashflowError
from dashflow.models import SafetensorsModelMixin
from dashflow.weights import CONFIG_NAME, load_strict

logger = logging.getLogger(__name__)

# Keys an official file might carry that have no module here (a leftover classifier head).
IGNORED_PREFIXES = ("encoder.model.outputlayer.",)
# Dasheng checkpoint config entries that must match the fixed semantic architecture.
DASHENG_FIXED = {"n_mels": 64, "hop_size": 160, "win_size": 512, "n_fft": 512, "target_length": 1008,
                 "patch_size": [64, 4], "patch_stride": [64, 4], "mlp_ratio": 4.0, "pooling": "mean"}


@dataclass
class TokenizerEncoding(LatentEncoding):
    """Output of :meth:`DashengTokenizer.encode`. Positions where ``mask`` is False are zero.

    latents [B, T, D] = semantic + acoustic; mask [B, T] bool, True for frames inside each clip;
    semantic [B, T, D] from the frozen encoder (no gradient); acoustic [B, T, D] the LayerNorm-ed
    acoustic term (carries gradients).
    """

    semantic: Tensor
    acoustic: Tensor


class AcousticBranch(nn.Module):
    """The acoustic injection: log-mel ``front_end`` -> 2-D ``patch_embed`` (25 Hz) -> ``norm``."""

    def __init__(self, embed_dim: int, n_mels_patch: int, hop_length: int):
        super().__init__()
        self._add_acoustic_modules(embed_dim, n_mels_patch, hop_length)

    def _add_acoustic_modules(self, embed_dim: int, n_mels_patch: int, hop_length: int) -> None:
        self.front_end = AcousticFrontEnd(n_mels_patch, hop_length)
        self.patch_embed = nn.Conv2d(1, embed_dim, (n_mels_patch, FRAMES_PER_LATENT),
                                     stride=(n_mels_patch, FRAMES_PER_LATENT))
        self.norm = nn.LayerNorm(embed_dim)
        self.hop_length = hop_length

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav [B, S], lengths [B] -> (acoustic [B, T, D] zero past each clip, mask [B, T] bool)."""
        mel = self.front_end(wav, lengths)  # [B, M, F] float32
        acoustic = self.patch_embed(mel[:, None].to(self.patch_embed.weight.dtype))  # [B, D, 1, T]
        acoustic = self.norm(acoustic.flatten(2).transpose(1, 2))
        n_latents = acoustic.shape[1]
        if lengths is None:
            return acoustic, torch.ones(wav.shape[0], n_latents, dtype=torch.bool, device=wav.device)
        clip_latents = frame_counts(lengths.to(wav.device), self.hop_length) // FRAMES_PER_LATENT
        mask = torch.arange(n_latents, device=wav.device)[None, :] < clip_latents[:, None]
        return acoustic * mask[..., None], mask


class TokenizerEncoder(AcousticBranch):
    """``model`` (frozen Dasheng) + the acoustic branch (``front_end`` -> ``patch_embed`` -> ``norm``)."""

    def __init__(self, config: TokenizerConfig):
        nn.Module.__init__(self)  # ``model`` first: the official key order
        self.model = DashengEncoder(config.embed_dim, config.depth, config.num_heads)
        self.model.requires_grad_(False).eval()
        self._add_acoustic_modules(config.embed_dim, config.n_mels_patch, config.hop_length)

    def train(self, mode: bool = True) -> TokenizerEncoder:
        """Switch the acoustic branch; the semantic encoder always stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> TokenizerEncoding:
        """wav [B, S] 16 kHz, lengths [B] valid samples (None: all) -> TokenizerEncoding."""
        with torch.no_grad():
            semantic = self.model(wav, lengths)  # [B, T, D], zero past each clip
        acoustic, mask = super().forward(wav, lengths)
        semantic = semantic.to(acoustic.dtype)
        return TokenizerEncoding(semantic + acoustic, mask, semantic, acoustic)


class DashengTokenizer(SafetensorsModelMixin, ConfigMixin):
    """The DashengTokenizer (official default: 0.6B semantic encoder, 1280-d, 25 Hz).

    Config fields carry the official ``config.json`` names; see :class:`TokenizerConfig`.
    """

    config_name = CONFIG_NAME
    _supports_gradient_checkpointing = True
    folder_kind = "tokenizer"
    optional_buffers = True  # windows, mel filters, BatchNorm statistics: recomputed by load hooks
    ignored_prefixes = IGNORED_PREFIXES
    fp32_buffers = True
    sample_rate = SAMPLE_RATE

    @register_to_config
    def __init__(self, embed_dim: int = 1280, depth: int = 32, num_heads: int = 16,
                 n_mels_patch: int = 128, hop_length: int = 160, upsample_tokens: int = 2,
                 decoder_embed_dim: int = 1280, decoder_depth: int = 12,
                 decoder_intermediate_size: int = 5120, istft_n_fft: int = 1280, istft_hop: int = 320):
        super().__init__()
        cfg = TokenizerConfig(embed_dim, depth, num_heads, n_mels_patch, hop_length, upsample_tokens,
                              decoder_embed_dim, decoder_depth, decoder_intermediate_size,
                              istft_n_fft, istft_hop).validate()
        self.encoder = TokenizerEncoder(cfg)
        self.upsampler = (nn.ConvTranspose1d(embed_dim, embed_dim, upsample_tokens, stride=upsample_tokens)
                          if upsample_tokens > 1 else None)
        self.decoder = VocosDecoder(embed_dim, decoder_embed_dim, decoder_intermediate_size,
                                    decoder_depth, istft_n_fft, istft_hop)

    # ---- presets and sizes -------------------------------------------------------------------

    @staticmethod
    def preset_config(name: str) -> dict[str, int]:
        """Constructor kwargs of a preset: ``paper`` (official), ``base``, ``1.2b``, ``tiny``."""
        return preset_config(name)

    @classmethod
    def from_preset(cls, name: str, **overrides: int) -> DashengTokenizer:
        """A randomly initialised tokenizer of preset ``name`` (fields overridable)."""
        return cls(**{**preset_config(name), **overrides})

    @property
    def semantic_encoder(self) -> DashengEncoder:
        """The frozen Dasheng encoder (``encoder.model``)."""
        return self.encoder.model

    @property
    def latent_dim(self) -> int:
        return self.config.embed_dim

    @property
    def samples_per_latent(self) -> int:
        """Waveform samples per latent frame (640 = 40 ms at 16 kHz)."""
        return self.config.upsample_tokens * self.config.istft_hop

    @property
    def min_samples(self) -> int:
        """Shortest clip ``encode`` accepts (the acoustic STFT's reflect padding needs it)."""
        return self.encoder.front_end.n_fft // 2 + 1

    def latent_length(self, num_samples: int) -> int:
        """Latent frames of a clip of ``num_samples`` samples: (S // 160 + 1) // 4."""
        return (num_samples // self.config.hop_length + 1) // FRAMES_PER_LATENT

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the frozen semantic encoder's."""
        frozen = {id(p) for p in self.semantic_encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    # ---- encode / decode ---------------------------------------------------------------------

    def encode(self, wav: Tensor, lengths: Tensor | None = None) -> TokenizerEncoding:
        """wav [B, S] 16 kHz (clip b valid for ``lengths[b]`` samples) -> TokenizerEncoding.

        Latents are [B, T, D] with T = (S // 160 + 1) // 4; each clip gives the same values
        alone as in a padded batch.
        """
        self._check_input(wav, lengths)
        return self.encoder(wav, lengths)

    def decode(self, latents: Tensor) -> Tensor:
        """latents [B, T, D] -> wav [B, T * samples_per_latent]."""
        x = latents.transpose(1, 2)
        if self.upsampler is not None:
            x = self.upsampler(x)
        return self.decoder(x)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, TokenizerEncoding]:
        """wav [B, S] -> (reconstruction [B, S] trimmed or zero-padded to S, encoding)."""
        encoding = self.encode(wav, lengths)
        recon = self.decode(encoding.latents)
        size = wav.shape[-1]
        return F.pad(recon, (0, max(0, size - recon.shape[-1])))[:, :size], encoding

    def _check_input(self, wav: Tensor, lengths: Tensor | None) -> None:
        if wav.dim() != 2 or not wav.is_floating_point():
            raise DashflowError(f"encode expects a float waveform [B, S], got {tuple(wav.shape)} {wav.dtype}")
        if wav.shape[-1] < self.min_samples:
            raise DashflowError(f"audio of {wav.shape[-1]} samples is too short: the tokenizer needs "
                                f"at least {self.min_samples} samples at {self.sample_rate} Hz")
        if lengths is not None:
            if lengths.shape != wav.shape[:1] or lengths.is_floating_point():
                raise DashflowError(f"lengths must be an integer tensor [{wav.shape[0]}], "
                                    f"got {tuple(lengths.shape)} {lengths.dtype}")
            low, high = int(lengths.min()), int(lengths.max())
            if low < self.min_samples or high > wav.shape[-1]:
                raise DashflowError(f"lengths must lie in [{self.min_samples}, {wav.shape[-1]}] "
                                    f"samples, got {low}..{high}")

    # ---- weights -----------------------------------------------------------------------------

    @classmethod
    def read_config(cls, path: Path) -> dict[str, int]:
        """The official ``config.json``, checked (:func:`read_config_json`)."""
        return asdict(read_config_json(path))

    def load_semantic_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a bare PyPI ``dasheng`` encoder file (``{"model", "config"}``) into the semantic branch."""
        state, dasheng_config = read_dasheng_checkpoint(path)
        expected = {"embed_dim": self.config.embed_dim, "depth": self.config.depth,
                    "num_heads": self.config.num_heads, **DASHENG_FIXED}
        for key, value in expected.items():
            found = dasheng_config.get(key, value)
            if (list(found) if isinstance(found, (list, tuple)) else found) != value:
                raise DashflowError(f"{path}: Dasheng {key}={found!r} but this tokenizer's semantic "
                                    f"encoder needs {value!r}")
        state = {k: v for k, v in state.items() if not k.startswith("outputlayer.")}
        load_strict(self.semantic_encoder, state, path, optional_buffers=True)

"""LoSATok: the DashengTokenizer design with a 128-d semantic-acoustic VAE latent.

    semantic [B, T, 1280] = frozen semantic encoder (MiDashengLM's audio encoder)
    semantic_low [B, T, 128] = SemBo compressor (frozen)        acoustic [B, T, 1280] = patch embedding
    u = fc_a(acoustic) + semantic_low;  mu = fc_mu(u);  logvar = clamp(fc_logvar(u), -20, 20)
    latents = mu (eval) or mu + eps exp(logvar / 2) (training);  decode: ConvTranspose 128 -> 1280, Vocos

Module and parameter names are the released checkpoint's (github.com/wxzyd123/LoSATok, ``losatok.py``;
weights ``wxzyd123/LoSATok`` on the Hugging Face Hub): ``semantic_encoder.encoder.*`` in MiDashengLM
naming (a plain ``init_bn`` BatchNorm, mel front-end buffers not stored), ``semantic_encoder.bottleneck.*``
(:mod:`dashflow.tokenizer.sembo`), ``fc_a``, ``fc_mu``, ``fc_logvar``, and ``dasheng_tokenizer.*`` = the
DashengTokenizer's acoustic branch, a 128 -> 1280 ``upsampler`` and its Vocos ``decoder`` (its frozen
``encoder.model`` is not stored). The full ``paper`` preset has 632 M semantic + 0.82 M acoustic +
33 k KL-head + 171 M decoder parameters. ``from_pretrained`` reads our folders (``config.json`` +
``model.safetensors``) and official ones (a ``.pth`` state dict, full-size config) strictly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dashflow.codecs import LatentEncoding
from dashflow.errors import DashflowError, first_line
from dashflow.hub import resolve_folder
from dashflow.models import SafetensorsModelMixin
from dashflow.tokenizer.config import FRAMES_PER_LATENT, SAMPLE_RATE, TokenizerConfig
from dashflow.tokenizer.decoder import VocosDecoder
from dashflow.tokenizer.losses import masked_frame_mean
from dashflow.tokenizer.model import AcousticBranch
from dashflow.tokenizer.sembo import SemanticBottleneck
from dashflow.tokenizer.semantic import DashengEncoder
from dashflow.weights import CONFIG_NAME, attach_weights_source, load_strict, weights_hash

LOGVAR_CLAMP = 20.0
PRESETS = {
    "paper": {},  # the released model: Dasheng 0.6B-size semantic encoder, 1280 -> 128
    # CPU-trainable demo scale: the bundled demo tokenizer's sizes, 128 -> 16 (the paper's 10x)
    "demo": dict(embed_dim=128, depth=2, num_heads=4, decoder_embed_dim=256, decoder_depth=4,
                 decoder_intermediate_size=768, latent_dim=16, sembo_hidden=64),
    "tiny": dict(embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=64, decoder_depth=2,
                 decoder_intermediate_size=128, latent_dim=8, sembo_hidden=32),
}


class MiDashengEncoder(DashengEncoder):
    """The Dasheng encoder under MiDashengLM's key names: ``init_bn.*`` (not ``init_bn.1.*``), and
    the mel front end's buffers left out of the state dict (recomputed, as vLLM keeps them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._register_state_dict_hook(_to_midashenglm_names)
        self.register_load_state_dict_pre_hook(_from_midashenglm_names)


def _to_midashenglm_names(module, state: dict, prefix: str, _meta) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        local = key[len(prefix):]
        if local.startswith("front_end."):
            del state[key]
        elif local.startswith("init_bn.1."):
            state[prefix + "init_bn." + local[len("init_bn.1."):]] = state.pop(key)


def _from_midashenglm_names(module, state: dict, prefix: str, *_args) -> None:
    for key in [k for k in state if k.startswith(prefix + "init_bn.") and not k.startswith(prefix + "init_bn.1.")]:
        state[prefix + "init_bn.1." + key[len(prefix + "init_bn."):]] = state.pop(key)


class SemanticEncoder(nn.Module):
    """``encoder`` (frozen MiDashengLM audio encoder) + ``bottleneck`` (frozen SemBo)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, latent_dim: int, sembo_hidden: int):
        super().__init__()
        self.encoder = MiDashengEncoder(embed_dim, depth, num_heads)
        self.bottleneck = SemanticBottleneck(embed_dim, latent_dim, sembo_hidden)


class AcousticDecoder(nn.Module):
    """The DashengTokenizer parts LoSATok keeps: ``encoder`` (acoustic branch), ``upsampler``, ``decoder``."""

    def __init__(self, cfg: TokenizerConfig, latent_dim: int):
        super().__init__()
        self.encoder = AcousticBranch(cfg.embed_dim, cfg.n_mels_patch, cfg.hop_length)
        self.upsampler = nn.ConvTranspose1d(latent_dim, cfg.embed_dim, cfg.upsample_tokens, stride=cfg.upsample_tokens)
        self.decoder = VocosDecoder(cfg.embed_dim, cfg.decoder_embed_dim, cfg.decoder_intermediate_size,
                                    cfg.decoder_depth, cfg.istft_n_fft, cfg.istft_hop)


@dataclass
class LoSATokEncoding(LatentEncoding):
    """latents [B, T, d] (mu, or a sample in training), mask [B, T]; semantic / acoustic [B, T, D]
    (high-dimensional), semantic_low / acoustic_low [B, T, d], mu / logvar [B, T, d]; kl [] the mean
    over valid frames of -1/2 sum_d (1 + logvar - mu^2 - e^logvar)."""

    semantic: Tensor
    acoustic: Tensor
    semantic_low: Tensor
    acoustic_low: Tensor
    mu: Tensor
    logvar: Tensor
    kl: Tensor


def kl_divergence(mu: Tensor, logvar: Tensor, mask: Tensor) -> Tensor:
    """KL(N(mu, e^logvar) || N(0, 1)) summed over channels, averaged over the valid frames of mask."""
    return masked_frame_mean(-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1), mask)  # [B, T] -> []


class LoSATok(SafetensorsModelMixin, ConfigMixin):
    """LoSATok (a :class:`dashflow.codecs.LatentCodec`): 16 kHz audio <-> ``latent_dim`` latents at 25 Hz."""

    config_name = CONFIG_NAME
    folder_kind = "LoSATok"
    optional_buffers = True
    fp32_buffers = True
    sample_rate = SAMPLE_RATE

    @register_to_config
    def __init__(self, embed_dim: int = 1280, depth: int = 32, num_heads: int = 16, n_mels_patch: int = 128,
                 hop_length: int = 160, upsample_tokens: int = 2, decoder_embed_dim: int = 1280,
                 decoder_depth: int = 12, decoder_intermediate_size: int = 5120, istft_n_fft: int = 1280,
                 istft_hop: int = 320, latent_dim: int = 128, sembo_hidden: int = 512):
        super().__init__()
        cfg = TokenizerConfig(embed_dim, depth, num_heads, n_mels_patch, hop_length, upsample_tokens,
                              decoder_embed_dim, decoder_depth, decoder_intermediate_size,
                              istft_n_fft, istft_hop).validate()
        self.semantic_encoder = SemanticEncoder(embed_dim, depth, num_heads, latent_dim, sembo_hidden)
        self.fc_a = nn.Linear(embed_dim, latent_dim)
        self.fc_mu = nn.Linear(latent_dim, latent_dim)
        self.fc_logvar = nn.Linear(latent_dim, latent_dim)
        self.dasheng_tokenizer = AcousticDecoder(cfg, latent_dim)
        self.semantic_encoder.requires_grad_(False).eval()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LoSATok:
        """A randomly initialised LoSATok: ``paper`` (the release), ``demo`` or ``tiny``."""
        if name not in PRESETS:
            raise DashflowError(f"unknown LoSATok preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})

    def train(self, mode: bool = True) -> LoSATok:
        """Switch the trained parts; the semantic encoder and SemBo always stay in eval mode."""
        super().train(mode)
        self.semantic_encoder.eval()
        return self

    # ---- the codec interface ----------------------------------------------------------------

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def samples_per_latent(self) -> int:
        return self.config.upsample_tokens * self.config.istft_hop

    @property
    def min_samples(self) -> int:
        return self.dasheng_tokenizer.encoder.front_end.n_fft // 2 + 1

    def latent_length(self, num_samples: int) -> int:
        return (num_samples // self.config.hop_length + 1) // FRAMES_PER_LATENT

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything but the frozen semantic encoder and SemBo."""
        frozen = {id(p) for p in self.semantic_encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    def encode(self, wav: Tensor, lengths: Tensor | None = None, sample: bool | None = None) -> LoSATokEncoding:
        """wav [B, S] 16 kHz, lengths [B] -> LoSATokEncoding; ``sample`` (default: training mode)
        draws latents = mu + eps exp(logvar / 2), else latents = mu."""
        if wav.dim() != 2 or wav.shape[-1] < self.min_samples:
            raise DashflowError(f"encode expects a waveform [B, S] of at least {self.min_samples} samples, "
                                f"got {tuple(wav.shape)}")
        with torch.no_grad():
            semantic = self.semantic_encoder.encoder(wav, lengths)  # [B, T, D], zero past each clip
            semantic_low = self.semantic_encoder.bottleneck.compress(semantic)
        acoustic, mask = self.dasheng_tokenizer.encoder(wav, lengths)
        frames = min(semantic.shape[1], acoustic.shape[1])
        semantic, semantic_low = semantic[:, :frames].to(acoustic.dtype), semantic_low[:, :frames].to(acoustic.dtype)
        acoustic, mask = acoustic[:, :frames], mask[:, :frames]
        acoustic_low = self.fc_a(acoustic)
        unified = acoustic_low + semantic_low
        mu, logvar = self.fc_mu(unified), self.fc_logvar(unified).clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)
        sample = self.training if sample is None else sample
        latents = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        keep = mask[..., None].to(latents.dtype)
        return LoSATokEncoding(latents * keep, mask, semantic, acoustic, semantic_low * keep, acoustic_low * keep,
                               mu * keep, logvar * keep, kl_divergence(mu.float(), logvar.float(), mask))

    def decode(self, latents: Tensor) -> Tensor:
        """latents [B, T, d] -> wav [B, T * samples_per_latent]."""
        return self.dasheng_tokenizer.decoder(self.dasheng_tokenizer.upsampler(latents.transpose(1, 2)))

    # ---- frozen parts and official files ---------------------------------------------------------

    def load_frozen_parts(self, semantic_state: dict[str, Tensor] | None = None,
                          sembo: SemanticBottleneck | None = None) -> None:
        """Set the frozen teacher: a Dasheng encoder state dict (our ``init_bn.1`` or MiDashengLM names)
        and/or a trained SemBo, each loaded strictly."""
        if semantic_state is not None:
            named = {("init_bn." + k[len("init_bn.1."):] if k.startswith("init_bn.1.") else k): v
                     for k, v in semantic_state.items() if not k.startswith("front_end.")}
            load_strict(self.semantic_encoder.encoder, named, "semantic encoder", optional_buffers=True)
        if sembo is not None:
            load_strict(self.semantic_encoder.bottleneck, sembo.state_dict(), "SemBo")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> LoSATok:
        """Our folder (``config.json`` + ``model.safetensors``), or an official one: a ``.pth`` state
        dict (``{"state_dict": ...}`` or bare, read with ``weights_only=True``) for the ``paper`` size."""
        folder = resolve_folder(pretrained_model_name_or_path, "LoSATok", ("*.json", "*.safetensors", "*.pth"),
                                subfolder=kwargs.pop("subfolder", None))
        if (folder / CONFIG_NAME).is_file():
            return super().from_pretrained(folder, **kwargs)
        official = sorted(folder.glob("*.pth"))
        if not official:
            raise DashflowError(f"{folder}: not a LoSATok folder (neither config.json + model.safetensors "
                                "nor an official .pth checkpoint)")
        try:
            state = torch.load(official[0], map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt zip, refused pickle: one line
            raise DashflowError(f"{official[0]}: not a readable checkpoint ({first_line(exc)})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise DashflowError(f"{official[0]}: expected a state dict")
        with torch.device("meta"):
            model = cls()
        dtype = kwargs.get("torch_dtype") or torch.float32
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        recorded = weights_hash(state.items())
        load_strict(model, state, official[0], optional_buffers=True, assign=True)
        attach_weights_source(model, [], recorded)
        if kwargs.get("device") is not None:
            model.to(kwargs["device"])
        return model.eval()


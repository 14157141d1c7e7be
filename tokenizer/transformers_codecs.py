"""The codecs the field compares against, as :class:`dashflow.codecs.LatentCodec` s, through their
``transformers`` classes: EnCodec (``facebook/encodec_24khz``), DAC (``descript/dac_16khz``) and
Mimi (``kyutai/mimi``).

Latents, per codec (``latents`` = ``"continuous"``, the default, or ``"quantized"``):

| codec | continuous | quantized |
|---|---|---|
| EnCodec | the SEANet encoder's output before the residual VQ, [B, T, 128] at 75 Hz (24 kHz) | the sum of the RVQ codebook vectors at the model's largest bandwidth |
| DAC | the encoder's output before the RVQ input projections, [B, T, 1024] | the RVQ's quantised representation (all codebooks) |
| Mimi | the encoder transformer + downsampling output before the split RVQ, [B, T, 512] at 12.5 Hz | the split RVQ's dequantised codes (all codebooks) |

``decode`` maps either kind back through the codec's decoder. The folder is the ``transformers``
model folder itself (``config.json`` with its ``model_type`` + ``model.safetensors``), so a hub
copy opens as it is; the latent kind is stored as ``dashflow_latents`` in that config.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from torch import Tensor

from dashflow.codecs import LatentEncoding
from dashflow.errors import DashflowError, first_line
from dashflow.hub import resolve_folder
from dashflow.weights import attach_weights_source, module_hash, weight_files

LATENT_KINDS = ("continuous", "quantized")


def _encodec_encode(model, wav: Tensor, quantized: bool) -> Tensor:
    z = model.encoder(wav)
    if quantized:
        bandwidth = max(model.config.target_bandwidths)
        z = model.quantizer.decode(model.quantizer.encode(z, bandwidth))
    return z


def _dac_encode(model, wav: Tensor, quantized: bool) -> Tensor:
    z = model.encoder(wav)
    return model.quantizer(z)[0] if quantized else z


def _mimi_encode(model, wav: Tensor, quantized: bool) -> Tensor:
    z = model.encoder(wav).latents
    return model.quantizer.decode(model.quantizer.encode(z).transpose(0, 1)) if quantized else z  # codes [B, K, T]


# model_type -> (encode(model, wav [B, 1, S], quantized) -> [B, D, T], decode(model, z) -> [B, 1, S'],
#                samples per latent(config))
KINDS = {
    "encodec": (_encodec_encode, lambda m, z: m.decoder(z), lambda c: int(math.prod(c.upsampling_ratios))),
    "dac": (_dac_encode, lambda m, z: m.decoder(z), lambda c: int(c.hop_length)),
    "mimi": (_mimi_encode, lambda m, z: m.decoder(z).audio_values, lambda c: round(c.sampling_rate / c.frame_rate)),
}


class TransformersCodec(ModelMixin):
    """A ``transformers`` EnCodec / DAC / Mimi model behind the latent-codec interface.

    ``encode(wav [B, S], lengths [B]?) -> LatentEncoding(latents [B, T, D], mask [B, T])`` with
    T = ceil(S / samples_per_latent) (the input is zero-padded to whole frames);
    ``decode(latents [B, T, D]) -> wav [B, T * samples_per_latent]``. Mono only.
    """

    folder_kind: ClassVar[str] = "codec"

    def __init__(self, model, latents: str = "continuous"):
        super().__init__()
        model_type = model.config.model_type
        if model_type not in KINDS:
            raise DashflowError(f"no codec adapter for transformers model_type {model_type!r} "
                                f"(known: {', '.join(KINDS)})")
        if latents not in LATENT_KINDS:
            raise DashflowError(f"latents must be one of {', '.join(LATENT_KINDS)}, got {latents!r}")
        if getattr(model.config, "audio_channels", 1) != 1:
            raise DashflowError(f"{model_type}: only mono codecs are supported")
        self.model = model.eval()
        self.kind, self.latents = model_type, latents
        self._encode, self._decode, hop = KINDS[model_type]
        self.sample_rate = int(model.config.sampling_rate)
        self.samples_per_latent = hop(model.config)
        self.min_samples = 1
        self.latent_dim = int(model.config.hidden_size)

    @classmethod
    def from_transformers(cls, name_or_path: str | os.PathLike, latents: str | None = None,
                          torch_dtype: torch.dtype | None = None, device=None) -> TransformersCodec:
        """Load a ``transformers`` codec folder (or hub id); ``latents`` default: the folder's
        ``dashflow_latents``, else ``"continuous"``."""
        from transformers import AutoConfig, AutoModel

        folder = resolve_folder(name_or_path, "codec")
        try:
            config = AutoConfig.from_pretrained(folder)
            weight_files(folder)  # one clear line when there are no safetensors weights
            model = AutoModel.from_pretrained(folder, torch_dtype=torch_dtype or torch.float32, use_safetensors=True)
        except (OSError, ValueError, KeyError) as exc:
            raise DashflowError(f"{folder}: cannot load the transformers codec ({first_line(exc)})") from None
        codec = cls(model, latents or getattr(config, "dashflow_latents", "continuous"))
        attach_weights_source(codec, weight_files(folder), None)
        return codec.to(device) if device is not None else codec

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None,
                        torch_dtype: torch.dtype | None = None, device=None, **_loader_kwargs) -> TransformersCodec:
        """:meth:`from_transformers` with diffusers' component-loader signature."""
        folder = Path(pretrained_model_name_or_path)
        return cls.from_transformers(folder / subfolder if subfolder else pretrained_model_name_or_path,
                                     torch_dtype=torch_dtype, device=device)

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **_kwargs) -> None:
        """Write the ``transformers`` folder (safetensors), recording the latent kind."""
        if is_main_process:
            self.model.config.dashflow_latents = self.latents
            self.model.save_pretrained(save_directory, safe_serialization=True)

    def weights_hash(self) -> str:
        return module_hash(self)

    def latent_length(self, num_samples: int) -> int:
        return -(-num_samples // self.samples_per_latent)

    def encode(self, wav: Tensor, lengths: Tensor | None = None) -> LatentEncoding:
        """wav [B, S] -> LatentEncoding(latents [B, T, D], mask [B, T]), zero past each clip."""
        if wav.dim() != 2 or not wav.is_floating_point():
            raise DashflowError(f"encode expects a float waveform [B, S], got {tuple(wav.shape)} {wav.dtype}")
        frames = self.latent_length(wav.shape[-1])
        padded = F.pad(wav, (0, frames * self.samples_per_latent - wav.shape[-1]))
        if lengths is not None:  # zero each clip's padding, as if encoded alone then zero-padded
            inside = torch.arange(padded.shape[-1], device=wav.device)[None] < lengths.to(wav.device)[:, None]
            padded = padded * inside
        z = self._encode(self.model, padded[:, None].to(self.dtype), self.latents == "quantized").transpose(1, 2)
        z = F.pad(z, (0, 0, 0, max(0, frames - z.shape[1])))[:, :frames]
        if lengths is None:
            mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        else:
            valid = -(-lengths.to(z.device) // self.samples_per_latent)
            mask = torch.arange(frames, device=z.device)[None] < valid[:, None]
            z = z * mask[..., None]
        return LatentEncoding(z, mask)

    def decode(self, latents: Tensor) -> Tensor:
        """latents [B, T, D] -> wav [B, T * samples_per_latent]."""
        size = latents.shape[1] * self.samples_per_latent
        wav = self._decode(self.model, latents.transpose(1, 2).to(self.dtype)).reshape(latents.shape[0], -1)
        return F.pad(wav, (0, max(0, size - wav.shape[-1])))[:, :size]


# small random configs at 16 kHz for tests and benchmarks (the architectures of the real ones, tiny widths)
TINY_CONFIGS = {
    "encodec": dict(sampling_rate=16000, hidden_size=16, num_filters=4, num_residual_layers=1,
                    upsampling_ratios=[8, 5, 4, 2], codebook_size=32, codebook_dim=16, target_bandwidths=[6.0],
                    num_lstm_layers=1),
    "dac": dict(sampling_rate=16000, encoder_hidden_size=4, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=16,
                upsampling_ratios=[8, 5, 4, 2], hidden_size=32, n_codebooks=2, codebook_size=16, codebook_dim=4),
    "mimi": dict(sampling_rate=16000, frame_rate=12.5, hidden_size=16, num_filters=4, num_residual_layers=1,
                 upsampling_ratios=[8, 5, 4, 2], upsample_groups=16, codebook_size=16, codebook_dim=8,
                 vector_quantization_hidden_dimension=8, num_quantizers=2, num_semantic_quantizers=1,
                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                 intermediate_size=32, sliding_window=10),
}


def save_tiny_codec(kind: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a randomly initialised small ``kind`` (encodec / dac / mimi) transformers folder at
    16 kHz (320 samples per latent for EnCodec and DAC, 1280 for Mimi); returns the folder."""
    import transformers

    names = {"encodec": "Encodec", "dac": "Dac", "mimi": "Mimi"}
    config = getattr(transformers, f"{names[kind]}Config")(**TINY_CONFIGS[kind])
    torch.manual_seed(seed)
    getattr(transformers, f"{names[kind]}Model")(config).save_pretrained(folder)
    return Path(folder)

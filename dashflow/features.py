"""Frozen features for probes: any encoder, one interface, cached by the encoder's weights hash.

The interface is X-ARES's (github.com/jimbozhang/xares, ``audio_encoder_checker.py``): an
``nn.Module`` with ``sampling_rate``, ``output_dim``, ``hop_size_in_ms`` and ``forward(wav [B, N])
-> [B, T, D]``, so an X-ARES encoder file plugs in unchanged (:func:`xares_encoder_from_file`).
:class:`CodecFeatures` exposes a latent codec (or one part of its encoding, e.g. the
DashengTokenizer's ``semantic`` or ``acoustic`` term) that way, with exact frame masks;
:class:`LogMelFeatures` is the log-mel baseline at a chosen frame rate.

:func:`encoder_from_spec` reads the command-line form ``[LABEL=]SOURCE[@PART]``: SOURCE is
``logmel`` (25 Hz), ``logmel:HOP_MS``, ``xares:FILE.py`` or a codec folder / hub id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from dashflow.audio import load_audio
from dashflow.codecs import latent_rate, load_codec
from dashflow.errors import DashflowError, first_line
from dashflow.outputs import atomic_path
from dashflow.spectral import MelSpectrogram
from dashflow.weights import module_hash

X_ARES_ATTRIBUTES = ("sampling_rate", "output_dim", "hop_size_in_ms")
# stored features: half the memory of float32 and float32's range (float16 flushes the 1e-5-scale
# outputs of some untrained codecs to zero)
FEATURE_DTYPE = torch.bfloat16


class CodecFeatures(nn.Module):
    """A latent codec's encoding (``part``: ``latents`` or another field of it) as an X-ARES encoder."""

    def __init__(self, codec: nn.Module, part: str = "latents"):
        super().__init__()
        self.codec, self.part = codec, part
        self.sampling_rate = codec.sample_rate
        self.hop_size_in_ms = 1000.0 / latent_rate(codec)
        self.output_dim = codec.latent_dim
        if part != "latents":  # a part's own width (e.g. the 1280-d semantic term of a 128-d LoSATok)
            with torch.no_grad():
                self.output_dim = self.encode(torch.zeros(1, max(codec.min_samples, 2 * codec.samples_per_latent)))[0].shape[-1]

    def encode(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav [B, N], lengths [B] -> (features [B, T, D], mask [B, T])."""
        if lengths is not None:
            lengths = lengths.clamp(min=self.codec.min_samples)
        if wav.shape[-1] < self.codec.min_samples:
            wav = F.pad(wav, (0, self.codec.min_samples - wav.shape[-1]))
        encoding = self.codec.encode(wav.to(self.codec.device, self.codec.dtype), lengths)
        if not hasattr(encoding, self.part):
            raise DashflowError(f"{type(self.codec).__name__} encodings have no part {self.part!r}")
        return getattr(encoding, self.part), encoding.mask

    def forward(self, wav: Tensor) -> Tensor:
        return self.encode(wav)[0]

    def feature_id(self) -> str:
        return f"{self.codec.weights_hash()}-{self.part}"


class LogMelFeatures(nn.Module):
    """Log-mel baseline: 128 HTK bins (n_fft 1024, hop 10 ms) averaged over ``hop_ms`` frames."""

    def __init__(self, hop_ms: float = 40.0, n_mels: int = 128, sampling_rate: int = 16000):
        super().__init__()
        self.group = max(1, round(hop_ms / 10))
        self.sampling_rate, self.output_dim, self.hop_size_in_ms = sampling_rate, n_mels, 10.0 * self.group
        self.mel = MelSpectrogram(1024, sampling_rate // 100, n_mels, power=1.0, sample_rate=sampling_rate)

    def forward(self, wav: Tensor) -> Tensor:
        """wav [B, N] -> log-mel [B, ceil((N // hop + 1) / group), n_mels]."""
        mel = torch.log(self.mel(wav.float()).clamp(min=1e-5))  # [B, M, F]
        pad = -mel.shape[-1] % self.group
        mel = F.pad(mel, (0, pad), mode="replicate") if pad else mel
        return F.avg_pool1d(mel, self.group).transpose(1, 2)

    def feature_id(self) -> str:
        return f"logmel{self.output_dim}-{self.hop_size_in_ms:g}ms"


def xares_encoder_from_file(path: str | Path) -> nn.Module:
    """Instantiate the X-ARES encoder defined in ``path`` (a class whose name ends in ``Encoder``,
    built with no arguments). This runs the file: only pass files you trust."""
    path = Path(path)
    if not path.is_file():
        raise DashflowError(f"{path}: X-ARES encoder file not found")
    spec = importlib.util.spec_from_file_location(f"xares_encoder_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: one line
        raise DashflowError(f"{path}: cannot import the encoder ({first_line(exc)})") from None
    classes = [c for name, c in inspect.getmembers(module, inspect.isclass)
               if name.endswith("Encoder") and issubclass(c, nn.Module) and c.__module__ == module.__name__]
    if len(classes) != 1:
        raise DashflowError(f"{path}: expected one nn.Module class whose name ends in 'Encoder', found {len(classes)}")
    encoder = classes[0]()
    check_xares_encoder(encoder, str(path))
    return encoder.eval()


def check_xares_encoder(encoder: nn.Module, where: str) -> None:
    """X-ARES's checker: the three attributes, and forward(randn(2, 50000)) -> [2, T, output_dim]."""
    missing = [a for a in X_ARES_ATTRIBUTES if not hasattr(encoder, a)]
    if missing:
        raise DashflowError(f"{where}: the encoder lacks {', '.join(missing)}")
    with torch.no_grad():
        out = encoder(torch.randn(2, 50000))
    if out.dim() != 3 or out.shape[0] != 2 or out.shape[-1] != encoder.output_dim:
        raise DashflowError(f"{where}: forward(wav [2, 50000]) gave {tuple(out.shape)}, expected [2, T, "
                            f"{encoder.output_dim}]")


@dataclass
class EncoderSpec:
    """A parsed ``--encoder`` value: the label in tables and the encoder itself."""

    label: str
    encoder: nn.Module


def encoder_from_spec(spec: str, device: str | torch.device = "cpu") -> EncoderSpec:
    """``[LABEL=]SOURCE[@PART]`` -> EncoderSpec (see the module doc)."""
    label, _, source = spec.rpartition("=")
    source, _, part = source.partition("@")
    if source == "logmel" or source.startswith("logmel:"):
        hop = source.partition(":")[2]
        try:
            encoder = LogMelFeatures(float(hop) if hop else 40.0)
        except ValueError:
            raise DashflowError(f"--encoder {spec!r}: logmel:HOP_MS needs a number") from None
    elif source.startswith("xares:"):
        encoder = xares_encoder_from_file(source.removeprefix("xares:"))
    else:
        encoder = CodecFeatures(load_codec(source, device=device), part or "latents")
    return EncoderSpec(label or (f"{Path(source).name}@{part}" if part else Path(source).name or source),
                       encoder.to(device))


def feature_id(encoder: nn.Module) -> str:
    """What the feature cache is keyed by: the encoder's own id, else its class and weights hash."""
    own = getattr(encoder, "feature_id", None)
    return own() if callable(own) else f"{type(encoder).__name__}-{module_hash(encoder)}"


def valid_frames(encoder: nn.Module, lengths: Tensor, frames: int) -> Tensor:
    """Frames [B] of each clip for an encoder that reports none: ceil(seconds / hop), at most
    ``frames`` (X-ARES's conversion of times to frames)."""
    seconds = lengths.double() / encoder.sampling_rate
    return (seconds * 1000 / encoder.hop_size_in_ms).ceil().long().clamp(1, frames)


@torch.no_grad()
def encode_clips(encoder: nn.Module, records: Sequence[dict], batch_size: int = 16,
                 progress: bool = True) -> tuple[Tensor, Tensor]:
    """Features of every record's audio: (features [N, T, D] bfloat16, zero-padded; mask [N, T]).

    Clips are batched by length (zero-padded to the batch's longest) and each clip's padded
    frames are masked: exactly, for codecs; by duration, for other encoders.
    """
    device = next(encoder.parameters(), torch.empty(0)).device
    order = sorted(range(len(records)), key=lambda i: -float(records[i].get("duration") or 0))
    shortest = math.ceil(encoder.sampling_rate * encoder.hop_size_in_ms / 1000)
    outputs: list[tuple[Tensor, Tensor] | None] = [None] * len(records)
    for start in tqdm(range(0, len(order), batch_size), desc="encode", unit="batch", disable=not progress, delay=1.0):
        index = order[start:start + batch_size]
        clips = [load_audio(records[i]["audio"], encoder.sampling_rate) for i in index]
        for i, clip in zip(index, clips):
            if len(clip) < shortest:
                raise DashflowError(f"{records[i]['audio']}: {len(clip) / encoder.sampling_rate * 1000:.1f} ms is "
                                    f"shorter than one {encoder.hop_size_in_ms:g} ms frame of the encoder")
        lengths = torch.tensor([len(c) for c in clips])
        wav = torch.zeros(len(clips), int(lengths.max()))
        for row, clip in enumerate(clips):
            wav[row, :len(clip)] = clip
        if isinstance(encoder, CodecFeatures):
            feats, mask = encoder.encode(wav.to(device), lengths.to(device))
        else:
            feats = encoder(wav.to(device))
            mask = torch.arange(feats.shape[1])[None] < valid_frames(encoder, lengths, feats.shape[1])[:, None]
        for row, i in enumerate(index):
            keep = int(mask[row].sum())
            outputs[i] = (feats[row, :keep].float().cpu().to(FEATURE_DTYPE), torch.ones(keep, dtype=torch.bool))
    frames = max(f.shape[0] for f, _ in outputs)
    features = torch.zeros(len(records), frames, outputs[0][0].shape[-1], dtype=FEATURE_DTYPE)
    mask = torch.zeros(len(records), frames, dtype=torch.bool)
    for i, (f, _) in enumerate(outputs):
        features[i, :len(f)], mask[i, :len(f)] = f, True
    return features, mask


def cached_features(encoder: nn.Module, records: Sequence[dict], cache_dir: str | Path | None,
                    batch_size: int = 16, progress: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`encode_clips`, stored in ``cache_dir/<feature id>/<records hash>.safetensors`` and
    read back when the same encoder meets the same clips again."""
    if cache_dir is None:
        return encode_clips(encoder, records, batch_size, progress)
    key = hashlib.sha256(json.dumps([(r["audio_id"], r["audio"]) for r in records]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / feature_id(encoder) / f"{key}-bf16.safetensors"
    if path.is_file():
        try:
            stored = load_file(path)
            return stored["features"], stored["mask"]
        except (SafetensorError, KeyError, OSError):
            pass  # a damaged entry is recomputed
    features, mask = encode_clips(encoder, records, batch_size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"features": features, "mask": mask}, str(tmp))
    return features, mask


def parameter_count(encoder: nn.Module) -> int:
    """Parameters of the encoder (a codec's whole model, decoder included)."""
    return sum(p.numel() for p in encoder.parameters())


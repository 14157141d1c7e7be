"""Tokenizer training losses: hinge GAN, feature matching, multi-scale mel, semantic alignment.

The seed paper trains with ``L_G = 45 L_sem + 45 L_mel + L_fm + L_adv`` and hinge adversarial
losses; the mel loss configuration is unpublished. Our default mel loss uses X-Codec 2.0's
seven scales (windows 32..2048, n_mels 5..320, hop = window/4, Slaney mel, power 1) with the
natural log clamped at 1e-5 and the **mean** over scales, so ``45 * L_mel`` weighs the same as
X-Codec 2.0's ``15 * sum_7 log10-L1`` (15 * 7 / ln 10 = 45.6) and as Vocos's ``45 * ln-L1``.
``MultiScaleMelLoss.preset("vocos")`` gives Vocos's single scale (1024/256, 100 HTK mels,
ln clamped at 1e-7) instead. The same module is the validation metric (mel distance).

Discriminator outputs are ``{family: (logits list, feature-map lists)}`` as returned by
:class:`tokenizer.discriminators.TokenizerDiscriminator`; each family's loss is the mean over
its sub-discriminators and families are summed with per-family weights (Vocos: MPD + c * MRD).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from dashflow.tokenizer.discriminators import FamilyOutput
from torch import nn

from dashflow.spectral import MelMagnitude

XCODEC2_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
XCODEC2_MELS = (5, 10, 20, 40, 80, 160, 320)


# ----------------------------------------------------------------------------- mel

MEL_PRESETS: dict[str, dict] = {
    "xcodec2": dict(windows=XCODEC2_WINDOWS, n_mels=XCODEC2_MELS, log="ln", clamp=1e-5,
                    reduction="mean", scale="slaney", norm="slaney"),
    "vocos": dict(windows=(1024,), n_mels=(100,), hops=(256,), log="ln", clamp=1e-7,
                  reduction="mean", scale="htk", norm=None),
}


class MultiScaleMelLoss(nn.Module):
    """L1 between log mel spectrograms at several resolutions: (pred, target [B, S]) -> scalar.

    ``windows[i]`` is both n_fft and window length; hop ``hops[i]`` (default window/4);
    ``log`` "ln" or "log10" of ``clamp(mel, clamp)``; ``reduction`` over scales "mean"/"sum".
    The default is the X-Codec 2.0 seven-scale layout with the natural log and the mean.
    """

    def __init__(self, sample_rate: int = 16000, windows: Sequence[int] = XCODEC2_WINDOWS,
                 n_mels: Sequence[int] = XCODEC2_MELS, hops: Sequence[int] | None = None,
                 log: str = "ln", clamp: float = 1e-5, reduction: str = "mean",
                 scale: str = "slaney", norm: str | None = "slaney"):
        super().__init__()
        hops = [w // 4 for w in windows] if hops is None else hops
        if not len(windows) == len(n_mels) == len(hops):
            raise ValueError("windows, n_mels and hops need one entry per scale")
        if log not in ("ln", "log10") or reduction not in ("mean", "sum"):
            raise ValueError(f"log must be ln/log10 and reduction mean/sum, got {log}/{reduction}")
        self.mels = nn.ModuleList(MelMagnitude(sample_rate, w, h, m, scale, norm)
                                  for w, h, m in zip(windows, hops, n_mels))
        self.log, self.clamp, self.reduction = log, clamp, reduction

    @classmethod
    def preset(cls, name: str, sample_rate: int = 16000) -> MultiScaleMelLoss:
        """``xcodec2`` (default layout) or ``vocos`` (single scale)."""
        if name not in MEL_PRESETS:
            raise ValueError(f"unknown mel loss preset {name!r}; choose from {', '.join(MEL_PRESETS)}")
        return cls(sample_rate, **MEL_PRESETS[name])

    def log_mel(self, mel: torch.Tensor) -> torch.Tensor:
        mel = mel.clamp(min=self.clamp)
        return mel.log() if self.log == "ln" else mel.log10()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        length = min(pred.shape[-1], target.shape[-1])
        pred, target = pred[..., :length], target[..., :length]
        losses = torch.stack([F.l1_loss(self.log_mel(mel(pred)), self.log_mel(mel(target)))
                              for mel in self.mels])
        return losses.mean() if self.reduction == "mean" else losses.sum()


# ----------------------------------------------------------------------------- adversarial

def _weighted(per_family: Mapping[str, torch.Tensor],
              weights: Mapping[str, float] | None) -> torch.Tensor:
    weights = weights or {}
    return sum(weights.get(name, 1.0) * value for name, value in per_family.items())


def discriminator_hinge_loss(real: Mapping[str, FamilyOutput], fake: Mapping[str, FamilyOutput],
                             weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict]:
    """``mean relu(1 - D(x)) + mean relu(1 + D(x_hat))`` per sub-discriminator, averaged per
    family, families summed with ``weights`` (default 1). Returns (loss, {family: loss})."""
    parts = {}
    for name in real:
        terms = [F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean()
                 for r, f in zip(real[name][0], fake[name][0])]
        parts[name] = torch.stack(terms).mean()
    return _weighted(parts, weights), parts


def generator_hinge_loss(fake: Mapping[str, FamilyOutput],
                         weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict]:
    """``mean relu(1 - D(x_hat))`` per sub-discriminator, averaged per family, families summed."""
    parts = {name: torch.stack([F.relu(1 - f.float()).mean() for f in logits]).mean()
             for name, (logits, _) in fake.items()}
    return _weighted(parts, weights), parts


def feature_matching_loss(real: Mapping[str, FamilyOutput], fake: Mapping[str, FamilyOutput],
                          weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict]:
    """Sum over layers of ``mean |D_l(x) - D_l(x_hat)|`` (real detached) per sub-discriminator,
    averaged per family, families summed with ``weights``."""
    parts = {}
    for name in real:
        terms = [sum(F.l1_loss(g.float(), r.detach().float()) for r, g in zip(rs, gs))
                 for rs, gs in zip(real[name][1], fake[name][1])]
        parts[name] = torch.stack(terms).mean()
    return _weighted(parts, weights), parts


def semantic_loss(semantic: torch.Tensor, acoustic: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error ``||z_sem - z_ac||^2`` over valid frames: [B, T, D] x2, mask [B, T].

    The semantic target is detached (the encoder is frozen).
    """
    error = (acoustic.float() - semantic.detach().float()).square().mean(dim=-1)  # [B, T]
    return masked_frame_mean(error, mask)


def masked_frame_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-frame values [B, T] over the True frames of mask [B, T] (every frame when None)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------- combination

class GeneratorLoss(nn.Module):
    """``L_G = lambda_sem L_sem + lambda_mel L_mel + lambda_adv L_adv + lambda_fm L_fm``.

    Defaults follow the seed paper (45, 45, 1, 1). ``family_weights`` weigh discriminator
    families inside L_adv and L_fm (Vocos's MRD coefficient). Without discriminator outputs
    (before the discriminator starts) L_adv and L_fm are left out. An encoding with low-dimensional
    parts and a KL term (LoSATok's) adds ``lambda_sem L_sem_low + lambda_kl KL``: the LoSATok paper's
    ``45 (L_H + L_L) + 1e-2 KL``.
    """

    def __init__(self, lambda_sem: float = 45.0, lambda_mel: float = 45.0,
                 lambda_adv: float = 1.0, lambda_fm: float = 1.0,
                 mel_loss: MultiScaleMelLoss | None = None,
                 family_weights: Mapping[str, float] | None = None, lambda_kl: float = 1e-2):
        super().__init__()
        self.lambda_sem, self.lambda_mel, self.lambda_kl = lambda_sem, lambda_mel, lambda_kl
        self.lambda_adv, self.lambda_fm = lambda_adv, lambda_fm
        self.mel_loss = mel_loss if mel_loss is not None else MultiScaleMelLoss()
        self.family_weights = dict(family_weights or {})

    def forward(self, recon: torch.Tensor, target: torch.Tensor, encoding,
                disc_real: Mapping[str, FamilyOutput] | None = None,
                disc_fake: Mapping[str, FamilyOutput] | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """recon/target [B, S], encoding (``semantic``/``acoustic`` [B, T, D], ``mask`` [B, T]; optional
        ``semantic_low``/``acoustic_low``, ``kl``) -> (total, {"mel", "sem", ["sem_low", "kl"], "adv", "fm", ...})."""
        mask = encoding.mask
        parts = {"mel": self.mel_loss(recon, target), "sem": semantic_loss(encoding.semantic, encoding.acoustic, mask)}
        total = self.lambda_mel * parts["mel"] + self.lambda_sem * parts["sem"]
        if hasattr(encoding, "semantic_low"):
            parts["sem_low"] = semantic_loss(encoding.semantic_low, encoding.acoustic_low, mask)
            parts["kl"] = encoding.kl
            total = total + self.lambda_sem * parts["sem_low"] + self.lambda_kl * parts["kl"]
        if disc_fake is not None and disc_real is not None:
            parts["adv"], adv_parts = generator_hinge_loss(disc_fake, self.family_weights)
            parts["fm"], fm_parts = feature_matching_loss(disc_real, disc_fake, self.family_weights)
            parts.update({f"adv_{k}": v for k, v in adv_parts.items()})
            parts.update({f"fm_{k}": v for k, v in fm_parts.items()})
            total = total + self.lambda_adv * parts["adv"] + self.lambda_fm * parts["fm"]
        return total, parts

"""A codec seen through a fixed linear projection: LoSATok's "FC" baseline for the question whether
a low-dimensional latent is easier for the DiT by its width alone.

``encode`` projects the base codec's latents onto ``dim`` principal directions (``(x - mean) @
basis.T``), ``decode`` maps back (``z @ basis + mean``) and decodes with the base. The projection
is fitted once by PCA on the base's latents (:meth:`ProjectedCodec.fit`): of all linear maps to
``dim`` channels it loses the least in mean squared error, so it is the strongest plain linear
compression (the paper's baseline is a trained fully connected layer; PCA is its optimum).

A saved folder holds ``config.json``, ``projection.safetensors`` (mean [D], basis [dim, D]) and the
base codec's own folder under ``base/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from diffusers import ModelMixin
from torch import nn

from dashflow.codecs import LatentEncoding, load_codec
from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path

PROJECTION_NAME = "projection.safetensors"
BASE_DIR = "base"


class ProjectedCodec(ModelMixin):
    """base codec latents [B, T, D] -> [B, T, dim] by a fixed PCA projection, and back (a ModelMixin
    so that pipelines save and load it as a component; its own save / load below)."""

    config_name = "config.json"

    def __init__(self, base: nn.Module, mean: torch.Tensor, basis: torch.Tensor):
        super().__init__()
        if basis.dim() != 2 or basis.shape[1] != base.latent_dim or mean.shape != (base.latent_dim,):
            raise DashflowError(f"a projection of {base.latent_dim}-d latents needs mean [{base.latent_dim}] and "
                                f"basis [dim, {base.latent_dim}], got {tuple(mean.shape)} and {tuple(basis.shape)}")
        self.base = base
        self.register_buffer("mean", mean.float().to(base.device))
        self.register_buffer("basis", basis.float().to(base.device))
        self.sample_rate, self.samples_per_latent = base.sample_rate, base.samples_per_latent
        self.min_samples = base.min_samples

    @property
    def latent_dim(self) -> int:
        return self.basis.shape[0]

    @property
    def device(self) -> torch.device:
        return self.basis.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @classmethod
    @torch.no_grad()
    def fit(cls, base: nn.Module, latents: Iterable[torch.Tensor], dim: int) -> ProjectedCodec:
        """PCA of ``latents`` (each [T_i, D], frames of the base's encoding) -> the top ``dim`` directions."""
        frames = torch.cat([x.reshape(-1, base.latent_dim).double() for x in latents])
        if not 0 < dim < base.latent_dim or len(frames) <= dim:
            raise DashflowError(f"a {dim}-d projection needs 0 < dim < {base.latent_dim} and more than {dim} frames "
                                f"(got {len(frames)})")
        mean = frames.mean(0)
        _, _, vh = torch.linalg.svd(frames - mean, full_matrices=False)
        return cls(base, mean.float(), vh[:dim].float())

    def latent_length(self, num_samples: int) -> int:
        return self.base.latent_length(num_samples)

    def weights_hash(self) -> str:
        digest = hashlib.sha256(self.base.weights_hash().encode())
        digest.update(self.mean.cpu().numpy().tobytes() + self.basis.cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> LatentEncoding:
        encoding = self.base.encode(wav, lengths)
        projected = (encoding.latents.float() - self.mean) @ self.basis.T
        return LatentEncoding(projected * encoding.mask[..., None], encoding.mask)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        restored = latents.float() @ self.basis + self.mean
        return self.base.decode(restored.to(self.base.dtype))

    def save_pretrained(self, folder: str | os.PathLike, **kwargs) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / BASE_DIR, ignore_errors=True)
        self.base.save_pretrained(folder / BASE_DIR)
        with atomic_path(folder / PROJECTION_NAME) as tmp:
            save_file({"mean": self.mean.cpu().contiguous(), "basis": self.basis.cpu().contiguous()}, str(tmp))
        with atomic_path(folder / "config.json") as tmp:
            tmp.write_text(json.dumps({"_class_name": type(self).__name__, "dim": self.latent_dim}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, torch_dtype=None, device=None, **kwargs) -> ProjectedCodec:
        folder = Path(folder)
        if not (folder / PROJECTION_NAME).is_file() or not (folder / BASE_DIR).is_dir():
            raise DashflowError(f"{folder}: not a projected codec folder ({PROJECTION_NAME} and {BASE_DIR}/ expected)")
        tensors = load_file(str(folder / PROJECTION_NAME))
        return cls(load_codec(folder / BASE_DIR, torch_dtype=torch_dtype, device=device), tensors["mean"],
                   tensors["basis"])

"""SemBo, LoSATok's semantic bottleneck: a compressor and a restorer (two-layer MLPs) over frozen
semantic features, trained to keep both the features and their frame-to-frame relations.

Module names follow the released code (github.com/wxzyd123/LoSATok, ``semantic_bottleneck.py``):
``downsample`` = Linear(D, 512) -> GELU -> Linear(512, d), ``upsample`` = Linear(d, 512) -> GELU ->
Linear(512, D); at 1280 -> 128 they hold 721,536 and 722,688 parameters.

Loss (:func:`sembo_loss`), on features l2-normalised per frame: reconstruction
``mse(norm(R(C(z))), sg(norm(z)))`` and time relation ``mse(G_low, sg(G_high))`` with the T x T
cosine Gram matrices ``G = norm(z) norm(z)^T`` of each clip. The paper weighs reconstruction by
1e3 (``recon_weight``); the released loss sums the two unweighted (``recon_weight = 1``). The Gram
term runs in row blocks, so a long clip never holds a T x T matrix (memory O(block x T)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config
from omegaconf import MISSING
from torch import Tensor, nn

from dashflow.errors import DashflowError
from dashflow.manifests import read_json
from dashflow.models import SafetensorsModelMixin
from dashflow.tokenizer.losses import semantic_loss
from dashflow.training import OptimConfig, TrainConfig, check_training
from dashflow.tokenizer.semantic import DashengEncoder, read_dasheng_checkpoint
from dashflow.weights import CONFIG_NAME, load_strict

RELATION_BLOCK = 256  # Gram rows per block


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))


class SemanticBottleneck(SafetensorsModelMixin, ConfigMixin):
    """``compress(z [B, T, dim]) -> [B, T, low_dim]``, ``restore(low [B, T, low_dim]) -> [B, T, dim]``."""

    config_name = CONFIG_NAME
    folder_kind = "SemBo"

    @register_to_config
    def __init__(self, dim: int = 1280, low_dim: int = 128, hidden: int = 512):
        super().__init__()
        self.downsample = _mlp(dim, hidden, low_dim)
        self.upsample = _mlp(low_dim, hidden, dim)

    def compress(self, z: Tensor) -> Tensor:
        return self.downsample(z)

    def restore(self, low: Tensor) -> Tensor:
        return self.upsample(low)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [B, T, dim] -> (low [B, T, low_dim], restored [B, T, dim])."""
        low = self.compress(z)
        return low, self.restore(low)


def time_relation_loss(high: Tensor, low: Tensor, mask: Tensor | None = None, block: int = RELATION_BLOCK) -> Tensor:
    """``mean (G_low - sg(G_high))^2`` over each clip's valid T_b x T_b frame pairs, then over clips.

    high [B, T, D], low [B, T, d]; G = n n^T with n the per-frame l2-normalised features. Rows are
    taken ``block`` at a time: memory O(B x block x T), never B x T x T.
    """
    high = F.normalize(high.detach().float(), dim=-1)
    low = F.normalize(low.float(), dim=-1)
    if mask is not None:
        high, low = high * mask[..., None], low * mask[..., None]
    total = low.new_zeros(low.shape[0])
    for start in range(0, low.shape[1], block):
        rows = slice(start, start + block)
        diff = low[:, rows] @ low.transpose(1, 2) - high[:, rows] @ high.transpose(1, 2)  # [B, block, T]
        total = total + diff.square().sum(dim=(1, 2))
    pairs = (torch.full_like(total, low.shape[1]) if mask is None else mask.sum(1).to(total.dtype)).square()
    return (total / pairs.clamp(min=1.0)).mean()


def reconstruction_loss(high: Tensor, restored: Tensor, mask: Tensor | None = None) -> Tensor:
    """``mse(norm(restored), sg(norm(high)))``: mean over channels, then over valid frames."""
    return semantic_loss(F.normalize(high.float(), dim=-1), F.normalize(restored.float(), dim=-1), mask)


def sembo_loss(bottleneck: SemanticBottleneck, high: Tensor, mask: Tensor | None = None,
               recon_weight: float = 1.0, relation_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """SemBo's training loss on frozen features high [B, T, D] (mask [B, T]):
    (``recon_weight`` x reconstruction + ``relation_weight`` x time relation, parts)."""
    low, restored = bottleneck(high.detach())
    parts = {"recon": reconstruction_loss(high, restored, mask)}
    total = recon_weight * parts["recon"]
    if relation_weight:
        parts["relation"] = time_relation_loss(high, low, mask)
        total = total + relation_weight * parts["relation"]
    return total, parts


def load_teacher(path: str | os.PathLike) -> DashengEncoder:
    """The frozen semantic encoder SemBo and LoSATok learn from, in eval mode: a DashengTokenizer
    folder's (or hub id's) ``encoder.model``, a :class:`SemanticTeacher` folder's ``encoder``, or a
    PyPI ``dasheng`` checkpoint file."""
    from dashflow.tokenizer.model import DashengTokenizer
    from dashflow.tokenizer.teacher import SemanticTeacher

    config = Path(path) / CONFIG_NAME
    if config.is_file() and read_json(config).get("_class_name") == SemanticTeacher.__name__:
        encoder = SemanticTeacher.from_pretrained(path).encoder
    elif Path(path).is_file():
        state, config = read_dasheng_checkpoint(path)
        encoder = DashengEncoder(config.get("embed_dim", 768), config.get("depth", 12), config.get("num_heads", 12))
        load_strict(encoder, {k: v for k, v in state.items() if not k.startswith("outputlayer.")}, path,
                    optional_buffers=True)
    else:
        encoder = DashengTokenizer.from_pretrained(path).semantic_encoder
    return encoder.requires_grad_(False).eval()


# ----------------------------------------------------------------------------- recipe config

@dataclass
class SemBoModelConfig:
    teacher: str = MISSING           # DashengTokenizer folder (its frozen semantic encoder) or a dasheng .pt
    low_dim: int = 128
    hidden: int = 512


@dataclass
class SemBoDataConfig:
    train: str = MISSING             # .jsonl manifest (or WebDataset shards) of audio
    crop_seconds: float = 10.0
    batch_size: int = 16             # per process
    num_workers: int = 2


@dataclass
class SemBoLossConfig:
    recon_weight: float = 1000.0     # the paper's 1e3 (the released loss sums the terms unweighted: 1.0)
    relation_weight: float = 1.0     # 0 = the ablation without the time-relation loss


@dataclass
class SemBoOptimConfig(OptimConfig):  # the paper's Table 9 (= DAC's base.yml)
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_steps: int = 1000


@dataclass
class SemBoTrainConfig(TrainConfig):
    output_dir: str = "runs/sembo"
    max_steps: int = 100_000


@dataclass
class SemBoConfig:
    model: SemBoModelConfig = field(default_factory=SemBoModelConfig)
    data: SemBoDataConfig = field(default_factory=SemBoDataConfig)
    loss: SemBoLossConfig = field(default_factory=SemBoLossConfig)
    optim: SemBoOptimConfig = field(default_factory=SemBoOptimConfig)
    train: SemBoTrainConfig = field(default_factory=SemBoTrainConfig)


def check_sembo_settings(cfg: SemBoConfig) -> None:
    """One DashflowError line for settings the SemBo recipe cannot run with."""
    check_training(cfg.train, cfg.optim, {"data.batch_size": cfg.data.batch_size,
                                          "data.crop_seconds": cfg.data.crop_seconds,
                                          "model.low_dim": cfg.model.low_dim, "model.hidden": cfg.model.hidden})
    if cfg.loss.recon_weight <= 0 or cfg.loss.relation_weight < 0:
        raise DashflowError("loss.recon_weight must be positive and loss.relation_weight not negative")

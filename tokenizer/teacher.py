"""A semantic teacher for offline work: a Dasheng encoder trained as a clip classifier.

Where no pretrained semantic encoder can be had (no hub access), LoSATok and SemBo still need a
frozen encoder whose features carry semantics. :class:`SemanticTeacher` is the Dasheng ViT
(``encoder``, the architecture LoSATok's semantic branch expects) plus a linear ``head`` on its
masked mean over time, trained with cross-entropy on labelled clips (``recipes/semantic_teacher.py``).
Its features carry what the labels teach and little else: probes of tasks whose classes overlap
those labels are inflated by it. The official teachers (Dasheng, MiDashengLM) are self-supervised
and general instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config
from omegaconf import MISSING
from torch import Tensor, nn

from dashflow.errors import DashflowError
from dashflow.models import SafetensorsModelMixin
from dashflow.spectral import frame_counts
from dashflow.tokenizer.config import FRAMES_PER_LATENT
from dashflow.tokenizer.semantic import DashengEncoder
from dashflow.training import OptimConfig, TrainConfig, check_training
from dashflow.weights import CONFIG_NAME


class SemanticTeacher(SafetensorsModelMixin, ConfigMixin):
    """``forward(wav [B, S], lengths [B]) -> logits [B, len(labels)]``; ``encoder`` gives the features."""

    config_name = CONFIG_NAME
    folder_kind = "semantic teacher"
    optional_buffers = True

    @register_to_config
    def __init__(self, labels: list[str] = (), embed_dim: int = 128, depth: int = 2, num_heads: int = 4):
        super().__init__()
        self.encoder = DashengEncoder(embed_dim, depth, num_heads)
        self.head = nn.Linear(embed_dim, len(labels))

    def forward(self, wav: Tensor, lengths: Tensor) -> Tensor:
        features = self.encoder(wav, lengths)  # [B, T, D], zero past each clip
        frames = (frame_counts(lengths, self.encoder.front_end.hop_length) // FRAMES_PER_LATENT).clamp(min=1)
        return self.head(features.sum(1) / frames[:, None].to(features.dtype))


@dataclass
class TeacherModelConfig:
    embed_dim: int = 128
    depth: int = 2
    num_heads: int = 4


@dataclass
class TeacherDataConfig:
    train: str = MISSING             # .jsonl manifest whose records carry a "label"
    crop_seconds: float = 3.0
    batch_size: int = 16
    num_workers: int = 0


@dataclass
class TeacherOptimConfig(OptimConfig):
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 100


@dataclass
class TeacherTrainConfig(TrainConfig):
    output_dir: str = "runs/semantic_teacher"
    max_steps: int = 2000


@dataclass
class TeacherConfig:
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    data: TeacherDataConfig = field(default_factory=TeacherDataConfig)
    optim: TeacherOptimConfig = field(default_factory=TeacherOptimConfig)
    train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)


def check_teacher_settings(cfg: TeacherConfig, records: list[dict]) -> list[str]:
    """The sorted labels of ``records``; one DashflowError line for unusable settings or data."""
    check_training(cfg.train, cfg.optim, {"data.batch_size": cfg.data.batch_size,
                                          "data.crop_seconds": cfg.data.crop_seconds})
    unlabelled = [r["audio_id"] for r in records if not r.get("label")]
    if unlabelled:
        raise DashflowError(f"{cfg.data.train}: {len(unlabelled)} records have no label (first: {unlabelled[0]!r})")
    labels = sorted({str(r["label"]) for r in records})
    if len(labels) < 2:
        raise DashflowError(f"{cfg.data.train}: a teacher needs at least 2 labels, found {labels}")
    return labels


def label_tensor(batch: dict, labels: list[str], records_by_id: dict[str, dict]) -> Tensor:
    """Class indices [B] of a clip batch (by its ``audio_id`` list)."""
    index = {label: i for i, label in enumerate(labels)}
    return torch.tensor([index[str(records_by_id[a]["label"])] for a in batch["audio_id"]])

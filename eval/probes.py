"""Understanding probes on frozen features, X-ARES style, with a cleaner protocol.

A probe task is a labelled manifest (:func:`read_probe_task`): JSON lines with ``audio`` and
``label``, and either a ``split`` (train / val / test) on every line or a ``source`` (recording,
speaker, ...) from which the splits are drawn, by source, 60 / 20 / 20.

Heads (:func:`train_probe`), as X-ARES (github.com/jimbozhang/xares, ``models/mlp.py``,
``trainer.py``): ``linear`` = LayerNorm(D) + Linear(D, C), trained with Adam (lr 1e-3, no weight
decay), cosine-decayed per epoch to 0.1 lr, 10 epochs, batch 32, cross-entropy; ``mlp`` adds a
hidden GELU layer. ``pooling="mean"`` classifies the masked mean over time; ``"frame"`` applies the
head to every valid frame (each carrying the clip's label) and averages the frame logits per clip.
:func:`knn_accuracy` is X-ARES's k-NN score: cosine similarity of mean-pooled features, k = 10,
votes weighted by softmax(sim / 0.07). Differences from X-ARES, on purpose: the epoch is chosen on
a validation split that is never the test split, mean pooling ignores padded frames (X-ARES
includes them when it batches clips of unequal length), and every run is seeded.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest

SPLITS = ("train", "val", "test")
SOURCE_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test share of the sources when none is given


@dataclass
class ProbeTask:
    """A labelled task: ``splits[name]`` = its records; ``classes`` sorted label names."""

    name: str
    splits: dict[str, list[dict]]
    classes: list[str]

    def labels(self, split: str) -> Tensor:
        """Class indices [N] of ``split``'s records."""
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[r["label"]] for r in self.splits[split]])


def _source_split(source: str) -> str:
    """train / val / test for a source, from a hash of its name (stable across runs and machines)."""
    unit = int(hashlib.sha256(source.encode()).hexdigest()[:8], 16) / 2 ** 32
    return SPLITS[0] if unit < SOURCE_FRACTIONS[0] else SPLITS[1] if unit < sum(SOURCE_FRACTIONS[:2]) else SPLITS[2]


def read_probe_task(path: str | Path) -> ProbeTask:
    """Read and check a probe-task manifest (see the module doc); one DashflowError line per problem."""
    path = Path(path)
    records = read_manifest(path)
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("label"), (str, int)) or str(record.get("label")).strip() == "":
            raise DashflowError(f"{path}: record {number} ({record['audio_id']!r}) has no label")
        record["label"] = str(record["label"])
    given = [r.get("split") for r in records]
    if all(s is not None for s in given):
        bad = sorted({s for s in given if s not in SPLITS})
        if bad:
            raise DashflowError(f"{path}: unknown split(s) {', '.join(map(repr, bad))} (use {', '.join(SPLITS)})")
    elif any(s is not None for s in given):
        raise DashflowError(f"{path}: some records have a split and some do not; give every record one, or none")
    else:
        for record in records:
            record["split"] = _source_split(str(record.get("source") or record["audio_id"]))
    classes = sorted({r["label"] for r in records})
    if len(classes) < 2:
        raise DashflowError(f"{path}: a probe task needs at least 2 classes, found {len(classes)} ({classes[0]!r})")
    splits = {s: [r for r in records if r["split"] == s] for s in SPLITS}
    empty = [s for s in SPLITS if not splits[s]]
    if empty:
        raise DashflowError(f"{path}: split(s) {', '.join(empty)} are empty")
    unseen = sorted({r["label"] for r in splits["test"]} - {r["label"] for r in splits["train"]})
    if unseen:
        raise DashflowError(f"{path}: test label(s) {', '.join(map(repr, unseen))} never occur in train")
    return ProbeTask(path.stem, splits, classes)


def masked_mean(features: Tensor, mask: Tensor) -> Tensor:
    """features [N, T, D], mask [N, T] bool -> mean over the valid frames [N, D]."""
    weights = mask.to(features.dtype)[..., None]
    return (features * weights).sum(1) / weights.sum(1).clamp(min=1)


class ProbeHead(nn.Module):
    """LayerNorm(D) -> Linear(D, C) (``hidden`` = 0, X-ARES's head) or -> Linear -> GELU -> Linear."""

    def __init__(self, dim: int, classes: int, hidden: int = 0):
        super().__init__()
        layers = [nn.LayerNorm(dim)]
        layers += [nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, classes)] if hidden else [nn.Linear(dim, classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] -> logits [..., C]."""
        return self.net(x)


@dataclass
class ProbeResult:
    """Accuracy on test at the epoch with the best validation accuracy (first such epoch)."""

    test: float
    val: float
    best_epoch: int
    val_curve: list[float] = field(default_factory=list)


def _clip_logits(head: ProbeHead, features: Tensor, mask: Tensor, pooling: str) -> Tensor:
    if pooling == "mean":
        return head(masked_mean(features, mask))
    frame = head(features)  # [N, T, C]
    return masked_mean(frame, mask)


def _accuracy(head: ProbeHead, features: Tensor, mask: Tensor, labels: Tensor, pooling: str) -> float:
    head.eval()
    with torch.no_grad():
        logits = torch.cat([_clip_logits(head, features[i:i + 256], mask[i:i + 256], pooling)
                            for i in range(0, len(features), 256)])
    return float((logits.argmax(-1) == labels).float().mean())


def train_probe(train: tuple[Tensor, Tensor, Tensor], val: tuple[Tensor, Tensor, Tensor],
                test: tuple[Tensor, Tensor, Tensor], num_classes: int, head: str = "linear",
                pooling: str = "mean", epochs: int = 10, lr: float = 1e-3, batch_size: int = 32,
                hidden: int = 512, seed: int = 0) -> ProbeResult:
    """Train a probe on ``train`` and test it at its best ``val`` epoch.

    Each split is (features [N, T, D] float, mask [N, T] bool, labels [N] int).
    """
    if head not in ("linear", "mlp") or pooling not in ("mean", "frame") or epochs < 1:
        raise DashflowError(f"head must be linear/mlp, pooling mean/frame and epochs >= 1, "
                            f"got {head}/{pooling}/{epochs}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    features, mask, labels = train
    features = features.float()
    probe = ProbeHead(features.shape[-1], num_classes, hidden if head == "mlp" else 0)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    best: ProbeResult | None = None
    curve = []
    for epoch in range(epochs):
        # X-ARES: ignite CosineAnnealingScheduler from lr to 0.1 lr over the epochs
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * (1 + math.cos(math.pi * epoch / max(1, epochs - 1))) / 2)
        probe.train()
        for batch in torch.randperm(len(features), generator=generator).split(batch_size):
            x, m, y = features[batch], mask[batch], labels[batch]
            if pooling == "mean":
                loss = F.cross_entropy(probe(masked_mean(x, m)), y)
            else:
                logits = probe(x)[m]  # [valid frames, C]
                loss = F.cross_entropy(logits, y[:, None].expand_as(m)[m])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = _accuracy(probe, val[0].float(), val[1], val[2], pooling)
        curve.append(score)
        if best is None or score > best.val:
            best = ProbeResult(_accuracy(probe, test[0].float(), test[1], test[2], pooling), score, epoch)
    best.val_curve = curve
    return best


def knn_accuracy(train: tuple[Tensor, Tensor, Tensor], test: tuple[Tensor, Tensor, Tensor], num_classes: int,
                 k: int = 10, temperature: float = 0.07) -> float:
    """X-ARES's k-NN score on mean-pooled, L2-normalised features (no training)."""
    memory = F.normalize(masked_mean(train[0].float(), train[1]), dim=-1)
    queries = F.normalize(masked_mean(test[0].float(), test[1]), dim=-1)
    sims = queries @ memory.T  # [Q, N]
    top, index = sims.topk(min(k, len(memory)), dim=-1)
    votes = torch.zeros(len(queries), num_classes).scatter_add_(1, train[2][index], (top / temperature).softmax(-1))
    return float((votes.argmax(-1) == test[2]).float().mean())


def majority_accuracy(task: ProbeTask) -> float:
    """Accuracy on test of always answering train's most frequent class (the chance line)."""
    common = Counter(r["label"] for r in task.splits["train"]).most_common(1)[0][0]
    return sum(r["label"] == common for r in task.splits["test"]) / len(task.splits["test"])

"""In-house audio classifier: a small log-mel CNN trained on a labelled corpus, then used to score
generated audio (top-1 against the prompted class, FD in its embedding, prompt separation).

The numbers it gives are in-house: they depend on the corpus it was trained on and are not
comparable to published results. A labelled manifest is JSON Lines, one clip a line, paths
relative to the manifest's folder::

    {"audio_id": "dog_3", "audio": "audio/dog_3.wav", "caption": "a dog barking", "label": "dog",
     "source": "bark2", "split": "heldout", "captions": ["a dog barking", "a dog barks"]}

``source`` names the original recording (clips cut from one recording share it; a clip without
one is its own source); the validation part is split by source so no recording is on both sides.
A saved classifier is a folder with ``config.json`` and ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dashflow.eval.weights import sha256_file
from torch import Tensor, nn
from tqdm import tqdm

from dashflow.audio import SAMPLE_RATE, load_audio
from dashflow.device import resolve_device
from dashflow.errors import DashflowError, first_line
from dashflow.manifests import read_manifest
from dashflow.outputs import atomic_path
from dashflow.spectral import mel_filterbank, stft_magnitude
from dashflow.weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_strict,
    load_weights,
    save_weights,
)

MODEL_NAME = "dashflow in-house log-mel CNN classifier"
AUGMENTATION = {"crop": "random window (time shift); shorter clips at a random offset in zeros",
                "gain_db": [-6.0, 6.0], "white_noise": {"probability": 0.5, "snr_db": [10.0, 40.0]},
                "mixup": {"beta": 0.4}, "spec_augment": {"masks": 2, "max_mel_bins": 8, "max_frames": 30}}


@dataclass(frozen=True)
class MelSettings:
    """Log-mel front end of 16 kHz mono audio (25 ms Hann window, 10 ms hop by default)."""

    n_mels: int = 64
    win_length: int = 400
    hop_length: int = 160
    fmin: float = 50.0
    fmax: float = 8000.0


@dataclass(frozen=True)
class Architecture:
    """Conv blocks (two 3x3 conv + BN + ReLU, then 2x2 average pooling) of ``channels`` widths; the
    last feature map keeps its mel axis and is mean+max pooled over time into the embedding."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    embed_dim: int = 128
    window_seconds: float = 3.0  # training crop and test-time window (hop: half of it)


class InhouseCNN(nn.Module):
    """wav [B, S] at 16 kHz -> (embedding [B, E] (ReLU), logits [B, C])."""

    def __init__(self, n_classes: int, arch: Architecture = Architecture(), mel: MelSettings = MelSettings()):
        super().__init__()
        self.mel = mel
        filters = mel_filterbank(SAMPLE_RATE, mel.win_length, mel.n_mels, mel.fmin, mel.fmax).T
        self.register_buffer("filters", filters.contiguous(), persistent=False)
        self.norm = nn.BatchNorm1d(mel.n_mels)  # per mel bin, as PANNs' bn0
        blocks, width = [], 1
        for channels in arch.channels:
            blocks += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                       nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                       nn.AvgPool2d(2)]
            width = channels
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.2)
        bins = mel.n_mels >> len(arch.channels)  # mel bins left after the poolings
        if bins < 1:
            raise DashflowError(f"{mel.n_mels} mel bins cannot pass {len(arch.channels)} 2x2 poolings")
        self.embed = nn.Linear(2 * width * bins, arch.embed_dim)
        self.head = nn.Linear(arch.embed_dim, n_classes)

    def log_mel(self, wav: Tensor) -> Tensor:
        """wav [B, S] -> natural-log mel power [B, n_mels, T]."""
        power = stft_magnitude(wav, self.mel.win_length, self.mel.hop_length) ** 2
        return torch.log(self.filters @ power + 1e-6)

    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        x = self.norm(self.log_mel(wav))
        if self.training:
            x = spec_augment(x, **AUGMENTATION["spec_augment"])
        x = self.blocks(x[:, None]).flatten(1, 2)  # [B, C * M', T']
        pooled = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)  # [B, 2 C M']
        embedding = F.relu(self.embed(self.dropout(pooled)))
        return embedding, self.head(self.dropout(embedding))


def spec_augment(x: Tensor, masks: int, max_mel_bins: int, max_frames: int) -> Tensor:
    """Zero ``masks`` random mel bands (up to ``max_mel_bins`` wide) and time spans (up to
    ``max_frames``) of each clip of the normalised log-mel x [B, M, T] (torch's global RNG)."""
    batch, bins, frames = x.shape
    keep = torch.ones_like(x, dtype=torch.bool)
    for size, width, axis in ((bins, max_mel_bins, 1), (frames, max_frames, 2)):
        positions = torch.arange(size, device=x.device)[None]
        for _ in range(masks):
            span = torch.randint(0, min(width, size) + 1, (batch, 1), device=x.device)
            start = (torch.rand(batch, 1, device=x.device) * (size - span + 1)).long()
            hit = (positions >= start) & (positions < start + span)  # [B, size]
            keep &= ~hit.unsqueeze(3 - axis)
    return x * keep


def normalize_prompt(text: str) -> str:
    return text.strip().lower()


class InhouseClassifier:
    """A trained :class:`InhouseCNN` with its labels, caption map and training record."""

    def __init__(self, model: InhouseCNN, labels: list[str], caption_to_label: dict[str, str],
                 arch: Architecture, mel: MelSettings, record: dict[str, Any], folder: Path | None = None,
                 sha256: str | None = None):
        self.model, self.labels, self.caption_to_label = model.eval(), labels, caption_to_label
        self.arch, self.mel, self.record, self.folder, self.sha256 = arch, mel, record, folder, sha256
        self._prompts = {**{normalize_prompt(label): label for label in labels}, **caption_to_label}

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    def label_for_prompt(self, prompt: str) -> str | None:
        """The class a prompt asks for: a known caption or a label name (stripped, lower-cased)."""
        return self._prompts.get(normalize_prompt(prompt))

    def windows(self, wav: np.ndarray) -> Tensor:
        """wav [S] -> windows [W, L] of ``window_seconds``, hop L/2, the last one ending at the clip's
        end; a clip shorter than L is zero-padded to one window."""
        length = int(self.arch.window_seconds * SAMPLE_RATE)
        wav = np.asarray(wav, dtype=np.float32)
        if wav.shape[0] <= length:
            return torch.from_numpy(np.pad(wav, (0, length - wav.shape[0])))[None]
        starts = list(range(0, wav.shape[0] - length + 1, length // 2))
        if starts[-1] != wav.shape[0] - length:
            starts.append(wav.shape[0] - length)
        return torch.from_numpy(np.stack([wav[s:s + length] for s in starts]))

    @torch.no_grad()
    def outputs(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One 16 kHz clip [S] -> (embedding [E], logits [C]), each averaged over the windows."""
        parts = [self.model(chunk.to(self.device)) for chunk in self.windows(wav).split(64)]
        embedding = torch.cat([e for e, _ in parts]).mean(dim=0)
        logits = torch.cat([lg for _, lg in parts]).mean(dim=0)
        return embedding.cpu().numpy(), logits.cpu().numpy()

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """16 kHz clips (each [S_i]) -> embeddings [N, E]."""
        return np.stack([self.outputs(wav)[0] for wav in clips])

    def predict(self, clips: Iterable[np.ndarray]) -> np.ndarray:
        """16 kHz clips (each [S_i], read one at a time) -> logits [N, C] (columns follow ``labels``)."""
        return np.stack([self.outputs(wav)[1] for wav in clips])

    def settings(self) -> dict[str, Any]:
        """What the eval report records about the classifier."""
        validation = self.record.get("validation", {})
        return {"model": f"{MODEL_NAME} (in-house, not comparable to published numbers)",
                "folder": str(self.folder), "weights": WEIGHTS_NAME, "sha256": self.sha256,
                "official_file": "in-house", "n_labels": len(self.labels),
                "validation_top1": validation.get("top1"), "validation_clips": validation.get("n_clips"),
                "sample_rate": SAMPLE_RATE, "mel": asdict(self.mel), "architecture": asdict(self.arch),
                "windows": "hop half a window; embeddings and logits averaged over windows"}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``folder``."""
        folder = Path(folder)
        save_weights(self.model.state_dict(), folder)
        config = {"model": MODEL_NAME, "sample_rate": SAMPLE_RATE, "architecture": asdict(self.arch),
                  "mel": asdict(self.mel), "labels": self.labels, "caption_to_label": self.caption_to_label,
                  **self.record}
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> InhouseClassifier:
        """Load a saved classifier strictly; every problem is one DashflowError line."""
        folder = Path(folder)
        config_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights):
            if not path.is_file():
                raise DashflowError(f"{path}: not found (a classifier folder from `dashflow train-classifier` "
                                    f"holds {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            arch = Architecture(**{**config["architecture"], "channels": tuple(config["architecture"]["channels"])})
            mel, labels = MelSettings(**config["mel"]), [str(label) for label in config["labels"]]
            captions = {str(k): str(v) for k, v in config["caption_to_label"].items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise DashflowError(f"{config_path}: not an in-house classifier config "
                                f"({type(exc).__name__}: {first_line(exc)})") from None
        if config.get("sample_rate") != SAMPLE_RATE:
            raise DashflowError(f"{config_path}: sample_rate {config.get('sample_rate')}, expected {SAMPLE_RATE}")
        state, _, _ = load_weights(folder)
        model = InhouseCNN(len(labels), arch, mel)
        load_strict(model, state, weights)
        record = {k: v for k, v in config.items() if k in ("training", "validation", "seed")}
        return cls(model.to(device), labels, captions, arch, mel, record, folder, sha256_file(weights))


# -- corpus ------------------------------------------------------------------------------------

Manifests = str | os.PathLike | Sequence[str | os.PathLike]


def manifest_paths(manifests: Manifests) -> list[Path]:
    return [Path(manifests)] if isinstance(manifests, (str, os.PathLike)) else [Path(m) for m in manifests]


def labelled_records(manifests: Manifests, split: str | None = None) -> tuple[list[dict], list[dict]]:
    """(every record of the manifest(s), the labelled records of ``split`` or of all splits)."""
    paths = manifest_paths(manifests)
    name = ", ".join(map(str, paths))
    records = [record for path in paths for record in read_manifest(path)]
    ids = [r["audio_id"] for r in records]
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise DashflowError(f"{name}: audio_id {twice[0]!r} appears more than once")
    chosen = [r for r in records if split is None or r.get("split") == split]
    if not chosen:
        found = sorted({str(r.get("split")) for r in records})
        raise DashflowError(f"{name}: no clip has split {split!r} (found: {', '.join(found)})")
    for record in chosen:
        if not isinstance(record.get("label"), str) or not record["label"].strip():
            raise DashflowError(f"{name}: clip {record['audio_id']!r} has no label")
    return records, chosen


def source_of(record: dict) -> str:
    return str(record.get("source") or record["audio_id"])


def caption_labels(records: Sequence[dict], labels: Sequence[str]) -> dict[str, str]:
    """Normalized caption -> label from ``caption`` and ``captions`` of records whose label is known."""
    mapping: dict[str, str] = {}
    for record in records:
        if record.get("label") not in labels:
            continue
        texts = [record.get("caption"), *(record.get("captions") or [])]
        for text in (normalize_prompt(t) for t in texts if isinstance(t, str) and t.strip()):
            if mapping.setdefault(text, record["label"]) != record["label"]:
                raise DashflowError(f"caption {text!r} is given for labels {mapping[text]!r} and "
                                    f"{record['label']!r}; a prompt must name one class")
    return mapping


def split_by_source(records: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation) records; whole sources go to validation: per label (a source counts under
    the label of its first clip) a seeded ``fraction`` of its sources, at least one when it has two."""
    by_label: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: r["audio_id"]):
        source = source_of(record)
        if not any(source in s for s in by_label.values()):
            by_label.setdefault(record["label"], []).append(source)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(by_label):
        sources = sorted(by_label[label])
        if len(sources) >= 2:
            count = min(len(sources) - 1, max(1, round(fraction * len(sources))))
            held.update(rng.permutation(sources)[:count].tolist())
    if not held:
        raise DashflowError("no label has two sources, so no validation part can be held out by source")
    return ([r for r in records if source_of(r) not in held], [r for r in records if source_of(r) in held])


# -- training ----------------------------------------------------------------------------------

def random_crop(wav: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window [length] of wav [S]; a shorter clip lands at a random offset in zeros."""
    if wav.shape[0] >= length:
        start = int(rng.integers(0, wav.shape[0] - length + 1))
        return wav[start:start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - wav.shape[0] + 1))
    out[start:start + wav.shape[0]] = wav
    return out


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gain and, half the time, white noise at a random SNR (:data:`AUGMENTATION`): [L] -> [L]."""
    low, high = AUGMENTATION["gain_db"]
    out = crop * 10.0 ** (rng.uniform(low, high) / 20.0)
    noise = AUGMENTATION["white_noise"]
    if rng.random() < noise["probability"]:
        power = float(np.mean(out ** 2)) + 1e-10
        snr = rng.uniform(*noise["snr_db"])
        out = out + rng.standard_normal(out.shape[0]) * math.sqrt(power / 10.0 ** (snr / 10.0))
    return out.astype(np.float32)


def train_classifier(manifest: Manifests, out_dir: str | os.PathLike, *, split: str | None = None,
                     epochs: int = 10, batch_size: int = 32, lr: float = 2e-3, val_fraction: float = 0.15,
                     test_manifest: Manifests | None = None, test_split: str | None = None,
                     seed: int = 0, device: str = "cpu", arch: Architecture = Architecture(),
                     mel: MelSettings = MelSettings(), progress: bool = True) -> InhouseClassifier:
    """Train on the labelled clips (of ``split``) of one manifest or several, save to ``out_dir`` and return the
    saved classifier, loaded back. An epoch draws about one random window per ``window_seconds``
    of training audio.

    Its own accuracy is measured on clips it never trains on: ``test_manifest`` (of ``test_split``)
    when given, once at the end (then ``val_fraction`` may be 0: every source trains), else a
    ``val_fraction`` of each label's sources held out of the training clips, after every epoch.
    """
    if epochs < 1 or batch_size < 1:
        raise DashflowError(f"epochs and batch size must be positive, got {epochs} and {batch_size}")
    if val_fraction <= 0 and test_manifest is None:
        raise DashflowError("with no test manifest the validation fraction must be positive")
    records, chosen = labelled_records(manifest, split)
    labels = sorted({r["label"] for r in chosen})
    if len(labels) < 2:
        raise DashflowError(f"{manifest}: a classifier needs at least two labels, found {labels}")
    captions = caption_labels(records, labels)
    train, val = split_by_source(chosen, val_fraction, seed) if val_fraction > 0 else (chosen, [])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = InhouseCNN(len(labels), arch, mel).to(resolve_device(device))
    classifier = InhouseClassifier(model, labels, captions, arch, mel, {})
    audio = {r["audio_id"]: load_audio(r["audio"]).numpy()
             for r in tqdm(train + val, delay=1.0, desc="reading clips", unit="clip", disable=not progress)}
    window = int(arch.window_seconds * SAMPLE_RATE)
    targets = torch.tensor([labels.index(r["label"]) for r in train])
    items = np.repeat(np.arange(len(train)), [max(1, round(len(audio[r["audio_id"]]) / window)) for r in train])
    steps = max(1, len(items) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    history = []
    with tqdm(delay=1.0, total=epochs * steps, desc="training", unit="step", disable=not progress) as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            order, losses = rng.permutation(items), []
            for step in range(steps):
                index = order[step * batch_size:(step + 1) * batch_size]
                batch = np.stack([augment(random_crop(audio[train[i]["audio_id"]], window, rng), rng) for i in index])
                mix, partner = rng.beta(*[AUGMENTATION["mixup"]["beta"]] * 2), rng.permutation(len(index))
                _, logits = model(torch.from_numpy(mix * batch + (1 - mix) * batch[partner]).to(classifier.device))
                target = targets[index].to(classifier.device)
                loss = (mix * F.cross_entropy(logits, target, label_smoothing=0.1)
                        + (1 - mix) * F.cross_entropy(logits, target[partner], label_smoothing=0.1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                bar.update()
            model.eval()
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4)})
            if val:
                scores = top1_by_class(_predicted_labels(classifier, [audio[r["audio_id"]] for r in val]),
                                       [r["label"] for r in val])
                history[-1]["val_top1"] = scores["overall"]
            bar.set_postfix({key: f"{value:.3f}" for key, value in history[-1].items() if key != "epoch"})
    if test_manifest is not None:  # clips it never trained on, read one at a time
        val = [r for r in labelled_records(test_manifest, test_split)[1] if r["label"] in labels]
        scores = top1_by_class(_predicted_labels(classifier, (load_audio(r["audio"]).numpy() for r in val)),
                               [r["label"] for r in val])
    classifier.record = {
        "seed": seed,
        "training": {"manifest": ", ".join(str(p.resolve()) for p in manifest_paths(manifest)), "split": split, "n_clips": len(train),
                     "n_sources": len({source_of(r) for r in train}),
                     "seconds": round(sum(len(audio[r["audio_id"]]) for r in train) / SAMPLE_RATE, 1),
                     "clips_per_label": {label: sum(r["label"] == label for r in train) for label in labels},
                     "epochs": epochs, "batch_size": batch_size, "steps": epochs * steps,
                     "optimizer": f"AdamW (lr {lr}, weight decay 0.01), one-cycle schedule",
                     "loss": "cross-entropy, label smoothing 0.1", "augmentation": AUGMENTATION,
                     "parameters": sum(p.numel() for p in model.parameters()), "history": history},
        "validation": {"split": (f"test manifest {', '.join(str(p.resolve()) for p in manifest_paths(test_manifest))} "
                                 f"({test_split or 'all splits'})"
                                 if test_manifest else "by source"),
                       "fraction": val_fraction, "top1": scores["overall"],
                       "n_clips": len(val), "n_sources": len({source_of(r) for r in val}),
                       "per_class": scores["per_class"], "sources": sorted({source_of(r) for r in val})}}
    classifier.save(out_dir)
    return InhouseClassifier.load(out_dir, classifier.device)


def _predicted_labels(classifier: InhouseClassifier, clips: Iterable[np.ndarray]) -> list[str]:
    return [classifier.labels[i] for i in classifier.predict(clips).argmax(axis=1)]


# -- metrics -----------------------------------------------------------------------------------

def top1_by_class(predicted: Sequence[str], true: Sequence[str]) -> dict[str, Any]:
    """Top-1 accuracy of predicted vs. true labels [N] each: ``{"overall": float, "per_class":
    {true label: (correct, total)}}`` (labels sorted)."""
    if len(predicted) != len(true) or not true:
        raise DashflowError(f"top-1 needs equally many predicted and true labels, got {len(predicted)} and {len(true)}")
    per_class = {label: (sum(p == t for p, t in zip(predicted, true, strict=True) if t == label),
                         sum(t == label for t in true)) for label in sorted(set(true))}
    return {"overall": sum(c for c, _ in per_class.values()) / len(true), "per_class": per_class}


def prompt_separation(embeddings: np.ndarray, prompts: Sequence[Hashable], seeds: Sequence[Hashable]) -> dict:
    """Embeddings [N, E] of clips generated from (prompt, seed) -> mean cosine of pairs with the same
    prompt and different seeds (``same_prompt``), of pairs with different prompts and the same seed
    (``same_seed``), and ``separation = same_prompt - same_seed``, with the pair counts."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or not len(x) == len(prompts) == len(seeds):
        raise DashflowError(f"prompt separation needs embeddings [N, E] and N prompts and seeds, got {x.shape}, "
                            f"{len(prompts)} and {len(seeds)}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cosine = x @ x.T
    upper = np.triu(np.ones_like(cosine, dtype=bool), k=1)
    prompt, seed = _codes(prompts), _codes(seeds)
    same_p, same_s = prompt[:, None] == prompt[None, :], seed[:, None] == seed[None, :]
    pairs_p, pairs_s = upper & same_p & ~same_s, upper & same_s & ~same_p
    if not pairs_p.any() or not pairs_s.any():
        raise DashflowError("prompt separation needs one prompt at two seeds and two prompts at one seed "
                            f"(found {int(pairs_p.sum())} and {int(pairs_s.sum())} such pairs)")
    same_prompt, same_seed = float(cosine[pairs_p].mean()), float(cosine[pairs_s].mean())
    return {"separation": same_prompt - same_seed, "same_prompt": same_prompt, "same_seed": same_seed,
            "n_pairs_same_prompt": int(pairs_p.sum()), "n_pairs_same_seed": int(pairs_s.sum())}


def _codes(values: Sequence[Hashable]) -> np.ndarray:
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(v, len(index)) for v in values])

"""Figures for the HTML report, returned as base64 PNG strings (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from dashflow.audio import load_audio
from dashflow.errors import DashflowError
from dashflow.spectral import mel_filterbank, stft_magnitude

SPECTROGRAM_RATE = 16000
SPECTROGRAM_HOP = 256
CURVE_AXES = ("train_step", "steps", "cfg")


def to_png(fig: plt.Figure) -> str:
    """Render and close ``fig``; base64 PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram(runs: list[dict[str, Any]], key: str, label: str) -> str | None:
    """Per-clip distribution of ``key`` for every run that has it (overlaid)."""
    series = [(run["name"], [c[key] for c in run["per_clip"].values() if key in c]) for run in runs]
    series = [(name, values) for name, values in series if values]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = np.histogram_bin_edges(np.concatenate([v for _, v in series]), bins=20)
    for name, values in series:
        ax.hist(values, bins=bins, alpha=0.6, label=f"{name} (mean {np.mean(values):.3g})")
    ax.set_xlabel(f"per-clip {label}", fontsize=11)
    ax.set_ylabel("clips", fontsize=11)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # few, short tick labels that never overlap
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.tick_params(labelsize=10)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


def curve_axis(runs: list[dict[str, Any]]) -> tuple[str, list[float]] | None:
    """The first of train_step / steps / cfg that is a number in every run and not constant."""
    for key in CURVE_AXES:
        values = [run["settings"].get(key) for run in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 1:
            return key, [float(v) for v in values]
    return None


def curves(runs: list[dict[str, Any]], info: dict[str, tuple[str, str, str]]) -> str | None:
    """Each metric against training step, sampler steps or CFG (else run order), one panel each."""
    if len(runs) < 2:
        return None
    axis = curve_axis(runs)
    xs, xlabel = (axis[1], axis[0]) if axis else (list(range(len(runs))), "run")
    keys = [k for k in info if sum(run["metrics"].get(k, {}).get("value") is not None for run in runs) >= 2]
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        points = sorted((x, run["metrics"][key]["value"]) for x, run in zip(xs, runs, strict=True)
                        if run["metrics"].get(key, {}).get("value") is not None)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        label, better, _ = info[key]
        ax.set_title(f"{label} ({better} is better)", fontsize=10)
        ax.set_xlabel(xlabel)
        if not axis:
            ax.set_xticks(xs, [run["name"] for run in runs], rotation=30, fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return to_png(fig)


def spectrogram_grid(best: list[dict[str, Any]], worst: list[dict[str, Any]]) -> str | None:
    """Mel spectrograms of the best and worst clips, each above its reference when paired.

    Entries: ``{"title": str, "file": path, "reference_file": path | None}``.
    """
    groups = [g for g in (best, worst) if g]
    if not groups:
        return None
    with_ref = any(e.get("reference_file") for g in groups for e in g)
    per_group = 2 if with_ref else 1
    cols = max(len(g) for g in groups)
    fig, axes = plt.subplots(per_group * len(groups), cols, figsize=(4.0 * cols, 1.7 * per_group * len(groups)),
                             squeeze=False)
    for gi, group in enumerate(groups):
        for ci in range(cols):
            entry = group[ci] if ci < len(group) else None
            panels = [("file", entry and entry["title"])] + ([("reference_file", "reference")] if with_ref else [])
            for pi, (key, title) in enumerate(panels):
                ax = axes[gi * per_group + pi, ci]
                if entry is None:
                    ax.axis("off")
                    continue
                _draw(ax, entry.get(key), title, first_col=ci == 0)
    fig.tight_layout(h_pad=0.6, w_pad=0.6)
    return to_png(fig)


def _draw(ax: plt.Axes, path: str | Path | None, title: str, first_col: bool) -> None:
    ax.set_title(title, fontsize=8, loc="left")
    ax.tick_params(labelsize=6)
    image = _image(path)
    if image is None:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no reference" if path is None else "unreadable", ha="center", va="center", fontsize=8)
        return
    seconds = image.shape[1] * SPECTROGRAM_HOP / SPECTROGRAM_RATE
    ax.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, image.shape[0]))
    ax.set_xticks(np.arange(0.0, seconds + 1e-9, max(1.0, float(round(seconds / 5)))))
    ax.set_xlabel("s", fontsize=6, labelpad=1)
    if first_col:
        ax.set_ylabel("mel band", fontsize=6)
    else:
        ax.set_yticks([])


def _image(path: str | Path | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return log_mel_image(load_audio(path, SPECTROGRAM_RATE).numpy(), SPECTROGRAM_RATE,
                             hop_length=SPECTROGRAM_HOP)
    except DashflowError:
        return None


def log_mel_image(wav: np.ndarray, sample_rate: int, n_mels: int = 80,
                  window_length: int = 1024, hop_length: int = 256) -> np.ndarray:
    """A dB-scaled mel spectrogram [n_mels, T] for plots (80 dB dynamic range)."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
    if x.shape[-1] <= window_length // 2:
        x = torch.nn.functional.pad(x, (0, window_length // 2 + 1 - x.shape[-1]))
    mag = stft_magnitude(x, window_length, hop_length)[0].numpy()
    mel = mel_filterbank(sample_rate, window_length, n_mels).T.numpy() @ (mag ** 2)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - 80.0)

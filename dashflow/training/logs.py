"""What a run logs: the progress bar, TensorBoard (scalars, audio, spectrogram images) and
``<output_dir>/metrics.jsonl``, which always reads as one uninterrupted run."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from dashflow.outputs import atomic_path

METRICS_NAME = "metrics.jsonl"


def init_trackers(accelerator: Accelerator, name: str, config: Any) -> None:
    """Start the trackers with the config flattened to scalar hyper-parameters."""
    raw = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    accelerator.init_trackers(name, config=_flatten(raw))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat




class MetricsLog:
    """Append-only JSON-lines log of ``{"step": n, ...}`` on the main process.

    Opening it at ``start_step`` drops lines logged after that step by a run that died before
    its next checkpoint, so the file always reads as one uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike, start_step: int = 0, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled and self.path.is_file():
            kept = [line for line, record in _parsed_lines(self.path) if record["step"] <= start_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")


def _parsed_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of every whole line of a MetricsLog file; a line torn by a kill is dropped."""
    parsed = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            parsed.append((line, record))
    return parsed


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a :class:`MetricsLog` file."""
    return [record for _, record in _parsed_lines(Path(path))]


def _tensorboard(accelerator: Accelerator):
    if not accelerator.is_main_process:
        return None
    try:
        return accelerator.get_tracker("tensorboard", unwrap=True)
    except (ValueError, KeyError):
        return None


def log_audio(accelerator: Accelerator, tag: str, wav: torch.Tensor, step: int,
              sample_rate: int = 16000) -> None:
    """Write one clip ``wav`` [S] to TensorBoard (main process; no-op without the tracker)."""
    writer = _tensorboard(accelerator)
    if writer is not None:
        clip = wav.detach().float().cpu().clamp(-1, 1).reshape(1, -1)
        writer.add_audio(tag, clip, step, sample_rate=sample_rate)


def log_spectrogram(accelerator: Accelerator, tag: str, spec: torch.Tensor, step: int) -> None:
    """Write a log-scale spectrogram ``spec`` [F, T] (low frequencies first) as a coloured
    image (magma, low frequencies at the bottom) to TensorBoard."""
    writer = _tensorboard(accelerator)
    if writer is None:
        return
    from matplotlib import colormaps

    image = spec.detach().float().cpu().flip(0)
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
    writer.add_image(tag, colormaps["magma"](image.numpy())[..., :3], step, dataformats="HWC")


class RunLog:
    """The logs of one run: ``step()`` after every optimizer step advances the progress bar and,
    every ``log_every`` steps, averages the loss tensors over processes (the only place they
    leave the device) and writes them with the other scalars to the trackers and metrics.jsonl.

    ``averaged`` losses (e.g. one per task of a mixture, given only at the steps that drew it) are
    summed on the device instead and written as their mean over the steps since the last log;
    names no step of that window gave are left out.
    ``config`` (the run's resolved config) is recorded as flat hyper-parameters; ``shown`` names
    the value on the progress bar.
    """

    def __init__(self, accelerator: Accelerator, name: str, config: Any, output_dir: str, max_steps: int,
                 log_every: int, start_step: int, shown: str = "loss"):
        self.accelerator, self.log_every, self.shown = accelerator, log_every, shown
        self.metrics = MetricsLog(Path(output_dir) / METRICS_NAME, start_step, accelerator.is_main_process)
        init_trackers(accelerator, name, config)
        self.progress = tqdm(total=max_steps, initial=start_step, desc=name,
                             disable=not accelerator.is_local_main_process)
        self.window: dict[str, tuple[torch.Tensor, int]] = {}  # averaged name -> (sum, steps) since the last log

    def step(self, step: int, losses: Mapping[str, torch.Tensor], averaged: Mapping[str, torch.Tensor] | None = None,
             **scalars: float | torch.Tensor) -> None:
        """After optimizer step ``step``: ``losses`` and ``averaged`` are this process's device scalars."""
        self.progress.update(1)
        for name, loss in (averaged or {}).items():
            total, count = self.window.get(name, (0.0, 0))
            self.window[name] = (total + loss.detach().float(), count + 1)
        if step % self.log_every:
            return
        names = list(losses) + list(self.window)
        local = torch.stack([losses[name].detach().float() for name in losses]
                            + [total / count for total, count in self.window.values()])
        self.window = {}
        means = self.accelerator.reduce(local, reduction="mean").tolist()
        values = dict(zip(names, means)) | {key: float(value) for key, value in scalars.items()}
        self.write(step, values)
        self.progress.set_postfix({self.shown: f"{values[self.shown]:.4f}"}, refresh=False)

    def write(self, step: int, values: Mapping[str, float]) -> None:
        """Send ``values`` (already reduced) to the trackers and metrics.jsonl."""
        self.accelerator.log(dict(values), step=step)
        self.metrics.write(step, values)

    def close(self) -> None:
        self.progress.close()

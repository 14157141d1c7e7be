"""The task registry: every pipeline a task name opens, read by ``load_pipeline``, the recipes and
the command lines (``generate --task`` offers the text-conditioned ones). Torch-free, so parsers
can read it before anything heavy is imported; classes are imported on first use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from dashflow.errors import DashflowError


@dataclass(frozen=True)
class Task:
    """name: the ``--task`` value; pipeline: ``"module:Class"``; text: prompted by text
    (``generate``) rather than by audio (``enhance``); description: one line for help texts."""

    name: str
    pipeline: str
    text: bool
    description: str

    @property
    def class_name(self) -> str:
        return self.pipeline.rsplit(":", 1)[1]

    def pipeline_class(self) -> type:
        module, name = self.pipeline.split(":")
        return getattr(importlib.import_module(module), name)


_AUDIO = "dashflow.generation.pipelines.audio"
TASKS: dict[str, Task] = {task.name: task for task in (
    Task("tta", f"{_AUDIO}:TextToAudioPipeline", True, "text-to-audio"),
    Task("ttm", f"{_AUDIO}:TextToMusicPipeline", True, "text-to-music"),
    Task("se", "dashflow.generation.pipelines.speech_enhancement:SpeechEnhancementPipeline", False,
         "speech enhancement"),
)}
TEXT_TASKS = tuple(name for name, task in TASKS.items() if task.text)


def get_task(name: str, text: bool | None = None) -> Task:
    """The task called ``name`` (only text-prompted ones with ``text=True``); one DashflowError line if none."""
    offered = [n for n, task in TASKS.items() if text is None or task.text == text]
    if name not in offered:
        raise DashflowError(f"unknown task {name!r} (choose from {', '.join(offered)})")
    return TASKS[name]


def task_of_class(class_name: str | None) -> str | None:
    """The task whose pipeline class is called ``class_name`` (None if none)."""
    return next((name for name, task in TASKS.items() if task.class_name == class_name), None)

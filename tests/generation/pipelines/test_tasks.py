"""The task registry: what ``load_pipeline``, the recipes and ``generate --task`` read."""

from __future__ import annotations

import re

import pytest
from dashflow.generation.cli.generate import build_generate_parser
from dashflow.generation.pipelines import SpeechEnhancementPipeline, TextToAudioPipeline, TextToMusicPipeline
from dashflow.generation.pipelines.tasks import TASKS, TEXT_TASKS, get_task, task_of_class

from dashflow.errors import DashflowError


def test_registry_names_every_pipeline_once():
    assert get_task("tta").pipeline_class() is TextToAudioPipeline
    assert get_task("ttm").pipeline_class() is TextToMusicPipeline
    assert get_task("se").pipeline_class() is SpeechEnhancementPipeline
    assert TEXT_TASKS == ("tta", "ttm") and task_of_class("TextToMusicPipeline") == "ttm"
    assert task_of_class("Unknown") is None
    assert {task.class_name for task in TASKS.values()} == {"TextToAudioPipeline", "TextToMusicPipeline",
                                                            "SpeechEnhancementPipeline"}


def test_generate_offers_the_text_tasks():
    action = next(a for a in build_generate_parser()._actions if a.dest == "task")
    assert tuple(action.choices) == TEXT_TASKS


def test_unknown_or_wrong_kind_of_task_is_one_line():
    with pytest.raises(DashflowError, match=re.escape("unknown task 'tts' (choose from tta, ttm, se)")):
        get_task("tts")
    with pytest.raises(DashflowError, match=re.escape("unknown task 'se' (choose from tta, ttm)")):
        get_task("se", text=True)

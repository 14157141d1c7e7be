"""Name resolution in load_text_encoder: every wrong input is one DashflowError line saying what to pass."""

from __future__ import annotations

import json

import huggingface_hub
import pytest

from dashflow.errors import DashflowError
from text_encoders import load_text_encoder


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["t5-huge", "no/such/folder", "clip"])
def test_unknown_name_or_missing_folder(name):
    with pytest.raises(DashflowError) as excinfo:
        load_text_encoder(name)
    message = _one_line(excinfo)
    assert name in message and "'minilm'" in message and "local folder" in message


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(DashflowError, match="is a file, not a model folder"):
        load_text_encoder(path)


def test_folder_without_config(tmp_path):
    with pytest.raises(DashflowError, match="no config.json"):
        load_text_encoder(tmp_path)


def test_folder_with_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(DashflowError, match="'gpt2' is not a supported text encoder"):
        load_text_encoder(tmp_path)


def test_folder_with_config_but_no_weights(tmp_path, t5_folder):
    (tmp_path / "config.json").write_text((t5_folder / "config.json").read_text())
    with pytest.raises(DashflowError) as excinfo:
        load_text_encoder(tmp_path)
    assert str(tmp_path) in _one_line(excinfo)


def test_hub_name_offline_says_how_to_get_it(monkeypatch):
    """google/flan-t5-large is not in any local cache on these machines; offline mode fails fast."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DashflowError) as excinfo:
        load_text_encoder("flan-t5-large")
    message = _one_line(excinfo)
    assert "google/flan-t5-large" in message and "HF_HUB_OFFLINE" in message
    assert "hf download google/flan-t5-large" in message and "'minilm'" in message

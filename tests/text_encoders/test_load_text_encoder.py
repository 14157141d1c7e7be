"""Name resolution in load_text_encoder: every wrong input is one DashflowError line saying what to pass."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import pytest
from dashflow.text_encoders import load_text_encoder
from dashflow.text_encoders.minilm import MiniLMEncoder, bundled_minilm_folder
from transformers import BertConfig, BertModel

from dashflow.errors import DashflowError


def tiny_bert() -> BertModel:
    return BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32))


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


def test_folder_without_weights(tmp_path, t5_folder):
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(t5_folder / name, tmp_path / name)
    with pytest.raises(DashflowError) as excinfo:
        load_text_encoder(tmp_path)
    message = _one_line(excinfo)
    assert str(tmp_path) in message and "model.safetensors" in message


@pytest.mark.parametrize("kind", ["t5", "bert"])
def test_folder_without_tokenizer_files(tmp_path, t5_folder, kind):
    """transformers would quietly build an empty tokenizer (every word -> <unk>); we refuse."""
    if kind == "t5":
        shutil.copy(t5_folder / "config.json", tmp_path / "config.json")
        shutil.copy(t5_folder / "model.safetensors", tmp_path / "model.safetensors")
    else:
        tiny_bert().save_pretrained(tmp_path)
    with pytest.raises(DashflowError, match="no tokenizer file"):
        load_text_encoder(tmp_path)


def test_local_bert_folder_loads_as_minilm_style(tmp_path):
    tiny_bert().save_pretrained(tmp_path)
    shutil.copy(bundled_minilm_folder() / "vocab.txt", tmp_path / "vocab.txt")
    encoder = load_text_encoder(tmp_path)
    assert isinstance(encoder, MiniLMEncoder) and encoder.dim == 16
    assert encoder.max_length == 512  # no sentence_bert_config.json: the position table size
    emb, mask = encoder.encode(["a dog barks", ""])
    assert emb.shape == (2, 6, 16) and mask.sum(1).tolist() == [6, 2]  # [CLS] a dog bark ##s [SEP]


def test_hub_name_offline_says_how_to_get_it(monkeypatch):
    """google/flan-t5-large is not in any local cache on these machines; offline mode fails fast."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DashflowError) as excinfo:
        load_text_encoder("flan-t5-large")
    message = _one_line(excinfo)
    assert "google/flan-t5-large" in message and "HF_HUB_OFFLINE" in message
    assert "hf download google/flan-t5-large" in message and "'minilm'" in message

"""Fixtures: the bundled MiniLM, and a tiny random Flan-T5 saved in the official folder layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from dashflow.text_encoders.minilm import MiniLMEncoder
from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

CAPTIONS = (
    "a dog barks in the distance", "rain falls on a tin roof", "a man speaks while birds chirp",
    "music with drums and a bass guitar", "the engine of a car idles", "people talk in a busy cafe",
    "a baby cries and a woman sings softly", "wind blows through tall trees at night",
)


def tiny_t5_config(**overrides) -> T5Config:
    """A 2-layer gated-GELU T5 (the Flan-T5 architecture) with d_model 32."""
    kwargs = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=1,
                  num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                  tie_word_embeddings=False, dropout_rate=0.1, decoder_start_token_id=0)
    kwargs.update(overrides)
    return T5Config(**kwargs)


@pytest.fixture(scope="session")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder.from_pretrained()


@pytest.fixture(scope="session")
def spiece_model(tmp_path_factory) -> Path:
    """A 48-piece unigram SentencePiece model trained on a few captions (T5 ids: pad 0, eos 1, unk 2)."""
    folder = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS * 10), model_prefix=str(folder / "spiece"), vocab_size=48,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        minloglevel=2)
    return folder / "spiece.model"


def save_official_layout(folder: Path, spiece_model: Path, seed: int) -> T5ForConditionalGeneration:
    """Write a full seq2seq T5 like the google/flan-t5-* repos: config.json, generation_config.json,
    model.safetensors (encoder + decoder), spiece.model, tokenizer.json, tokenizer_config.json."""
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(tiny_t5_config()).eval()
    model.save_pretrained(folder)
    shutil.copy(spiece_model, folder / "spiece.model")
    T5Tokenizer.from_pretrained(spiece_model.parent, extra_ids=0).save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def t5_folder(tmp_path_factory, spiece_model) -> Path:
    folder = tmp_path_factory.mktemp("flan-t5-tiny")
    save_official_layout(folder, spiece_model, seed=0)
    return folder

"""Flan-T5 text encoder (the paper default): the T5 encoder stack's ``last_hidden_state``.

``google/flan-t5-large`` gives 1024-d token states. Only ``model.safetensors`` is read (the
decoder half of a full seq2seq checkpoint is ignored); prompts are truncated at 512 tokens as
in UniFlow-Audio / Dasheng-AudioGen, and the encoder runs in float32 unless asked otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from dashflow.text_encoders.base import (
    TextEncoder,
    check_loading_info,
    check_tokenizer_files,
    hf_load,
)
from transformers import AutoTokenizer, T5EncoderModel

FLAN_T5_MAX_LENGTH = 512


class FlanT5Encoder(TextEncoder):
    """Frozen T5 encoder: ``encode(prompts) -> (embeddings [B, L, d_model], mask [B, L])``."""

    @classmethod
    def from_pretrained(cls, source: str | Path, dtype: torch.dtype = torch.float32,
                        max_length: int = FLAN_T5_MAX_LENGTH) -> FlanT5Encoder:
        """Load from a local folder or a hub id (config.json, model.safetensors, spiece.model or
        tokenizer.json). Missing encoder weights raise DashflowError."""
        check_tokenizer_files(source, ("tokenizer.json", "spiece.model"))
        model, info = hf_load(source, lambda: T5EncoderModel.from_pretrained(
            source, dtype=dtype, use_safetensors=True, output_loading_info=True))
        check_loading_info(source, info)
        tokenizer = hf_load(source, lambda: AutoTokenizer.from_pretrained(source))
        return cls(model, tokenizer, name=str(source), max_length=max_length)

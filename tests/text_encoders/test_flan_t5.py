"""Flan-T5 path with a tiny random T5 in the official folder layout; full size on the meta device."""

from __future__ import annotations

import shutil

import pytest
import sentencepiece as spm
import torch
from dashflow.text_encoders import load_text_encoder
from dashflow.text_encoders.t5 import FlanT5Encoder
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

from dashflow.errors import DashflowError
from tests.text_encoders.conftest import CAPTIONS, save_official_layout

ATOL = 1e-5  # fp32, different padded lengths


@pytest.fixture()
def encoder(t5_folder) -> FlanT5Encoder:
    return load_text_encoder(t5_folder)


def test_official_layout_loads_and_matches_the_seq2seq_encoder(encoder, t5_folder):
    assert isinstance(encoder, FlanT5Encoder)
    assert encoder.dim == 32 and encoder.max_length == 512
    emb, mask = encoder.encode(list(CAPTIONS[:3]))
    reference = T5ForConditionalGeneration.from_pretrained(t5_folder).eval()
    batch = encoder.tokenizer(list(CAPTIONS[:3]), padding="longest", return_tensors="pt")
    with torch.no_grad():
        expected = reference.encoder(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(emb[mask], expected[mask], atol=ATOL, rtol=0)
    assert (emb[~mask] == 0).all()


def test_mask_counts_sentencepiece_pieces_plus_eos(encoder, spiece_model):
    prompts = ["a dog barks", "music with drums and a bass guitar at night", ""]
    pieces = spm.SentencePieceProcessor(model_file=str(spiece_model))
    counts = [len(pieces.encode(p)) + 1 for p in prompts]  # T5 appends </s>
    emb, mask = encoder.encode(prompts)
    assert emb.shape == (3, max(counts), 32)
    assert mask.sum(1).tolist() == counts
    assert counts[2] == 1  # the empty prompt is a lone </s>


def test_padding_does_not_change_an_item(encoder):
    alone, mask_alone = encoder.encode(["a dog barks"])
    batched, mask = encoder.encode(["a dog barks", CAPTIONS[6]])
    n = int(mask_alone.sum())
    assert mask[0].sum() == n < mask.shape[1]
    torch.testing.assert_close(batched[0, :n], alone[0, :n], atol=ATOL, rtol=0)


def test_huge_prompt_is_truncated_to_512(encoder):
    emb, mask = encoder.encode([" ".join(["dog"] * 10_000)])
    assert emb.shape == (1, 512, 32) and mask.all()


def test_frozen_eval_and_deterministic(encoder):
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training  # dropout 0.1 in the config never fires
    first, _ = encoder.encode(list(CAPTIONS))
    assert torch.equal(first, encoder.encode(list(CAPTIONS))[0])


def test_autocast_region_does_not_change_the_encoder_precision(encoder):
    expected, _ = encoder.encode(list(CAPTIONS[:3]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, _ = encoder.encode(list(CAPTIONS[:3]))
    assert torch.equal(inside, expected)


def test_spiece_model_only_folder_loads_the_same(t5_folder, tmp_path, encoder):
    """A folder without tokenizer.json (older exports) converts spiece.model on the fly."""
    for name in ("config.json", "model.safetensors", "spiece.model"):
        shutil.copy(t5_folder / name, tmp_path / name)
    other = load_text_encoder(str(tmp_path))
    emb, mask = other.encode(list(CAPTIONS[:4]))
    expected, expected_mask = encoder.encode(list(CAPTIONS[:4]))
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(emb, expected, atol=ATOL, rtol=0)


def test_missing_encoder_weights_raise(t5_folder, tmp_path):
    for name in ("config.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(t5_folder / name, tmp_path / name)
    weights = load_file(t5_folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("encoder.block.1.")},
              tmp_path / "model.safetensors")
    with pytest.raises(DashflowError, match="lacks .* weights"):
        load_text_encoder(tmp_path)


def test_dtype_and_weights_hash(t5_folder, spiece_model, tmp_path, encoder):
    assert load_text_encoder(t5_folder).weights_hash() == encoder.weights_hash()
    assert encoder.to("cpu").weights_hash() == encoder.weights_hash()
    half = load_text_encoder(t5_folder, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    assert half.encode(["a dog"])[0].dtype == torch.float32
    assert half.weights_hash() != encoder.weights_hash()
    save_official_layout(tmp_path, spiece_model, seed=1)
    assert load_text_encoder(tmp_path).weights_hash() != encoder.weights_hash()


def test_device_argument(t5_folder):
    assert load_text_encoder(t5_folder, device="cpu").device == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(encoder):
    cpu, mask = encoder.encode(list(CAPTIONS))
    gpu, gpu_mask = encoder.to("cuda").encode(list(CAPTIONS))
    assert gpu.device.type == "cuda" and torch.equal(gpu_mask.cpu(), mask)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


FLAN_T5_LARGE = dict(vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
                     relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
                     tie_word_embeddings=False)


def test_flan_t5_large_encoder_on_meta(spiece_model, t5_folder):
    config = T5Config(**FLAN_T5_LARGE)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    d, f, layers = 1024, 2816, 24
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # q,k,v,o + gated FFN (wi_0, wi_1, wo) + 2 RMSNorms
    expected = 32128 * d + layers * per_layer + 32 * 16 + d  # + relative bias + final norm
    assert sum(p.numel() for p in model.parameters()) == expected == 341_231_104
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == (32, 16)
    assert shapes["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] == (2816, 1024)
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes
    wrapped = FlanT5Encoder(model, load_text_encoder(t5_folder).tokenizer, "flan-t5-large", 512)
    assert wrapped.dim == 1024

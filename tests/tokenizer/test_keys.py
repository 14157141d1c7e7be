"""Full-size configs on the meta device: official keys, shapes, kinds and parameter counts."""

import json
from pathlib import Path

import pytest
import torch
from dashflow.tokenizer import DashengTokenizer
from dashflow.tokenizer.config import PRESETS
from safetensors.torch import save_file

# state_dict of the reference DashengTokenizerModel at its default config (meta device), with
# parameter counts per prefix; provenance in the file's "source" field
REFERENCE = json.loads((Path(__file__).parent / "official_keys.json").read_text())


def _meta(preset: str = "paper") -> DashengTokenizer:
    with torch.device("meta"):
        return DashengTokenizer.from_preset(preset)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _semantic_params(dim: int, depth: int) -> int:
    """Dasheng ViT: blocks (qkv, proj, 2 LN, MLP x4), patch conv (64,4), pos embeds, BN, final LN."""
    block = 12 * dim * dim + 13 * dim
    return depth * block + (256 * dim + dim) + (252 * dim + dim) + 128 + 2 * dim


def test_full_size_state_dict_equals_official_key_list():
    state = _meta().state_dict()
    ref = REFERENCE["state_dict"]
    assert list(state) == list(ref)  # same names, same registration order
    assert {k: list(v.shape) for k, v in state.items()} == {k: v["shape"] for k, v in ref.items()}
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()} == \
        {k: v["dtype"] for k, v in ref.items()}
    buffers = {name for name, _ in _meta().named_buffers()}
    assert buffers == {k for k, v in ref.items() if v["kind"] == "buffer"} == set(REFERENCE["buffers"])


def test_full_size_parameter_counts():
    model = _meta()
    semantic = _count(model.semantic_encoder)
    acoustic = _count(model.encoder) - semantic
    decode_path = _count(model.upsampler) + _count(model.decoder)
    assert semantic == REFERENCE["param_counts_top_level"]["encoder.model"] == 630_333_568  # 630.33 M
    assert acoustic == 656_640 + 2_560 == 659_200  # 0.66 M
    assert decode_path == REFERENCE["total_params_decode_path"] == 173_927_682  # 173.93 M
    assert _count(model) == REFERENCE["total_params"] == 804_920_450
    for prefix, expected in REFERENCE["param_counts_sub"].items():
        module = model.get_submodule(prefix) if not prefix.endswith("pos_embed") else None
        got = _count(module) if module is not None else model.get_parameter(prefix).numel()
        assert got == expected, prefix
    assert sum(p.numel() for p in model.trainable_parameters()) == acoustic + decode_path


@pytest.mark.parametrize("preset,dim,depth", [("base", 768, 12), ("paper", 1280, 32), ("1.2b", 1536, 40)])
def test_semantic_sizes_of_presets(preset, dim, depth):
    model = _meta(preset)
    assert _count(model.semantic_encoder) == _semantic_params(dim, depth)
    assert model.latent_dim == dim and model.samples_per_latent == 640
    assert _count(model.decoder) == 170_649_602 + (dim - 1280) * 1280 * 7  # embed conv takes dim inputs


def test_tiny_preset_is_small_and_keeps_the_decoder_geometry():
    config = PRESETS["tiny"]
    assert (config.istft_n_fft, config.istft_hop, config.upsample_tokens) == (1280, 320, 2)
    assert _count(DashengTokenizer.from_preset("tiny")) < 500_000


def test_tiny_state_dict_with_official_names_loads_strictly(tmp_path):
    """A file written with only official names (no front-end buffers) loads with nothing missing."""
    source = DashengTokenizer.from_preset("tiny")
    optional = ("spectrogram.window", "mel_scale.fb", "istft.window", "init_bn.1.num_batches_tracked")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith(optional)}
    assert len(state) == len(source.state_dict()) - 6
    folder = tmp_path / "official"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    official_config = {**DashengTokenizer.preset_config("tiny"), "model_type": "dashengtokenizer",
                       "architectures": ["DashengTokenizerModel"], "torch_dtype": "float32",
                       "auto_map": {"AutoModel": "modeling_dasheng_tokenizer.DashengTokenizerModel"}}
    (folder / "config.json").write_text(json.dumps(official_config))
    loaded = DashengTokenizer.from_pretrained(folder)
    result = loaded.load_state_dict(source.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

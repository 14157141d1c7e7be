"""Full-size presets on the meta device (counts, official keys) and strict checkpoint I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dashflow.generation.model.audiogen import PRESETS, AudioGenModel
from safetensors.torch import load_file, save_file

from dashflow.errors import DashflowError

# the official key list of mispeech/Dasheng-AudioGen's model.safetensors (its header), vendored
OFFICIAL = json.loads((Path(__file__).parent / "data" / "audiogen_keys.json").read_text())

PAPER_TRAINABLE = 748_488_194
PAPER_BACKBONE = 736_409_088
AUDIOGEN_TRAINABLE = 2_185_498_626
SMALL_TRAINABLE = 205_809_410


def meta_model(preset: str) -> AudioGenModel:
    with torch.device("meta"):
        return AudioGenModel.from_preset(preset)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_paper_parameter_counts():
    model = meta_model("paper")
    assert trainable(model) == PAPER_TRAINABLE
    assert trainable(model.backbone) == PAPER_BACKBONE
    assert trainable(model.content_adapter) == 11_027_458
    assert model.config.dit_embed_dim == 1536 and model.config.dit_num_heads == 24
    assert len(model.backbone.blocks()) == 11


def test_audiogen_and_small_parameter_counts():
    assert trainable(meta_model("audiogen")) == AUDIOGEN_TRAINABLE
    small = meta_model("small")
    assert trainable(small) == SMALL_TRAINABLE
    assert small.config.latent_dim == 1280 and small.config.content_dim == 1024


@pytest.mark.parametrize("preset, depth", [("audiogen", "depth_32"), ("paper", "depth_11")])
def test_official_state_dict_keys_shapes_and_order(preset, depth):
    want = OFFICIAL[depth]
    model = meta_model(preset)
    got = model.state_dict()
    assert list(got) == [entry[0] for entry in want["keys"]]
    for key, shape, *dtype in want["keys"]:
        assert list(got[key].shape) == shape, key
        assert got[key].dtype == (torch.int64 if dtype == ["int64"] else torch.float32), key
    assert trainable(model) == want["total_params"]
    assert set(dict(model.named_buffers())) == set(want["buffers"])


def test_audiogen_defaults_are_the_official_config():
    model = meta_model("audiogen")
    official = {"dit_embed_dim": 1536, "dit_depth": 32, "dit_num_heads": 24, "latent_dim": 1280,
                "content_dim": 1024, "instruction_seq_len": 14, "adapter_num_heads": 16,
                "duration_predictor_filter_channels": 512, "frame_resolution": 0.005}
    assert {k: model.config[k] for k in official} == official
    assert PRESETS["audiogen"] == {}


def official_style_folder(tmp_path: Path, model: AudioGenModel, drop: tuple[str, ...] = ("dummy_param",)) -> Path:
    """A folder laid out like the HF repo: transformers-style config.json + model.safetensors."""
    folder = tmp_path / "official"
    folder.mkdir()
    config = {"model_type": "dasheng_audiogen", "architectures": ["DashengAudioGenModel"],
              "auto_map": {"AutoModel": "modeling_dasheng_audiogen.DashengAudioGenModel"},
              "transformers_version": "4.57.0", "torch_dtype": "float32",
              **{k: v for k, v in model.config.items() if not k.startswith("_")}}
    for name in ("dit_in_chans", "dit_out_chans"):
        config[name] = model.config.latent_dim
    for name in ("dit_context_dim", "dit_ta_context_dim"):
        config[name] = model.config.content_dim
    config["special_tokens"] = []
    (folder / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in drop}
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_official_layout_loads_strictly(tmp_path):
    torch.manual_seed(0)
    src = AudioGenModel.from_preset("tiny")
    with torch.no_grad():
        src.instruction_embedding.normal_()
        src.dummy_ta_embed.normal_()
    folder = official_style_folder(tmp_path, src)
    loaded = AudioGenModel.from_pretrained(folder)
    assert not loaded.training
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.instruction_lengths.dtype == torch.int64


def public_config(model: AudioGenModel) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def test_sharded_official_weights_load(tmp_path):
    src = AudioGenModel.from_preset("tiny")
    folder = official_style_folder(tmp_path, src)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    keys = list(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(folder / name))
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = AudioGenModel.from_pretrained(folder)
    assert torch.equal(loaded.backbone.final_block.linear.weight, src.backbone.final_block.linear.weight)


def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    src = AudioGenModel.from_preset("tiny", dit_depth=2)
    src.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert set(load_file(tmp_path / "m" / "model.safetensors")) == set(src.state_dict())
    loaded = AudioGenModel.from_pretrained(tmp_path / "m")
    assert public_config(loaded) == public_config(src)
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    half = AudioGenModel.from_pretrained(tmp_path / "m", torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.instruction_lengths.dtype == torch.int64


def one_line_error(fn, match: str) -> str:
    with pytest.raises(DashflowError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_from_pretrained_errors_are_one_line(tmp_path):
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "nope"), "model folder not found")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "empty"), "config.json not found")

    AudioGenModel.from_preset("tiny").save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "m"), "no model.safetensors")


def test_mismatched_checkpoints_are_rejected(tmp_path):
    model = AudioGenModel.from_preset("tiny")
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "dit_depth": 5}))
    msg = one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "m"), "missing keys")
    assert "in_blocks.1" in msg
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "dit_embed_dim": 128}))
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "m"), "shape mismatches")
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    save_file({**state, "backbone.extra": torch.zeros(1)}, str(weights))
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "m"), "1 unexpected keys .first: backbone.extra")
    weights.write_bytes(b"not safetensors")
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "m"), "unreadable weights")


def test_unsupported_configs_and_arguments(tmp_path):
    one_line_error(lambda: AudioGenModel.from_preset("tiny", dit_time_fusion="ada_sola"), "not implemented")
    one_line_error(lambda: AudioGenModel.from_preset("tiny", dit_in_chans=7), "must equal 16")
    one_line_error(lambda: AudioGenModel.from_preset("huge"), "unknown preset")
    one_line_error(lambda: AudioGenModel.from_preset("tiny", dit_num_heads=5), "not divisible")
    AudioGenModel.from_preset("tiny").save_pretrained(tmp_path / "m")
    # DiffusionPipeline's loader arguments at their defaults are fine, others are refused
    AudioGenModel.from_pretrained(tmp_path / "m", low_cpu_mem_usage=True, variant=None, device_map=None)
    one_line_error(lambda: AudioGenModel.from_pretrained(tmp_path / "m", device_map="auto"), "unsupported argument")

"""The latent-codec interface: one loader for every codec kind, plugins, one clear line on failure."""

import json

import pytest
import torch
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.codecs import LatentCodec, codec_target, latent_rate, load_codec, register_codec
from dashflow.errors import DashflowError


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec") / "tokenizer"
    torch.manual_seed(0)
    DashengTokenizer.from_preset("tiny").save_pretrained(folder)
    return folder


def test_a_tokenizer_folder_loads_as_a_frozen_codec(tiny_tokenizer_dir):
    codec = load_codec(tiny_tokenizer_dir)
    assert isinstance(codec, DashengTokenizer) and isinstance(codec, LatentCodec)
    assert not codec.training and not any(p.requires_grad for p in codec.parameters())
    assert latent_rate(codec) == 25.0
    encoding = codec.encode(torch.randn(1, 16000))
    assert encoding.latents.shape == (1, 25, codec.latent_dim) and encoding.mask.all()
    assert codec.decode(encoding.latents).shape == (1, 25 * 640)


def test_official_and_transformers_configs_pick_their_class():
    assert codec_target({"model_type": "dashengtokenizer"}).endswith(":DashengTokenizer")
    for model_type in ("encodec", "dac", "mimi"):
        assert codec_target({"model_type": model_type}).endswith(":TransformersCodec")


@pytest.mark.parametrize("content,message", [
    ({"_class_name": "UNetModel"}, "unknown codec kind .*_class_name='UNetModel'"),
    ({"model_type": "wav2vec2"}, "unknown codec kind .*model_type='wav2vec2'.*known kinds: .*encodec"),
    ("not json", "not valid JSON"),
    (None, "not a codec folder \\(no config.json\\)"),
])
def test_foreign_folders_get_one_clear_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DashflowError, match=message) as caught:
        load_codec(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_missing_codec_folder_is_one_line(tmp_path):
    with pytest.raises(DashflowError, match="codec folder not found"):
        load_codec(tmp_path / "nowhere")


def test_an_installed_plugin_codec_loads_by_its_entry_point(frame_codec_plugin, tmp_path):
    from tests.generation.frame_codec import FrameCodec

    FrameCodec(bands=3).save_pretrained(tmp_path)
    codec = load_codec(tmp_path)
    assert type(codec).__name__ == "FrameCodec" and codec.latent_dim == 6
    wav = torch.sin(2 * torch.pi * 200 * torch.arange(3200) / 16000)[None]  # 200 Hz: one of its bands
    encoding = codec.encode(wav)
    assert encoding.latents.shape == (1, 5, 6)
    torch.testing.assert_close(codec.decode(encoding.latents), wav, atol=1e-4, rtol=0)


def test_register_codec_adds_a_kind_in_process(tiny_tokenizer_dir, tmp_path):
    config = json.loads((tiny_tokenizer_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "_class_name": "MyTokenizer"}))
    (tmp_path / "model.safetensors").symlink_to(tiny_tokenizer_dir / "model.safetensors")
    with pytest.raises(DashflowError, match="unknown codec kind"):
        load_codec(tmp_path)
    register_codec("_class_name", "MyTokenizer", "dashflow.tokenizer.model:DashengTokenizer")
    assert isinstance(load_codec(tmp_path), DashengTokenizer)
    with pytest.raises(DashflowError, match="registry key"):
        register_codec("architectures", "X", "a:B")

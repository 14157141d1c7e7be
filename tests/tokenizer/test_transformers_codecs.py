"""EnCodec, DAC and Mimi behind the latent-codec interface, on tiny random transformers configs
(the real weights, e.g. facebook/encodec_24khz, load the same way from the hub when online)."""

import json

import pytest
import torch
from dashflow.tokenizer.transformers_codecs import save_tiny_codec

from dashflow.codecs import LatentCodec, load_codec
from dashflow.errors import DashflowError

HOP = {"encodec": 320, "dac": 320, "mimi": 1280}
DIM = {"encodec": 16, "dac": 32, "mimi": 16}


@pytest.mark.parametrize("kind", sorted(HOP))
def test_transformers_folder_loads_as_a_codec(kind, tmp_path):
    codec = load_codec(save_tiny_codec(kind, tmp_path / kind))
    assert isinstance(codec, LatentCodec) and type(codec).__name__ == "TransformersCodec"
    assert (codec.sample_rate, codec.samples_per_latent, codec.latent_dim) == (16000, HOP[kind], DIM[kind])
    wav = torch.randn(2, 6000) * 0.1
    lengths = torch.tensor([6000, 3000])
    encoding = codec.encode(wav, lengths)
    frames = -(-6000 // HOP[kind])
    assert encoding.latents.shape == (2, frames, DIM[kind])
    assert encoding.mask.sum(1).tolist() == [frames, -(-3000 // HOP[kind])]
    assert (encoding.latents[1, ~encoding.mask[1]] == 0).all()
    assert codec.decode(encoding.latents).shape == (2, frames * HOP[kind])


@pytest.mark.parametrize("kind", sorted(HOP))
def test_quantized_latents_differ_and_the_choice_survives_saving(kind, tmp_path):
    codec = load_codec(save_tiny_codec(kind, tmp_path / kind))
    wav = torch.randn(1, 4000) * 0.1
    continuous = codec.encode(wav).latents
    codec.latents = "quantized"
    quantized = codec.encode(wav).latents
    assert quantized.shape == continuous.shape and not torch.allclose(quantized, continuous)
    codec.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["dashflow_latents"] == "quantized"
    reloaded = load_codec(tmp_path / "saved")
    assert reloaded.latents == "quantized" and reloaded.weights_hash() == codec.weights_hash()
    torch.testing.assert_close(reloaded.encode(wav).latents, quantized)


def test_a_transformers_folder_without_safetensors_is_one_line(tmp_path):
    folder = save_tiny_codec("dac", tmp_path / "dac")
    (folder / "model.safetensors").unlink()
    with pytest.raises(DashflowError, match="no model.safetensors|weights"):
        load_codec(folder)


def test_reconstruct_command_runs_any_codec(tmp_path):
    """``dashflow reconstruct --checkpoint`` takes a transformers codec folder too."""
    from dashflow.cli import main

    folder = save_tiny_codec("encodec", tmp_path / "encodec")
    assert main(["reconstruct", "--demo-signal", "-o", str(tmp_path / "out.wav"), "--checkpoint", str(folder)]) == 0
    import soundfile as sf
    audio, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(audio) == 4 * 16000

"""EnCodec, DAC and Mimi behind the latent-codec interface, on tiny random transformers configs
(the real weights, e.g. facebook/encodec_24khz, load the same way from the hub when online)."""

import json

import pytest
import torch
from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel, MimiConfig, MimiModel

from dashflow.codecs import LatentCodec, load_codec
from dashflow.errors import DashflowError

TINY = {
    "encodec": lambda: EncodecModel(EncodecConfig(
        sampling_rate=16000, hidden_size=16, num_filters=4, num_residual_layers=1, upsampling_ratios=[4, 4, 2],
        codebook_size=32, codebook_dim=16, target_bandwidths=[6.0], num_lstm_layers=1)),
    "dac": lambda: DacModel(DacConfig(
        sampling_rate=16000, encoder_hidden_size=4, downsampling_ratios=[2, 4], decoder_hidden_size=16,
        upsampling_ratios=[4, 2], hidden_size=32, n_codebooks=2, codebook_size=16, codebook_dim=4)),
    "mimi": lambda: MimiModel(MimiConfig(
        sampling_rate=16000, frame_rate=250, hidden_size=16, num_filters=4, num_residual_layers=1,
        upsampling_ratios=[4, 4, 2], upsample_groups=16, codebook_size=16, codebook_dim=8,
        vector_quantization_hidden_dimension=8, num_quantizers=2, num_semantic_quantizers=1, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, intermediate_size=32, sliding_window=10)),
}
HOP = {"encodec": 32, "dac": 8, "mimi": 64}
DIM = {"encodec": 16, "dac": 32, "mimi": 16}


def save_tiny(kind: str, folder):
    torch.manual_seed(0)
    TINY[kind]().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", sorted(TINY))
def test_transformers_folder_loads_as_a_codec(kind, tmp_path):
    codec = load_codec(save_tiny(kind, tmp_path / kind))
    assert isinstance(codec, LatentCodec) and type(codec).__name__ == "TransformersCodec"
    assert (codec.sample_rate, codec.samples_per_latent, codec.latent_dim) == (16000, HOP[kind], DIM[kind])
    wav = torch.randn(2, 3000) * 0.1
    lengths = torch.tensor([3000, 1500])
    encoding = codec.encode(wav, lengths)
    frames = -(-3000 // HOP[kind])
    assert encoding.latents.shape == (2, frames, DIM[kind])
    assert encoding.mask.sum(1).tolist() == [frames, -(-1500 // HOP[kind])]
    assert (encoding.latents[1, ~encoding.mask[1]] == 0).all()
    assert codec.decode(encoding.latents).shape == (2, frames * HOP[kind])


@pytest.mark.parametrize("kind", sorted(TINY))
def test_quantized_latents_differ_and_the_choice_survives_saving(kind, tmp_path):
    codec = load_codec(save_tiny(kind, tmp_path / kind))
    wav = torch.randn(1, 2000) * 0.1
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
    folder = save_tiny("dac", tmp_path / "dac")
    (folder / "model.safetensors").unlink()
    with pytest.raises(DashflowError, match="no model.safetensors|weights"):
        load_codec(folder)


def test_reconstruct_command_runs_any_codec(tmp_path):
    """``dashflow reconstruct --checkpoint`` takes a transformers codec folder too."""
    from dashflow.cli import main

    folder = save_tiny("encodec", tmp_path / "encodec")
    assert main(["reconstruct", "--demo-signal", "-o", str(tmp_path / "out.wav"), "--checkpoint", str(folder)]) == 0
    import soundfile as sf
    audio, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(audio) == 4 * 16000

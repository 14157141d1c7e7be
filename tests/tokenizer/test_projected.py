"""The projected codec (LoSATok's FC baseline): PCA fit, encode / decode through the base, save and
load through the codec registry and as a pipeline component, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines.audio import TextToAudioPipeline, load_pipeline
from dashflow.generation.pipelines.components import PipelineTextEncoder
from dashflow.tokenizer.model import DashengTokenizer
from dashflow.tokenizer.projected import ProjectedCodec
from diffusers import FlowMatchEulerDiscreteScheduler

from dashflow.codecs import load_codec
from dashflow.errors import DashflowError
from tests.conftest import chirp, tone


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return DashengTokenizer.from_preset("tiny").eval()


def test_pca_keeps_a_low_rank_latent_space_exactly(base):
    torch.manual_seed(1)
    directions = torch.linalg.qr(torch.randn(base.latent_dim, 3))[0].T  # [3, D] orthonormal
    latents = [torch.randn(50, 3) @ directions + 0.5 for _ in range(4)]
    codec = ProjectedCodec.fit(base, latents, 3)
    x = torch.cat(latents)
    restored = ((x - codec.mean) @ codec.basis.T) @ codec.basis + codec.mean
    torch.testing.assert_close(restored, x, atol=1e-4, rtol=1e-4)
    assert codec.latent_dim == 3 and codec.sample_rate == base.sample_rate


def test_encode_decode_go_through_the_base(base):
    wav = torch.from_numpy(np.stack([tone(300, 1.0), chirp(200, 2000, 1.0)]))
    with torch.no_grad():
        frames = [base.encode(wav).latents[i] for i in range(2)]
        codec = ProjectedCodec.fit(base, frames, 4)
        encoding = codec.encode(wav, torch.tensor([16000, 9600]))
        assert encoding.latents.shape == (2, base.latent_length(16000), 4)
        assert not encoding.latents[1, ~encoding.mask[1]].any()  # zero past the shorter clip
        expected = base.decode(encoding.latents @ codec.basis + codec.mean)
        torch.testing.assert_close(codec.decode(encoding.latents), expected)


def test_saved_codec_loads_by_registry_and_in_a_pipeline(base, tmp_path):
    torch.manual_seed(2)
    codec = ProjectedCodec.fit(base, [torch.randn(80, base.latent_dim)], 6)
    codec.save_pretrained(tmp_path / "fc")
    loaded = load_codec(tmp_path / "fc")
    assert isinstance(loaded, ProjectedCodec) and loaded.weights_hash() == codec.weights_hash()
    assert loaded.weights_hash() != base.weights_hash()
    wav = torch.from_numpy(tone(440, 0.5))[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(wav).latents, codec.encode(wav).latents)
    encoder = PipelineTextEncoder("minilm")
    model = AudioGenModel.from_preset("tiny", latent_dim=6, text_embed_dim=encoder.dim)
    TextToAudioPipeline(tokenizer=codec, text_encoder=encoder, transformer=model,
                        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
                        ).save_pretrained(tmp_path / "pipe")
    pipe = load_pipeline(tmp_path / "pipe")
    assert isinstance(pipe.tokenizer, ProjectedCodec)
    assert pipe("a tone", duration=0.64, num_inference_steps=2, seed=0).audios.shape == (1, 10240)  # 16 frames


def test_bad_projections_get_one_line(base, tmp_path):
    with pytest.raises(DashflowError, match="needs 0 < dim"):
        ProjectedCodec.fit(base, [torch.randn(10, base.latent_dim)], base.latent_dim)
    with pytest.raises(DashflowError, match="needs mean"):
        ProjectedCodec(base, torch.zeros(3), torch.zeros(2, 3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DashflowError, match="not a projected codec folder"):
        ProjectedCodec.from_pretrained(tmp_path / "empty")

"""Speech-enhancement models and pipeline: full-size shapes on meta, tiny real-tensor behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.pipelines.speech_enhancement import (
    SpeechEnhancementPipeline,
    ratio_mask,
)
from dashflow.generation.sampling.flow import LatentNormalizer
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.errors import DashflowError

DEMO_TOKENIZER = Path(__file__).resolve().parents[3] / "generation" / "demo" / "pipeline" / "tokenizer"


def test_paper_denoiser_matches_the_reference_layout():
    with torch.device("meta"):
        model = LatentDenoiser.from_preset("paper")
    assert sum(p.numel() for p in model.parameters()) == 41_006_080
    keys = set(model.state_dict())
    assert {f"blocks.{i}.attn.qkv.weight" for i in range(3)} <= keys and "blocks.3.attn.qkv.weight" not in keys
    assert model.blocks[0].attn.num_heads == 8 and model.blocks[0].mlp.fc1.out_features == 2560
    assert isinstance(model.proj_in, torch.nn.Identity)  # 1280 -> 1280 needs no projection


def test_paper_flow_enhancer_adds_only_the_audio_projection():
    with torch.device("meta"):
        text_only = AudioGenModel.from_preset("paper")
        se = AudioGenModel.from_preset("paper", audio_content_dim=1280)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(se) - count(text_only) == 1280 * 1024 + 1024
    assert "content_encoder.audio_encoder.proj.weight" in se.state_dict()


def test_untrained_denoiser_is_the_identity_and_ignores_padding():
    torch.manual_seed(0)
    model = LatentDenoiser.from_preset("tiny").eval()
    x = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    assert torch.equal(model(x, mask), x)  # zero-initialised head
    torch.nn.init.normal_(model.head.weight, std=0.1)
    out = model(x, mask)
    assert not torch.allclose(out, x)
    assert torch.equal(out[1, 6:], x[1, 6:])  # padded frames pass through
    alone = model(x[1:, :6], mask[1:, :6])
    torch.testing.assert_close(out[1:, :6], alone, atol=1e-5, rtol=1e-5)  # padding is not attended to
    with pytest.raises(DashflowError, match="16-d latents"):
        model(torch.randn(1, 4, 8))


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return DashengTokenizer.from_preset("tiny").eval()


def make(kind: str, tokenizer: DashengTokenizer) -> SpeechEnhancementPipeline:
    torch.manual_seed(1)
    if kind == "denoiser":
        enhancer = LatentDenoiser.from_preset("tiny", latent_dim=tokenizer.latent_dim)
        torch.nn.init.normal_(enhancer.head.weight, std=0.05)
    else:
        enhancer = AudioGenModel.from_preset("tiny", latent_dim=tokenizer.latent_dim,
                                             audio_content_dim=tokenizer.latent_dim)
    return SpeechEnhancementPipeline(tokenizer, enhancer)


@pytest.mark.parametrize("kind", ["denoiser", "flow"])
def test_pipeline_round_trips_and_keeps_lengths(tokenizer, kind, tmp_path):
    pipe = make(kind, tokenizer)
    noisy = 0.1 * torch.randn(2, 12_345)
    lengths = torch.tensor([12_345, 7_000])
    out = pipe(noisy, lengths, num_inference_steps=3, seed=0)
    assert out.shape == noisy.shape and out.dtype == torch.float32
    assert torch.equal(out[1, 7_000:], torch.zeros(5_345)) and out[1, :7_000].abs().max() > 0
    assert pipe.kind == kind
    pipe.save_pretrained(tmp_path)
    loaded = SpeechEnhancementPipeline.from_pretrained(tmp_path)
    assert type(loaded.enhancer) is type(pipe.enhancer)
    torch.testing.assert_close(loaded(noisy, lengths, num_inference_steps=3, seed=0), out)


def test_a_latent_normalizer_maps_the_content_in_and_the_result_out(tokenizer, tmp_path):
    """A flow enhancer trained on normalised latents (recipes/unified.py with flow.normalize_latents)
    sees the noisy latents normalised and its samples are denormalised; the normalizer is saved."""
    pipe = make("flow", tokenizer)
    noisy = 0.1 * torch.randn(1, 8_000)
    identity = LatentNormalizer(channels=tokenizer.latent_dim)
    plain = pipe(noisy, num_inference_steps=2, seed=0)
    assert torch.equal(SpeechEnhancementPipeline(tokenizer, pipe.enhancer, latent_normalizer=identity)(
        noisy, num_inference_steps=2, seed=0), plain)
    normalizer = LatentNormalizer(channels=tokenizer.latent_dim)
    normalizer.mean.fill_(0.5)
    normalizer.std.fill_(2.0)
    scaled = SpeechEnhancementPipeline(tokenizer, pipe.enhancer, latent_normalizer=normalizer)
    seen = []
    original = pipe.enhancer.condition
    pipe.enhancer.condition = lambda content, *args, **kwargs: seen.append(content) or original(content, *args,
                                                                                                 **kwargs)
    latents = tokenizer.encode(noisy).latents  # [1, T, C]
    out = scaled(noisy, num_inference_steps=2, seed=0)
    del pipe.enhancer.condition
    torch.testing.assert_close(seen[0], (latents - 0.5) / 2.0)
    assert not torch.allclose(out, plain)
    scaled.save_pretrained(tmp_path)
    loaded = SpeechEnhancementPipeline.from_pretrained(tmp_path)
    assert torch.equal(loaded.latent_normalizer.std, normalizer.std)
    torch.testing.assert_close(loaded(noisy, num_inference_steps=2, seed=0), out)
    with pytest.raises(DashflowError, match="a latent normalizer needs a flow enhancer"):
        SpeechEnhancementPipeline(tokenizer, make("denoiser", tokenizer).enhancer, latent_normalizer=identity)


def test_flow_enhancer_is_seeded_per_item(tokenizer):
    pipe = make("flow", tokenizer)
    noisy = 0.1 * torch.randn(2, 8_000)
    a = pipe(noisy, num_inference_steps=2, seed=5)
    assert torch.equal(a, pipe(noisy, num_inference_steps=2, seed=5))
    assert not torch.equal(a, pipe(noisy, num_inference_steps=2, seed=6))
    torch.testing.assert_close(pipe(noisy[1:], num_inference_steps=2, seed=6)[0], a[1])  # item 1 uses seed + 1


def test_flow_enhancer_averages_its_samples_in_latent_space(tokenizer):
    pipe = make("flow", tokenizer)
    encoding = tokenizer.encode(0.1 * torch.randn(2, 8_000), torch.tensor([8_000, 5_000]))

    def enhance(num_samples: int, *seeds: int) -> torch.Tensor:
        return pipe.enhance_latents(encoding.latents, encoding.mask, num_inference_steps=2, num_samples=num_samples,
                                    generator=[torch.Generator().manual_seed(s) for s in seeds])

    mean = enhance(3, 0, 1, 2, 3, 4, 5)  # sample j of item i: generator j * B + i
    singles = torch.stack([enhance(1, 2 * j, 2 * j + 1) for j in range(3)])
    torch.testing.assert_close(mean, singles.mean(0))
    assert (mean - singles[0]).abs().max() > 1e-3
    with pytest.raises(DashflowError, match="num_samples must be an integer >= 1"):
        enhance(0)


def test_ratio_mask_keeps_the_noisy_phase_and_passes_clean_bins():
    torch.manual_seed(0)
    noisy = torch.randn(1, 8_000)
    assert torch.allclose(ratio_mask(noisy, noisy, noisy), noisy, atol=1e-4)  # M = 1 everywhere
    assert ratio_mask(torch.zeros(1, 8_000), noisy, noisy).abs().max() < 1e-6  # M = 0 everywhere
    half = ratio_mask(0.5 * noisy, noisy, noisy)
    assert torch.allclose(half, 0.5 * noisy, atol=1e-4)


def test_mask_output_with_oracle_latents_beats_the_noisy_input():
    """The oracle (clean latents) through ``mask`` output of the bundled demo tokenizer raises
    the SNR of a noisy tone well above the noisy input."""
    tokenizer = DashengTokenizer.from_pretrained(DEMO_TOKENIZER).eval()
    torch.manual_seed(0)
    t = torch.arange(16_000) / 16_000
    clean = 0.3 * torch.sin(2 * torch.pi * 440 * t)[None]
    noisy = clean + 0.3 * torch.randn_like(clean)

    class Oracle(SpeechEnhancementPipeline):
        def enhance_latents(self, latents, mask, **_):
            return self.tokenizer.encode(clean).latents

    pipe = Oracle(tokenizer, LatentDenoiser.from_preset("tiny", latent_dim=tokenizer.latent_dim))
    out = pipe(noisy, output="mask")
    snr = lambda x: 10 * torch.log10(clean.pow(2).sum() / (x - clean).pow(2).sum())
    assert snr(out) > snr(noisy) + 2  # measured: -3.05 -> +0.24 dB


def test_pipeline_rejects_bad_input_and_mismatches(tokenizer):
    pipe = make("denoiser", tokenizer)
    with pytest.raises(DashflowError, match="finite float"):
        pipe(torch.full((1, 8_000), float("nan")))
    with pytest.raises(DashflowError, match="output must be"):
        pipe(torch.zeros(1, 8_000), output="phase")
    with pytest.raises(DashflowError, match="mismatched pipeline components"):
        SpeechEnhancementPipeline(tokenizer, LatentDenoiser.from_preset("tiny", latent_dim=tokenizer.latent_dim + 1))
    with pytest.raises(DashflowError, match="audio_content_dim"):
        SpeechEnhancementPipeline(tokenizer, AudioGenModel.from_preset("tiny", latent_dim=tokenizer.latent_dim))


def test_loading_a_folder_that_is_not_a_pipeline_is_one_line(tmp_path):
    with pytest.raises(DashflowError, match="not a pipeline folder"):
        SpeechEnhancementPipeline.from_pretrained(tmp_path)
    with pytest.raises(DashflowError, match="folder not found"):
        SpeechEnhancementPipeline.from_pretrained(tmp_path / "missing")


def test_flow_enhancer_steps_with_its_scheduler_component(tokenizer, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = make("flow", tokenizer)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)  # the default when none is given
    noisy = 0.1 * torch.randn(1, 8_000)
    reference = pipe(noisy, num_inference_steps=3, seed=0)
    pipe.save_pretrained(tmp_path / "se")
    assert (tmp_path / "se" / "scheduler" / "scheduler_config.json").is_file()
    shifted = SpeechEnhancementPipeline.from_pretrained(
        tmp_path / "se", scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0))
    assert not torch.allclose(shifted(noisy, num_inference_steps=3, seed=0), reference)
    bundled = Path(__file__).resolve().parents[3] / "generation" / "demo" / "enhancer"
    assert not (bundled / "scheduler").exists()  # saved before the component: loads with the default
    assert isinstance(SpeechEnhancementPipeline.from_pretrained(bundled).scheduler, FlowMatchEulerDiscreteScheduler)

"""Flow-matching objective: noise levels, interpolation/target, masked loss, CFG dropout,
duration losses, options, latent normalisation, and a short learning run."""

from __future__ import annotations

import math

import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.sampling.flow import (
    FlowMatchingConfig,
    LatentNormalizer,
    check_config,
    dimension_shift,
    masked_mse,
    sample_noise_levels,
    shift_sigmas,
)
from dashflow.generation.sampling.cfm import FlowMatching

from dashflow.errors import DashflowError

C, T, L, DT = 16, 8, 3, 32


def tiny() -> AudioGenModel:
    torch.manual_seed(0)
    return AudioGenModel.from_preset("tiny")


def batch(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latent_mask = torch.ones(b, T, dtype=torch.bool)
    latent_mask[0, 5:] = False
    content_mask = torch.ones(b, L, dtype=torch.bool)
    content_mask[1, 2:] = False
    return (torch.randn(b, C, T, generator=g), latent_mask, torch.randn(b, L, DT, generator=g), content_mask)


def spy_velocity(model: AudioGenModel, fn=None) -> list:
    """Record (sample, timesteps, cond) of every backbone call; ``fn`` replaces the output."""
    calls, real = [], model.velocity

    def velocity(sample, timesteps, cond, prepared=None):
        calls.append((sample.detach().clone(), timesteps.clone(), cond))
        return real(sample, timesteps, cond, prepared) if fn is None else fn(sample, timesteps, cond)

    model.velocity = velocity
    return calls


def test_reference_noise_levels():
    config = FlowMatchingConfig()
    sigmas, timesteps = sample_noise_levels(4000, config, channels=C, frames=torch.full((4000,), T),
                                            generator=torch.Generator().manual_seed(0))
    k = torch.round(sigmas * 1000)
    torch.testing.assert_close(sigmas, k / 1000)  # sigma = 1 - idx / 1000
    assert sigmas.min() >= 0.001 and sigmas.max() <= 1.0
    torch.testing.assert_close(timesteps, sigmas * 1000)
    assert abs(sigmas.median().item() - 0.5) < 0.03  # logit-normal(0, 1) is centred
    assert ((sigmas < 0.1) | (sigmas > 0.9)).float().mean() < 0.06  # ... and thin-tailed
    uni, _ = sample_noise_levels(4000, FlowMatchingConfig(timestep_sampling="uniform"), channels=C,
                                 frames=torch.full((4000,), T), generator=torch.Generator().manual_seed(0))
    assert 0.15 < ((uni < 0.1) | (uni > 0.9)).float().mean() < 0.25


def test_shift_options():
    torch.testing.assert_close(shift_sigmas(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.75, 1.0]))
    assert dimension_shift(1280, 250) == pytest.approx(8.84, abs=0.01)
    frames = torch.tensor([250, 64])
    sig, _ = sample_noise_levels(2, FlowMatchingConfig(timestep_sampling="uniform"), channels=1280,
                                 frames=frames, generator=torch.Generator().manual_seed(1))
    shifted, _ = sample_noise_levels(2, FlowMatchingConfig(timestep_sampling="uniform", dimension_shift_base=4096),
                                     channels=1280, frames=frames, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(shifted, shift_sigmas(sig, torch.sqrt(1280 * frames / 4096.0)))
    with pytest.raises(DashflowError, match="timestep_sampling"):
        check_config(FlowMatchingConfig(timestep_sampling="cosine"))


def test_masked_mse_is_per_item_mean_then_batch_mean():
    pred = torch.zeros(2, 2, 4)
    target = torch.stack([torch.ones(2, 4), 3 * torch.ones(2, 4)])
    target[0, :, 2:] = 100.0  # padding, ignored
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 9) / 2)


def test_interpolation_and_velocity_target():
    """An oracle that knows x0 predicts (x_t - x0) / sigma = eps - x0 exactly: the flow loss is ~0."""
    model = tiny()
    x0, latent_mask, content, content_mask = batch()
    calls = spy_velocity(model, lambda s, t, c: (s - x0) / (t / 1000)[:, None, None])
    out = FlowMatching(model).loss(x0, latent_mask, content, content_mask,
                                   generator=torch.Generator().manual_seed(0))
    assert out["flow"].item() < 1e-8
    (_, timesteps, _), = calls
    assert timesteps.shape == (4,) and (timesteps >= 1).all() and (timesteps <= 1000).all()
    # the wrong convention (x_t = sigma x0 + (1 - sigma) eps) would be far off
    model.velocity = lambda s, t, c: (s - (t / 1000)[:, None, None] * x0) / (1 - t / 1000)[:, None, None]
    out = FlowMatching(model).loss(x0, latent_mask, content, content_mask,
                                   generator=torch.Generator().manual_seed(0))
    assert out["flow"].item() > 0.1


def test_cfg_dropout_zeroes_both_conditions_and_keeps_masks():
    model = tiny()
    with torch.no_grad():
        model.dummy_ta_embed.fill_(1.0)
    args = batch()
    calls = spy_velocity(model)
    for p in (0.0, 1.0):
        FlowMatching(model, FlowMatchingConfig(cfg_dropout=p)).loss(*args, generator=torch.Generator().manual_seed(0))
    (_, _, kept), (_, _, dropped) = calls
    assert kept.context.abs().sum() > 0 and kept.time_aligned_context.abs().sum() > 0
    assert not dropped.context.any() and not dropped.time_aligned_context.any()
    assert torch.equal(dropped.context_mask, kept.context_mask)
    assert torch.equal(dropped.latent_mask, kept.latent_mask)
    calls.clear()
    FlowMatching(model).loss(*batch(400), generator=torch.Generator().manual_seed(0))
    dropped_items = (calls[0][2].context.flatten(1).abs().sum(1) == 0).float().mean().item()
    assert 0.15 < dropped_items < 0.25  # p = 0.2, drawn per item


def test_duration_losses_and_weights():
    model = tiny()
    x0, latent_mask, content, content_mask = batch()
    out = FlowMatching(model).loss(x0, latent_mask, content, content_mask,
                                   generator=torch.Generator().manual_seed(0))
    assert out["local_duration"].item() == 0.0  # text-to-audio: no local targets
    torch.testing.assert_close(out["loss"], out["flow"] + 0.1 * out["local_duration"] + 0.1 * out["global_duration"])
    model.eval()
    with torch.no_grad():
        pred = model.adapt(content, content_mask).global_duration
    lengths = latent_mask.sum(1).float()
    want = torch.mean((pred - torch.log(lengths / 25 + 1)) ** 2)
    out = FlowMatching(model).loss(x0, latent_mask, content, content_mask,
                                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["global_duration"], want)


def test_local_duration_loss_for_time_aligned_items():
    torch.manual_seed(0)
    model = AudioGenModel.from_preset("tiny", audio_content_dim=C).eval()
    x0, latent_mask, _, _ = batch()
    noisy = torch.randn(4, T, C)
    durations = torch.full((4, T), 0.04)
    ta = torch.tensor([True, True, False, False])
    out = FlowMatching(model).loss(x0, latent_mask, noisy, latent_mask, content_kind="audio", is_time_aligned=ta,
                                   durations=durations, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        local = model.adapt(noisy, latent_mask, "audio").local_duration
    m = latent_mask.float()
    per_item = ((local - math.log(9.0)) ** 2 * m).sum(1) / m.sum(1)
    torch.testing.assert_close(out["local_duration"], per_item[:2].mean())


def test_latent_normalizer(tmp_path):
    g = torch.Generator().manual_seed(0)
    mean, std = torch.linspace(-2, 2, C), torch.linspace(0.5, 3, C)
    chunks = [torch.randn(8, C, 50, generator=g) * std[:, None] + mean[:, None] for _ in range(4)]
    mask = torch.ones(8, 50, dtype=torch.bool)
    mask[:, 40:] = False
    for x in chunks:
        x[:, :, 40:] = 1000.0  # padding must not enter the statistics
    norm = LatentNormalizer.fit((x, mask) for x in chunks)
    torch.testing.assert_close(norm.mean, mean, atol=0.1, rtol=0)
    torch.testing.assert_close(norm.std, std, atol=0.1, rtol=0.05)
    x = chunks[0][:, :, :40]
    z = norm.normalize(x)
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1
    torch.testing.assert_close(norm.denormalize(z), x, atol=1e-4, rtol=1e-5)
    norm.save_pretrained(tmp_path / "norm")
    loaded = LatentNormalizer.from_pretrained(tmp_path / "norm")
    assert torch.equal(loaded.mean, norm.mean) and torch.equal(loaded.std, norm.std)


def test_latent_normalisation_is_never_silent():
    model = tiny()
    args = batch()
    norm = LatentNormalizer(channels=C)
    with pytest.raises(DashflowError, match="normalize_latents"):
        FlowMatching(model, FlowMatchingConfig(normalize_latents=True))
    with pytest.raises(DashflowError, match="normalize_latents"):
        FlowMatching(model, FlowMatchingConfig(), normalizer=norm)
    with torch.no_grad():
        norm.mean.fill_(5.0)
    x0 = args[0]
    calls = spy_velocity(model, lambda s, t, c: (s - (x0 - 5.0)) / (t / 1000)[:, None, None])
    out = FlowMatching(model, FlowMatchingConfig(normalize_latents=True), norm).loss(
        *args, generator=torch.Generator().manual_seed(0))
    assert out["flow"].item() < 1e-8 and len(calls) == 1  # the oracle saw normalised latents


@pytest.mark.slow
def test_tiny_model_learns_two_conditioned_classes():
    """300 CPU steps: the loss falls well below its start and samples land on their own class."""
    torch.manual_seed(0)
    model = AudioGenModel.from_preset("tiny")
    patterns = torch.stack([torch.cat([torch.ones(8), -torch.ones(8)]),
                            torch.cat([-torch.ones(8), torch.ones(8)])])  # [2, C]
    embeddings = torch.randn(2, 2, DT)  # one 2-token "caption" per class
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    b, losses = 16, []
    for _ in range(300):
        cls = torch.randint(0, 2, (b,), generator=g)
        out = FlowMatching(model).loss(patterns[cls][:, :, None].expand(b, C, T), torch.ones(b, T, dtype=torch.bool),
                                       embeddings[cls], torch.ones(b, 2, dtype=torch.bool), generator=g)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["flow"].item())
    start, end = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert end < 0.4 * start, (start, end)

    model.eval()
    cls = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    cond = model.condition(embeddings[cls], torch.ones(8, 2, dtype=torch.bool), latent_lengths=T)
    latents = FlowMatching(model).sample(cond, num_steps=10, guidance_scale=3.0,
                                         generator=torch.Generator().manual_seed(3))
    dist = ((latents[:, None] - patterns[None, :, :, None]) ** 2).mean(dim=(2, 3))  # [8, 2]
    own, other = dist[torch.arange(8), cls], dist[torch.arange(8), 1 - cls]
    assert (own < 0.5 * other).all(), dist

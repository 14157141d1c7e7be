"""Sway schedule, scheduler wiring, model-call layout, CFG, seeding of the flow sampler (FlowMatching.sample)."""

from __future__ import annotations

import math

import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel, Conditioning
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.sampling.sampler import make_scheduler, sway_sigmas
from diffusers import FlowMatchEulerDiscreteScheduler

from dashflow.errors import DashflowError

C = 16


def condition(model: AudioGenModel, seed: int = 0, lengths=(6, 4)) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(len(lengths), 3, 32, generator=g)
    return model.condition(content, torch.ones(len(lengths), 3, dtype=torch.bool),
                           latent_lengths=torch.tensor(lengths))


def spy(model: AudioGenModel, monkeypatch, fn=None) -> list:
    calls, real = [], model.velocity

    def velocity(x, t, cond, prepared=None):
        calls.append((x.shape[0], t.clone(), cond))
        return real(x, t, cond, prepared) if fn is None else fn(x, t, cond)

    monkeypatch.setattr(model, "velocity", velocity)
    return calls


def test_sway_schedule_is_cosine():
    sigmas = sway_sigmas(25, -1.0)
    want = torch.cos(math.pi * torch.arange(26, dtype=torch.float64) / 50)
    assert sigmas.shape == (26,)
    torch.testing.assert_close(sigmas.double(), want, atol=1e-6, rtol=0)
    scheduler = make_scheduler(sigmas)
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), want, atol=1e-6, rtol=0)  # what it steps with
    assert scheduler.sigmas[-1] == 0 and len(scheduler.sigmas) == 27
    torch.testing.assert_close(scheduler.timesteps, sigmas * 1000)
    assert float(sigmas[-1]) == 0.0  # 1 - (1 + cos(pi/2)) rounds to 0 in fp32: the last call is a no-op


@pytest.mark.parametrize("coef", [0.0, None])
def test_no_sway_falls_back_to_linspace(coef):
    torch.testing.assert_close(sway_sigmas(4, coef), torch.tensor([1.0, 0.75, 0.5, 0.25]))


def test_shift_goes_through_the_scheduler():
    scheduler = make_scheduler(torch.tensor([1.0, 0.5, 0.25]),
                               FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0))
    torch.testing.assert_close(scheduler.sigmas, torch.tensor([1.0, 0.75, 0.5, 0.0]))


def test_model_calls_match_the_reference_loop(model, monkeypatch):
    cond = condition(model)
    calls = spy(model, monkeypatch)
    FlowMatching(model).sample(cond, generator=torch.Generator().manual_seed(0), skip_final_step=False)
    assert len(calls) == 26  # N + 1 calls: the scheduler appends sigma = 0 after 26 sway sigmas
    sway = sway_sigmas(25)
    for i, (batch, t, cond_in) in enumerate(calls):
        assert batch == 4  # [uncond; cond] in one forward pass
        assert torch.equal(t, torch.trunc(sway[i] * 1000).expand(4))  # the reference's long cast
        assert not cond_in.context[:2].any() and not cond_in.time_aligned_context[:2].any()
        assert torch.equal(cond_in.context[2:], cond.context)
        assert torch.equal(cond_in.time_aligned_context[2:], cond.time_aligned_context)
        assert torch.equal(cond_in.context_mask, cond.context_mask.repeat(2, 1))
        assert torch.equal(cond_in.latent_mask, cond.latent_mask.repeat(2, 1))
    assert calls[-1][1][0] == 0  # 1000 * cos(pi / 2) truncates to 0


def test_exact_timesteps_option(model, monkeypatch):
    calls = spy(model, monkeypatch)
    FlowMatching(model).sample(condition(model), num_steps=4, truncate_timesteps=False, skip_final_step=False)
    torch.testing.assert_close(torch.stack([t[0] for _, t, _ in calls]), sway_sigmas(4) * 1000)


def test_euler_integrates_from_sigma_1_to_0(model, monkeypatch):
    cond = condition(model)
    noise = torch.randn(2, C, 6)
    spy(model, monkeypatch, lambda x, t, c: torch.ones_like(x))
    out = FlowMatching(model).sample(cond, num_steps=7, guidance_scale=1.0, noise=noise)
    torch.testing.assert_close(out, noise - 1)  # x_0 = x_1 + (0 - 1) * v


def test_guidance_formula_and_scale_one_is_conditional_only(model, monkeypatch):
    cond = condition(model)
    noise = torch.randn(2, C, 6)
    # reference Euler loop with the conditional velocity only
    x, sigmas = noise.clone(), torch.cat([sway_sigmas(5), torch.zeros(1)])
    for i in range(6):
        x = x + (sigmas[i + 1] - sigmas[i]) * model.velocity(x, torch.trunc(sigmas[i] * 1000).expand(2), cond)
    calls = spy(model, monkeypatch)
    out = FlowMatching(model).sample(cond, num_steps=5, guidance_scale=1.0, noise=noise, skip_final_step=False)
    assert all(batch == 2 for batch, _, _ in calls)  # no unconditional pass at scale 1
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)

    def fake(x, t, c, prepared=None):  # uncond rows get 1, cond rows 3: guided v = 1 + w (3 - 1)
        rows = torch.tensor([1.0] * (x.shape[0] // 2) + [3.0] * (x.shape[0] // 2))
        return rows[:, None, None].expand_as(x).clone()

    monkeypatch.setattr(model, "velocity", fake)
    out = FlowMatching(model).sample(cond, num_steps=3, guidance_scale=5.0, noise=noise)
    torch.testing.assert_close(out, noise - 11.0)


def test_seeding_and_conditions_change_the_output(model):
    cond = condition(model)

    def run(c, seed):
        return FlowMatching(model).sample(c, num_steps=6, generator=torch.Generator().manual_seed(seed))

    a = run(cond, 1)
    assert a.shape == (2, C, 6)
    assert torch.equal(a, run(cond, 1))
    assert not torch.allclose(a, run(cond, 2))
    other = condition(model, seed=5)
    assert (a - run(other, 1)).abs().max() > 1e-3  # a different prompt changes the result


def test_skip_final_step(model, monkeypatch):
    cond = condition(model)
    noise = torch.randn(2, C, 6)
    full = FlowMatching(model).sample(cond, noise=noise, skip_final_step=False)  # the official 26 calls
    calls = spy(model, monkeypatch)
    short = FlowMatching(model).sample(cond, noise=noise)  # the default drops the no-op 26th
    assert len(calls) == 25
    assert torch.equal(short, full)  # the last sway sigma is exactly 0: that step adds 0 x v
    calls.clear()
    FlowMatching(model).sample(cond, num_steps=4, sway_coef=None, skip_final_step=True)
    assert len(calls) == 4  # the linear schedule's last step is real: nothing is skipped


def test_bad_arguments(model):
    cond = condition(model)
    with pytest.raises(DashflowError, match="guidance_scale"):
        FlowMatching(model).sample(cond, guidance_scale=0.5)
    with pytest.raises(DashflowError, match="noise shape"):
        FlowMatching(model).sample(cond, noise=torch.randn(2, C, 5))
    with pytest.raises(DashflowError, match="num_steps"):
        FlowMatching(model).sample(cond, num_steps=0)

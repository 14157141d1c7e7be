"""FlowMatching's steering: the negative branch, init latents with strength, re-imposed known
frames, step callbacks; and the one path formula training and sampling share."""

from __future__ import annotations

import pytest
import torch
from dashflow.generation.model.audiogen import Conditioning
from dashflow.generation.sampling.cfm import FlowMatching, stack_conditions
from dashflow.generation.sampling.flow import LatentNormalizer, interpolate
from dashflow.generation.sampling.sampler import sway_sigmas
from diffusers import FlowMatchHeunDiscreteScheduler

from dashflow.errors import DashflowError

from tests.generation.sampling.test_sampler import C, condition, spy


def test_training_and_sampling_share_the_path():
    x0, noise = torch.randn(2, C, 5), torch.randn(2, C, 5)
    torch.testing.assert_close(interpolate(x0, noise, torch.tensor(1.0)), noise)
    torch.testing.assert_close(interpolate(x0, noise, 0.0), x0)
    torch.testing.assert_close(interpolate(x0, noise, 0.25), 0.75 * x0 + 0.25 * noise)


def test_negative_branch_is_a_third_batch_with_its_own_term(model, monkeypatch):
    cond = condition(model)
    negative = model.condition(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool),
                               latent_lengths=torch.tensor([6, 4]))
    calls = spy(model, monkeypatch)
    FlowMatching(model).sample(cond, num_steps=2, negative=negative, noise=torch.randn(2, C, 6))
    batch, _, stacked = calls[0]
    assert batch == 6 and stacked.context.shape[1] == 5  # [null; cond; negative], contexts padded to 5 tokens
    assert not stacked.context[:2].any()
    assert torch.equal(stacked.context[2:4, :3], cond.context) and not stacked.context_mask[2:4, 3:].any()
    assert torch.equal(stacked.context[4:], negative.context)

    def fake(x, t, c, prepared=None):  # null rows 1, cond rows 3, negative rows 2
        rows = torch.tensor([1.0, 1.0, 3.0, 3.0, 2.0, 2.0])
        return rows[:, None, None].expand_as(x).clone()

    monkeypatch.setattr(model, "velocity", fake)
    noise = torch.randn(2, C, 6)
    out = FlowMatching(model).sample(cond, num_steps=3, guidance_scale=5.0, negative=negative, negative_scale=0.5,
                                     noise=noise)
    torch.testing.assert_close(out, noise - (1 + 5 * 2 - 0.5 * 1))  # v = v_u + w (v_c - v_u) - w_n (v_n - v_u)


def test_negative_needs_guidance(model):
    cond = condition(model)
    with pytest.raises(DashflowError, match="negative prompt needs guidance_scale > 1"):
        FlowMatching(model).sample(cond, guidance_scale=1.0, negative=cond)


def test_strength_one_is_plain_generation_and_lower_strength_starts_from_the_noised_init(model, monkeypatch):
    cond = condition(model)
    noise, init = torch.randn(2, C, 6), torch.randn(2, C, 6)
    flow = FlowMatching(model)
    plain = flow.sample(cond, num_steps=4, noise=noise)
    assert torch.equal(flow.sample(cond, num_steps=4, noise=noise, init=init, strength=1.0), plain)
    inputs, real = [], model.velocity
    monkeypatch.setattr(model, "velocity", lambda x, t, c, p=None: inputs.append((x.clone(), float(t[0])))
                        or real(x, t, c, p))
    out = flow.sample(cond, num_steps=4, guidance_scale=1.0, noise=noise, init=init, strength=0.3)
    torch.testing.assert_close(inputs[0][0], 0.7 * init + 0.3 * noise)  # x_0.3 = (1 - 0.3) init + 0.3 eps
    sigmas = 0.3 * sway_sigmas(4)  # the schedule scaled to start at 0.3; every step runs
    assert [t for _, t in inputs] == [float(torch.trunc(s * 1000)) for s in sigmas[:-1]]
    assert not torch.allclose(out, plain)


def test_kept_frames_end_exactly_on_the_init_latents(model):
    cond = condition(model, lengths=(6, 6))
    init = torch.randn(2, C, 6)
    keep = torch.tensor([[1, 1, 0, 0, 0, 1], [0.0] * 6])
    normalizer = LatentNormalizer(channels=C)
    normalizer.mean.fill_(0.3)
    normalizer.std.fill_(2.0)
    for flow in (FlowMatching(model), FlowMatching(model, normalizer=normalizer)):
        out = flow.sample(cond, num_steps=5, generator=torch.Generator().manual_seed(0), init=init, keep=keep)
        torch.testing.assert_close(out[0, :, [0, 1, 5]], init[0, :, [0, 1, 5]], atol=1e-5, rtol=0)
        assert (out[0, :, 2:5] - init[0, :, 2:5]).abs().mean() > 0.1
        plain = flow.sample(cond, num_steps=5, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out[1], plain[1])  # keep 0: nothing re-imposed, strength 1: init unused


def test_step_callback_sees_and_replaces_the_state(model):
    cond = condition(model)
    seen = []

    def callback(step, timestep, tensors):
        seen.append((step, float(timestep), sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 2 else {}

    out = FlowMatching(model).sample(cond, num_steps=3, generator=torch.Generator().manual_seed(0),
                                     callback=callback, callback_inputs=("latents", "velocity"))
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][2] == ["latents", "velocity"]
    assert seen[0][1] == pytest.approx(1000.0)
    assert not out.any()  # the last step's state was replaced by zeros (the sway schedule ends at 0)
    with pytest.raises(DashflowError, match="must return a dict"):
        FlowMatching(model).sample(cond, num_steps=1, callback=lambda *_: None)
    with pytest.raises(DashflowError, match="not offered"):
        FlowMatching(model).sample(cond, num_steps=1, callback=callback, callback_inputs=("noise_pred",))


def test_bad_steering_arguments(model):
    cond = condition(model)
    flow = FlowMatching(model)
    with pytest.raises(DashflowError, match=r"strength must be in \(0, 1\]"):
        flow.sample(cond, init=torch.zeros(2, C, 6), strength=1.5)
    with pytest.raises(DashflowError, match="pass init"):
        flow.sample(cond, strength=0.5)
    with pytest.raises(DashflowError, match="keep shape"):
        flow.sample(cond, init=torch.zeros(2, C, 6), keep=torch.ones(2, 5))
    with pytest.raises(DashflowError, match="cannot steer from init latents"):
        flow.sample(cond, init=torch.zeros(2, C, 6), strength=0.5, scheduler=FlowMatchHeunDiscreteScheduler())


def test_stacking_pads_contexts_and_keeps_order(model):
    a = condition(model)
    b = Conditioning(torch.ones(2, 4, a.context.shape[2]), torch.ones(2, 4, dtype=torch.bool),
                     a.time_aligned_context, a.latent_mask)
    stacked = stack_conditions(a, b, a)
    assert stacked.context.shape[:2] == (6, 4) and torch.equal(stacked.context[4:, :3], a.context)
    assert torch.equal(stacked.context_mask[:2, 3], torch.zeros(2, dtype=torch.bool))

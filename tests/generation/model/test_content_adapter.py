"""Content adapter, duration coding, monotonic expansion and task routing."""

from __future__ import annotations

import math

import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.model.content_adapter import (
    CrossAttentionAdapter,
    DurationPredictor,
    alignment_path,
    decode_global_duration,
    decode_local_durations,
    expand_to_frames,
    global_duration_target,
    local_duration_target,
)

from dashflow.errors import DashflowError

RATE = 25.0


def test_duration_predictor_masks_after_every_layer():
    torch.manual_seed(0)
    pred = DurationPredictor(8, filter_channels=16, n_layers=2).eval()
    x = torch.randn(2, 8, 8)
    mask = torch.tensor([[True] * 4 + [False] * 4, [True] * 8])
    y = pred(x, mask)
    assert y.shape == (2, 8) and not y[0, 4:].any()
    x2 = x.clone()
    x2[0, 4:] = 9.0
    y2 = pred(x2, mask)
    # like the reference, the first conv sees the raw padded input; each layer's output is
    # masked, so with k=3 the padding reaches one more valid token per layer and no further
    torch.testing.assert_close(y2[0, :2], y[0, :2])
    assert not torch.allclose(y2[0, 3], y[0, 3])
    torch.testing.assert_close(y2[1], y[1])


def test_adapter_scales_duration_gradients():
    torch.manual_seed(0)

    def grad_of_norm(scale: float) -> torch.Tensor:
        torch.manual_seed(1)
        adapter = CrossAttentionAdapter(8, 6, num_heads=2, dropout=0.0, duration_grad_scale=scale,
                                        duration_predictor=DurationPredictor(8, 16, 2))
        content, instr = torch.randn(2, 5, 8), torch.randn(2, 3, 6)
        cmask, imask = torch.ones(2, 5, dtype=torch.bool), torch.tensor([[True] * 3, [True, True, False]])
        out = adapter(content, cmask, instr, imask)
        (out.global_duration.sum() + out.local_duration.sum()).backward()
        return adapter.norm.weight.grad

    torch.testing.assert_close(grad_of_norm(0.1), 0.1 * grad_of_norm(1.0))


def test_adapter_content_path_ignores_grad_scale_and_masks_attention():
    torch.manual_seed(1)
    adapter = CrossAttentionAdapter(8, 6, num_heads=2, dropout=0.0,
                                    duration_predictor=DurationPredictor(8, 16, 2)).eval()
    content, instr = torch.randn(1, 4, 8), torch.randn(1, 3, 6)
    cmask, imask = torch.ones(1, 4, dtype=torch.bool), torch.tensor([[True, True, False]])
    out = adapter(content, cmask, instr, imask)
    instr2 = instr.clone()
    instr2[0, 2] = 7.0  # a padded instruction token
    torch.testing.assert_close(adapter(content, cmask, instr2, imask).content, out.content)
    adapter.duration_grad_scale = 1.0
    torch.testing.assert_close(adapter(content, cmask, instr, imask).content, out.content)


def test_duration_targets():
    torch.testing.assert_close(local_duration_target(torch.tensor([0.04, 0.0])),
                               torch.tensor([math.log(9.0), 0.0]))
    torch.testing.assert_close(global_duration_target(torch.tensor([250]), RATE), torch.tensor([math.log(11.0)]))


def test_duration_decoding_matches_reference_formula():
    pred = torch.log(torch.tensor([[9.0, 17.0, 3.0, 50.0]]))
    mask = torch.tensor([[True, True, True, False]])
    # ceil(exp)-1 steps of 5 ms -> latent frames: 8 -> 1, 16 -> 2, 2 -> round(0.25) = 0, masked -> 0
    frames = decode_local_durations(pred, mask, RATE)
    torch.testing.assert_close(frames, torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    glob = torch.log(torch.tensor([11.0, 11.0]))
    local = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    lengths = decode_global_duration(glob, local, torch.tensor([False, True]), RATE)
    assert lengths.tolist() == [250, 2] and lengths.dtype == torch.long


def test_alignment_path_and_expansion():
    frames = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    mask = torch.tensor([[True, True, True, False]])
    path = alignment_path(frames, mask, 7)
    want = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0] * 7, [0, 0, 1, 1, 1, 0, 0], [0] * 7], dtype=torch.bool)
    assert torch.equal(path[0], want)
    content = torch.arange(4.0)[None, :, None].expand(1, 4, 2)
    out = expand_to_frames(content, mask, frames, 7)
    assert out[0, :, 0].tolist() == [0, 0, 2, 2, 2, 0, 0]  # zero-padded past the end
    assert expand_to_frames(content, mask, frames, 3)[0, :, 0].tolist() == [0, 0, 2]  # trimmed


def tiny(**kw) -> AudioGenModel:
    torch.manual_seed(0)
    model = AudioGenModel.from_preset("tiny", **kw).eval()
    with torch.no_grad():
        model.dummy_ta_embed.normal_()
        model.dummy_nta_embed.normal_()
    return model


def test_routing_non_time_aligned_and_time_aligned():
    model = tiny()
    content = torch.randn(2, 4, 32)
    cmask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    frames = torch.tensor([[1.0, 2.0, 1.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    latent_mask = torch.ones(2, 5, dtype=torch.bool)
    ta = torch.tensor([False, True])
    cond = model.route(content, cmask, ta, frames, latent_mask)
    # text item: cross-attends to its content, dummy_ta_embed on every frame
    torch.testing.assert_close(cond.context[0], content[0, :3])
    assert cond.context_mask[0].tolist() == [True, True, True]  # cut after the last valid token
    torch.testing.assert_close(cond.time_aligned_context[0], model.dummy_ta_embed.expand(5, -1))
    # time-aligned item: one dummy_nta_embed token, content expanded by its durations
    assert cond.context_mask[1].tolist() == [True, False, False]
    torch.testing.assert_close(cond.context[1, 0], model.dummy_nta_embed)
    want = torch.stack([content[1, 0], content[1, 0], content[1, 1], content[1, 1], torch.zeros(32)])
    torch.testing.assert_close(cond.time_aligned_context[1], want)


def test_routing_needs_durations_for_time_aligned_items():
    model = tiny()
    with pytest.raises(DashflowError, match="durations"):
        model.route(torch.randn(1, 2, 32), torch.ones(1, 2, dtype=torch.bool), torch.tensor([True]),
                    None, torch.ones(1, 3, dtype=torch.bool))


def test_condition_decodes_lengths_and_accepts_overrides():
    model = tiny()
    with torch.no_grad():  # global prediction exp(pred) - 1 = 0.4 s -> 10 frames
        model.content_adapter.global_duration_mlp[3].weight.zero_()
        model.content_adapter.global_duration_mlp[3].bias.fill_(math.log(1.4))
    content, cmask = torch.randn(3, 4, 32), torch.ones(3, 4, dtype=torch.bool)
    assert model.condition(content, cmask).latent_lengths.tolist() == [10, 10, 10]
    cond = model.condition(content, cmask, latent_lengths=torch.tensor([5, 8, 3]))
    assert cond.latent_mask.shape == (3, 8) and cond.latent_lengths.tolist() == [5, 8, 3]
    assert model.condition(content, cmask, latent_lengths=7).latent_lengths.tolist() == [7, 7, 7]


def test_speech_enhancement_content_path():
    model = tiny(audio_content_dim=16)
    noisy = torch.randn(2, 6, 16)
    mask = torch.ones(2, 6, dtype=torch.bool)
    cond = model.condition(noisy, mask, content_kind="audio", durations=torch.full((2, 6), 1 / RATE),
                           latent_lengths=6)
    assert cond.context.shape == (2, 1, 32) and cond.latent_lengths.tolist() == [6, 6]
    adapted = model.adapt(noisy, mask, "audio").content
    torch.testing.assert_close(cond.time_aligned_context, adapted)  # one content frame per latent frame
    with pytest.raises(DashflowError, match="audio_content_dim"):
        tiny().embed_content(noisy, "audio")


def test_instruction_buffers():
    model = tiny()
    emb, mask = model.default_instruction(3)
    assert emb.shape == (3, 4, 32) and mask.all()
    model.set_instruction(torch.ones(2, 32))
    emb, mask = model.default_instruction(1)
    assert mask.tolist() == [[True, True, False, False]] and emb[0, 2:].abs().sum() == 0
    assert model.instruction_lengths.tolist() == [2]
    with pytest.raises(DashflowError, match="does not fit"):
        model.set_instruction(torch.ones(5, 32))
    zero = tiny(use_zero_instruction=True)
    emb, mask = zero.default_instruction(2)
    assert emb.shape == (2, 1, 32) and not emb.any() and mask.all()

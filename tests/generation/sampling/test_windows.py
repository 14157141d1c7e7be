"""Long-form windows: the plan covers the clip, context and crossfade weights are right, and
window sampling keeps what exists."""

from __future__ import annotations

import pytest
import torch
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.generation.sampling.windows import Window, context_weights, plan_windows, sample_windows

from dashflow.errors import DashflowError

from tests.generation.sampling.test_sampler import C, condition


def test_windows_cover_the_clip_with_overlapping_context():
    plan = plan_windows(total=20, window=8, overlap=3)
    assert plan[0] == Window(0, 8, 0)
    assert all(w.frames == 8 for w in plan)  # the last one moved back: every window has one length
    made = 0
    for w in plan:
        assert w.start + w.context == made and w.context >= (3 if made else 0)
        made = w.end
    assert made == 20 and plan[-1] == Window(12, 20, 6)  # 18 made: moved back to end at 20, 6 frames of context
    assert plan_windows(6, 8, 3) == [Window(0, 6, 0)]
    assert plan_windows(20, 8, 3, known=10)[0] == Window(7, 15, 3)  # continuing a clip of 10 frames
    assert plan_windows(20, 8, 3, known=2)[0] == Window(0, 8, 2)  # a clip shorter than the overlap: all of it
    with pytest.raises(DashflowError, match="overlap"):
        plan_windows(20, 8, 8)


def test_context_weights_crossfade_generated_frames_and_keep_given_ones():
    w = context_weights(Window(5, 13, 4), known=0, ramp=2)
    assert w[:2].tolist() == [1.0, 1.0] and 1 > w[2] > w[3] > 0 and not w[4:].any()
    torch.testing.assert_close(w[2] + w[3], torch.tensor(1.0))  # raised cosine: symmetric
    assert context_weights(Window(5, 13, 4), known=9, ramp=2)[:4].tolist() == [1.0] * 4  # a given clip's frames
    assert context_weights(Window(5, 13, 4), known=8, ramp=2)[:4].tolist()[:3] == [1.0] * 3


def test_window_sampling_passes_what_exists_and_assembles_the_windows():
    known = torch.randn(1, C, 4)
    seen = []

    def sample(window, init, keep):
        seen.append((window, None if init is None else init.clone(), keep))
        return torch.full((1, C, window.frames), float(len(seen)))

    out = sample_windows(sample, known, total=14, window=8, overlap=4)
    assert [w for w, _, _ in seen] == plan_windows(14, 8, 4, known=4)
    _, init, keep = seen[0]
    assert torch.equal(init[:, :, :4], known) and not init[:, :, 4:].any() and keep.shape == (1, 8)
    assert keep[0, :4].tolist() == [1.0] * 4  # the given clip stays whole
    torch.testing.assert_close(out[:, :, :4], torch.full((1, C, 4), 1.0))  # ... as the sampler returned it
    _, init, keep = seen[1]
    assert torch.equal(init[:, :, :seen[1][0].context], out.new_full((1, C, seen[1][0].context), 1.0))
    assert (out[:, :, -1] == len(seen)).all()
    none_known = []
    sample_windows(lambda w, i, k: none_known.append((i, k)) or torch.zeros(1, C, w.frames),
                   torch.zeros(1, C, 0), total=14, window=8, overlap=4)
    assert none_known[0] == (None, None)  # the first window of a fresh clip is plain generation


def test_windowed_flow_sampling_is_continuous_where_windows_meet(model):
    cond = condition(model, lengths=(8,))
    flow = FlowMatching(model)
    generator = torch.Generator().manual_seed(0)
    calls = []

    def sample(window, init, keep):
        calls.append(window)
        return flow.sample(cond, num_steps=4, generator=generator, init=init, keep=keep)

    out = sample_windows(sample, torch.zeros(1, C, 0), total=20, window=8, overlap=4)
    assert out.shape == (1, C, 20) and torch.isfinite(out).all() and len(calls) == 4

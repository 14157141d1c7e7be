"""Loud-event counting on synthetic barks."""

from __future__ import annotations

import numpy as np
from dashflow.eval.events import count_events

SR = 16000


def barks(n: int, gap: float) -> np.ndarray:
    t = np.arange(int(0.25 * SR)) / SR
    bark = np.sin(2 * np.pi * 500 * t) * np.hanning(t.size)
    silence = np.zeros(int(gap * SR))
    return np.concatenate([np.concatenate([bark, silence]) for _ in range(n)]).astype(np.float32)


def test_counts_separated_events_and_merges_close_ones():
    assert count_events(barks(4, 0.4)) == 4
    assert count_events(barks(3, 0.05)) == 1  # 50 ms gaps: one continuous event
    noisy = barks(5, 0.3) + 0.001 * np.random.default_rng(0).standard_normal(barks(5, 0.3).size)
    assert count_events(noisy.astype(np.float32)) == 5  # a noise floor 40 dB down is not an event

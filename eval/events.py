"""Counting loud events (barks, knocks, notes) in a clip from its short-time energy envelope."""

from __future__ import annotations

import numpy as np


def count_events(wav: np.ndarray, sample_rate: int = 16000, floor_db: float = -20.0) -> int:
    """Loud events in wav [S]: rises of the 10 ms envelope above ``floor_db`` below its peak,
    at least 120 ms after the previous event ended."""
    hop = sample_rate // 100
    frames = np.sqrt(np.mean(wav[:len(wav) // hop * hop].reshape(-1, hop) ** 2, axis=1) + 1e-12)
    loud = 20 * np.log10(frames / frames.max()) > floor_db
    events, quiet_run = 0, 12
    for is_loud in loud:
        if is_loud and quiet_run >= 12:
            events += 1
        quiet_run = 0 if is_loud else quiet_run + 1
    return events

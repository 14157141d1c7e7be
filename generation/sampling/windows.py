"""Long-form sampling: windowed continuation with latent crossfades.

A clip longer than the window is made window by window. The first window is plain generation
(or, continuing a clip, starts with the clip's last frames); every later window starts
``overlap`` frames before the end of what exists and regenerates the rest with those frames
re-imposed (:meth:`FlowMatching.sample`'s ``keep``). Of the re-imposed frames, the last
``overlap // 2`` are weighted down from 1 to 0 (raised cosine), so the seam is a latent crossfade
between the frames the previous window made without right context and the new window's. Frames
of a given clip (``known``) are kept whole. The last window is moved back to end at the clip's
end (it then takes more context), so every window has the same length. Memory is that of one
window, whatever the clip's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dashflow.errors import DashflowError


@dataclass(frozen=True)
class Window:
    """Frames ``[start, end)``; the first ``context`` of them exist before the window is sampled."""

    start: int
    end: int
    context: int

    @property
    def frames(self) -> int:
        return self.end - self.start


def plan_windows(total: int, window: int, overlap: int, known: int = 0) -> list[Window]:
    """Windows covering frames ``[known, total)`` of a clip whose first ``known`` frames exist."""
    if not 0 < overlap < window:
        raise DashflowError(f"the window overlap ({overlap} frames) must be positive and shorter than the "
                            f"window ({window} frames)")
    windows, made = [], known
    while made < total:
        start = 0 if made == 0 else max(0, min(made - overlap, total - window))
        end = min(start + window, total)
        windows.append(Window(start, end, made - start))
        made = end
    return windows


def context_weights(window: Window, known: int, ramp: int) -> Tensor:
    """keep weights [frames] of one window: 1 on its context, the last ``ramp`` generated context
    frames going from 1 to 0 (raised cosine, both ends excluded), 0 on the new frames. Context
    frames before ``known`` (a given clip's) stay 1."""
    weights = torch.zeros(window.frames)
    weights[:window.context] = 1.0
    fade = min(ramp, window.context, max(0, window.start + window.context - known))
    if fade:
        position = torch.arange(fade, dtype=torch.float64) + 1
        weights[window.context - fade:window.context] = torch.cos(0.5 * math.pi * position / (fade + 1)).pow(2).float()
    return weights


def sample_windows(sample: Callable[[Window, Tensor | None, Tensor | None], Tensor], known: Tensor, total: int,
                   window: int, overlap: int) -> Tensor:
    """Latents [B, C, total] made window by window.

    known [B, C, K] (K may be 0): the given clip's latents, kept. ``sample(window, init, keep)``
    samples one window and returns its latents [B, C, window.frames]: ``init`` [B, C, frames] holds
    what exists (zeros elsewhere) and ``keep`` [B, frames] the weights to re-impose it with; both are
    None for a window with no context (plain generation).
    """
    b, c, k = known.shape
    out = torch.zeros(b, c, total, dtype=known.dtype, device=known.device)
    out[:, :, :k] = known
    for win in plan_windows(total, window, overlap, k):
        if win.context == 0:
            out[:, :, win.start:win.end] = sample(win, None, None)
            continue
        keep = context_weights(win, k, overlap // 2).to(known.device)[None].expand(b, -1)
        init = out[:, :, win.start:win.end].clone()
        init[:, :, win.context:] = 0
        out[:, :, win.start:win.end] = sample(win, init, keep)
    return out

"""KL divergence and Inception Score on classifier logits (PANNs Cnn14, 527 AudioSet classes).

Both follow audioldm_eval, the implementation behind the papers' numbers:
- KL is KL(reference || generated) per basename pair, ``sum_c p_ref (log p_ref - log(p_gen + 1e-6))``
  averaged over pairs, with ``p = softmax(logits)`` or, for the "sigmoid" variant, the per-class
  sigmoids (no ``1 - p`` terms, so it is not a Bernoulli KL and can be negative).
- IS uses generated logits only: float64, shuffled by ``RandomState(2020).permutation``, 10
  splits, ``exp(mean_i KL(p_i || mean p))`` per split; the mean and std over splits.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_softmax, xlogy

from dashflow.errors import DashflowError

KL_EPS = 1e-6
KL_KINDS = ("softmax", "sigmoid")


def _probabilities(logits: np.ndarray, kind: str) -> np.ndarray:
    if kind == "softmax":
        return np.exp(log_softmax(logits, axis=1))
    if kind == "sigmoid":
        return expit(logits)
    raise ValueError(f"unknown KL kind {kind!r}; use one of {KL_KINDS}")


def kl_per_clip(reference_logits: np.ndarray, generated_logits: np.ndarray, kind: str = "softmax") -> np.ndarray:
    """KL(ref || gen) of paired rows: logits [N, C] each -> [N] (float64)."""
    ref = np.asarray(reference_logits, dtype=np.float64)
    gen = np.asarray(generated_logits, dtype=np.float64)
    if ref.shape != gen.shape or ref.ndim != 2:
        raise DashflowError(f"KL needs paired logits of one shape, got {ref.shape} and {gen.shape}")
    p_ref, p_gen = _probabilities(ref, kind), _probabilities(gen, kind)
    return (xlogy(p_ref, p_ref) - p_ref * np.log(p_gen + KL_EPS)).sum(axis=1)


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """Logits [N, C] -> (mean, std) of the per-split Inception Scores."""
    logits = np.asarray(logits, dtype=np.float64)
    n = logits.shape[0]
    if n < splits:
        raise DashflowError(f"IS with {splits} splits needs at least {splits} generated clips, got {n}")
    logits = logits[np.random.RandomState(seed).permutation(n)]
    log_p = log_softmax(logits, axis=1)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        log_q = np.log(p[chunk].mean(axis=0, keepdims=True))
        scores.append(np.exp((p[chunk] * (log_p[chunk] - log_q)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))

"""KL and Inception Score on hand-computed logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dashflow.eval.classifier_metrics import KL_EPS, inception_score, kl_per_clip

from dashflow.errors import DashflowError


def test_softmax_kl_hand_computed():
    # ref logits [0, 0] -> p = (1/2, 1/2); gen logits [ln 3, 0] -> q = (3/4, 1/4)
    ref = np.array([[0.0, 0.0]])
    gen = np.array([[math.log(3.0), 0.0]])
    expected = 0.5 * (math.log(0.5) - math.log(0.75 + KL_EPS)) + 0.5 * (math.log(0.5) - math.log(0.25 + KL_EPS))
    assert kl_per_clip(ref, gen, "softmax")[0] == pytest.approx(expected, rel=1e-12)
    # the direction is KL(ref || gen): swapping the arguments gives a different number
    assert kl_per_clip(gen, ref, "softmax")[0] != pytest.approx(expected, rel=1e-3)


def test_sigmoid_kl_hand_computed_and_can_be_negative():
    # per-class sigmoids with no (1 - p) terms: sum_c p (log p - log(q + eps))
    ref, gen = np.array([[0.0, math.log(3.0)]]), np.array([[math.log(3.0), 0.0]])
    p, q = np.array([0.5, 0.75]), np.array([0.75, 0.5])
    expected = float((p * (np.log(p) - np.log(q + KL_EPS))).sum())
    assert kl_per_clip(ref, gen, "sigmoid")[0] == pytest.approx(expected, rel=1e-12)
    # generated probabilities above the reference's on every class make it negative
    assert kl_per_clip(np.zeros((1, 3)), np.full((1, 3), 4.0), "sigmoid")[0] < 0


def test_kl_is_per_pair_and_zero_class_probability_is_safe():
    ref = np.array([[0.0, 0.0], [50.0, -50.0]])  # second row: p_ref ~ (1, 0)
    gen = np.array([[0.0, 0.0], [50.0, -50.0]])
    values = kl_per_clip(ref, gen, "softmax")
    assert values.shape == (2,)
    assert np.all(np.isfinite(values))
    assert np.all(np.abs(values) < 1e-5)  # identical pairs: only the 1e-6 epsilon remains
    with pytest.raises(DashflowError):
        kl_per_clip(ref, gen[:1])
    with pytest.raises(ValueError):
        kl_per_clip(ref, gen, "hinge")


def test_inception_score_hand_computed():
    # confident one-hot rows over 4 classes, 2 splits after the seed-2020 shuffle: per split
    # exp(mean_i KL(p_i || mean p)), evaluated here with plain numpy
    n_classes, per_split = 4, 4
    logits = np.full((8, n_classes), -60.0)
    for i in range(8):
        logits[i, i % n_classes] = 60.0
    perm = np.random.RandomState(2020).permutation(8)
    splits = [logits[perm][:4], logits[perm][4:]]
    expected = []
    for chunk in splits:
        p = np.exp(chunk - chunk.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        q = p.mean(0)
        expected.append(math.exp(np.mean([np.sum(np.where(r > 0, r * np.log(r / q), 0.0)) for r in p])))
    mean, std = inception_score(logits, splits=2, seed=2020)
    assert mean == pytest.approx(np.mean(expected), rel=1e-9)
    assert std == pytest.approx(np.std(expected), rel=1e-9, abs=1e-12)
    assert 1.0 <= mean <= per_split


def test_inception_score_bounds_and_errors():
    uniform = np.zeros((20, 5))
    assert inception_score(uniform, splits=10) == pytest.approx((1.0, 0.0))
    onehot = np.eye(10).repeat(2, axis=0) * 80.0
    mean, _ = inception_score(onehot, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-6)
    with pytest.raises(DashflowError, match="at least 10"):
        inception_score(np.zeros((4, 5)), splits=10)


def test_reported_kl_never_goes_below_zero_and_says_so():
    """A clip whose reference-formula KL is negative counts as 0; the report names the clamp."""
    from dashflow.eval.report import issue_lines
    from dashflow.eval.suite import _kl

    # clip a: generated sigmoids above the reference's on every class (negative KL); clip b: equal
    ref = {"a": {"logits": np.array([0.0, 0.0])}, "b": {"logits": np.array([0.0, 0.0])}}
    gen = {"a": {"logits": np.array([math.log(3.0), math.log(3.0)])}, "b": {"logits": np.array([0.0, 0.0])}}
    per_clip = {"a": {}, "b": {}}
    out = _kl(gen, ref, per_clip)
    raw = kl_per_clip(np.stack([ref["a"]["logits"]]), np.stack([gen["a"]["logits"]]), "sigmoid")[0]
    assert raw < 0 and per_clip["a"]["kl_sigmoid"] == 0.0
    assert out["kl_sigmoid"]["value"] >= 0 and out["kl_softmax"]["value"] >= 0
    assert out["kl_sigmoid"]["n_clamped"] >= 1 and out["kl_sigmoid"]["raw_value"] < out["kl_sigmoid"]["value"]
    run = {"name": "run", "metrics": out, "issues": {"unreadable": {}, "unpaired_generated": [],
                                                     "unpaired_reference": [], "uncaptioned": [], "failed": {}}}
    lines = issue_lines({"reference": {}, "runs": [run]})
    assert any("below 0" in line and "counted as 0" in line for line in lines)

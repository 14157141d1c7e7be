"""Probe heads, the k-NN score and probe-task manifests (dashflow.eval.probes)."""

import json

import pytest
import torch

from dashflow.errors import DashflowError
from dashflow.eval.probes import (
    ProbeHead,
    knn_accuracy,
    majority_accuracy,
    masked_mean,
    read_probe_task,
    train_probe,
)


def clusters(n: int, classes: int, dim: int = 8, frames: int = 6, noise: float = 0.3, seed: int = 0):
    """Clip features [n, frames, dim] around one centre per class, with padded frames of garbage."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 2
    labels = torch.arange(n) % classes
    x = centres[labels][:, None] + noise * torch.randn(n, frames, dim, generator=g)
    lengths = torch.randint(2, frames + 1, (n,), generator=g)
    mask = torch.arange(frames)[None] < lengths[:, None]
    x[~mask] = 50.0  # padding that would wreck an unmasked mean
    return x, mask, labels


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_the_linear_head_is_xares_layernorm_plus_linear():
    head = ProbeHead(16, 5)
    assert [type(m).__name__ for m in head.net] == ["LayerNorm", "Linear"]
    assert [type(m).__name__ for m in ProbeHead(16, 5, hidden=32).net] == ["LayerNorm", "Linear", "GELU", "Linear"]


@pytest.mark.parametrize("head,pooling", [("linear", "mean"), ("linear", "frame"), ("mlp", "mean")])
def test_probe_learns_separable_classes_and_is_seeded(head, pooling):
    train, val, test = clusters(120, 4, seed=0), clusters(40, 4, seed=1), clusters(40, 4, seed=2)
    result = train_probe(train, val, test, 4, head=head, pooling=pooling, epochs=8, lr=1e-2)
    assert result.test > 0.9 and result.val == max(result.val_curve) and len(result.val_curve) == 8
    again = train_probe(train, val, test, 4, head=head, pooling=pooling, epochs=8, lr=1e-2)
    assert (again.test, again.best_epoch) == (result.test, result.best_epoch)


def test_the_epoch_is_chosen_on_val_not_test():
    """A val split whose labels are shuffled picks an epoch by chance; test is then reported as is."""
    train, test = clusters(120, 4, seed=0), clusters(40, 4, seed=2)
    x, m, y = clusters(40, 4, seed=1)
    noisy_val = (x, m, y[torch.randperm(40, generator=torch.Generator().manual_seed(0))])
    result = train_probe(train, noisy_val, test, 4, epochs=6, lr=1e-2)
    assert result.val < 0.6 and result.test > 0.8


def test_knn_votes_with_neighbours():
    train, test = clusters(80, 4, seed=0), clusters(20, 4, seed=3)
    assert knn_accuracy(train, test, 4) == 1.0
    far = (-test[0], test[1], test[2])  # nowhere near any class centre's direction
    assert knn_accuracy(train, far, 4) < 0.5


def write_task(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(labels, split=None, sources=None):
    out = []
    for i, label in enumerate(labels):
        row = {"audio_id": f"c{i}", "audio": f"c{i}.wav", "label": label}
        if split:
            row["split"] = split[i]
        if sources:
            row["source"] = sources[i]
        out.append(row)
    return out


def test_splits_are_drawn_by_source_when_not_given(tmp_path):
    labels = ["a", "b"] * 100
    sources = [f"s{i // 4}" for i in range(200)]
    task = read_probe_task(write_task(tmp_path / "t.jsonl", rows(labels, sources=sources)))
    by_split = {s: {r["source"] for r in recs} for s, recs in task.splits.items()}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert 0.4 < len(task.splits["train"]) / 200 < 0.8 and task.classes == ["a", "b"]
    assert task.labels("test").tolist() == [0 if r["label"] == "a" else 1 for r in task.splits["test"]]
    assert 0.0 < majority_accuracy(task) < 1.0


@pytest.mark.parametrize("content,message", [
    (rows(["a"] * 6, ["train", "val", "test"] * 2), "at least 2 classes, found 1"),
    ([{"audio_id": "x", "audio": "x.wav", "split": "train"}], "has no label"),
    (rows(["a", "b", "a"], ["train", "val", "dev"]), "unknown split"),
    (rows(["a", "b", "a"], None) + [{"audio_id": "z", "audio": "z.wav", "label": "a", "split": "test"}],
     "some records have a split"),
    (rows(["a", "b", "a", "b", "c"], ["train", "train", "val", "val", "test"]), "never occur in train"),
    (rows(["a", "b", "a", "b"], ["train", "train", "val", "val"]), "test are empty"),
])
def test_bad_probe_tasks_get_one_line(tmp_path, content, message):
    with pytest.raises(DashflowError, match=message) as caught:
        read_probe_task(write_task(tmp_path / "t.jsonl", content))
    assert "\n" not in str(caught.value)

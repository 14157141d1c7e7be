"""The in-house classifier: training on a synthetic labelled corpus written here, its metrics, and
`dashflow train-classifier` / `dashflow eval --classifier`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from dashflow.eval.inhouse import (
    Architecture,
    InhouseClassifier,
    InhouseCNN,
    MelSettings,
    labelled_records,
    prompt_separation,
    source_of,
    split_by_source,
    top1_by_class,
    train_classifier,
)
from dashflow.eval.weights import sha256_file

from dashflow.errors import DashflowError
from tests.conftest import SR, chirp, noise, tone, write_wav
from tests.eval.conftest import run_cli

TINY = Architecture(channels=(8, 16, 32), embed_dim=32, window_seconds=1.0)
CAPTIONS = {"tone": ["a steady tone", "a beep"], "noise": ["white noise"], "chirp": ["a rising chirp"],
            "click": ["clicks", "a clicking sound"]}


def synth(label: str, source: int, seed: int, seconds: float = 1.0) -> np.ndarray:
    """A clip of ``label``; ``source`` sets its parameters, ``seed`` the small per-clip variation."""
    rng = np.random.default_rng(1000 * source + seed)
    jitter = rng.uniform(0.95, 1.05)
    if label == "tone":
        f = (300.0 + 150.0 * source) * jitter
        wav = tone(f, seconds) + tone(2 * f, seconds, amp=0.1)
    elif label == "chirp":
        wav = chirp((200.0 + 100.0 * source) * jitter, 3000.0 + 500.0 * source, seconds)
    elif label == "noise":
        gate = (np.arange(int(seconds * SR)) // int(SR * (0.05 + 0.03 * source)) % 2).astype(np.float32)
        wav = noise(seconds, amp=0.2, seed=int(rng.integers(1 << 30))) * gate
    else:  # click trains
        wav = np.zeros(int(seconds * SR), np.float32)
        wav[rng.integers(0, 200)::int(SR / ((8.0 + 4.0 * source) * jitter))] = 0.8
    return (wav * rng.uniform(0.5, 1.5) + noise(seconds, amp=0.003, seed=seed)).astype(np.float32)


def write_corpus(root: Path) -> Path:
    """4 labels x 4 sources x 3 clips (split heldout), and a "hum" label only in split train."""
    lines = []
    for label, captions in CAPTIONS.items():
        for source in range(4):
            for k in range(3):
                name = f"{label}{source}_{k}"
                write_wav(root / "audio" / f"{name}.wav", synth(label, source, k, seconds=1.0 + 0.25 * k))
                lines.append({"audio_id": name, "audio": f"audio/{name}.wav", "caption": captions[0],
                              "duration": 1.0 + 0.25 * k, "label": label, "source": f"{label}{source}",
                              "split": "heldout", "captions": captions})
    for k in range(2):
        write_wav(root / "audio" / f"hum{k}.wav", tone(60.0, 1.0))
        lines.append({"audio_id": f"hum{k}", "audio": f"audio/hum{k}.wav", "caption": "a low hum", "label": "hum",
                      "source": f"hum{k}", "split": "train"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inhouse")
    manifest = write_corpus(root)
    classifier = train_classifier(manifest, root / "classifier", split="heldout", epochs=10, batch_size=8,
                                  lr=3e-3, val_fraction=0.25, seed=0, arch=TINY, progress=False)
    return {"root": root, "manifest": manifest, "folder": root / "classifier", "classifier": classifier}


def test_training_separates_synthetic_classes(trained):
    classifier = trained["classifier"]
    assert classifier.labels == ["chirp", "click", "noise", "tone"]  # "hum" is only in split train
    validation, training = classifier.record["validation"], classifier.record["training"]
    assert validation["top1"] >= 0.9, classifier.record
    assert validation["n_clips"] + training["n_clips"] == 48 and validation["n_sources"] == 4
    assert classifier.caption_to_label["a beep"] == "tone" and "a low hum" not in classifier.caption_to_label
    assert classifier.label_for_prompt("  A Steady Tone ") == "tone" and classifier.label_for_prompt("Click") == "click"
    assert classifier.label_for_prompt("a violin") is None
    config = json.loads((trained["folder"] / "config.json").read_text())
    assert config["mel"] == {"n_mels": 64, "win_length": 400, "hop_length": 160, "fmin": 50.0, "fmax": 8000.0}
    assert config["seed"] == 0 and config["training"]["split"] == "heldout"
    assert len(config["training"]["history"]) == 10
    full = InhouseCNN(20)  # the default architecture stays small
    assert 1e5 < sum(p.numel() for p in full.parameters()) < 5e5


def test_validation_split_never_shares_a_source(trained):
    _, records = labelled_records(trained["manifest"], "heldout")
    train, val = split_by_source(records, 0.25, seed=0)
    train_sources, val_sources = {source_of(r) for r in train}, {source_of(r) for r in val}
    assert not train_sources & val_sources and len(train) + len(val) == len(records)
    assert {r["label"] for r in train} == {r["label"] for r in val} == set(CAPTIONS)  # one source per label held out
    assert split_by_source(records, 0.25, seed=0) == (train, val)
    assert sorted(val_sources) == trained["classifier"].record["validation"]["sources"]
    assert any(split_by_source(records, 0.25, seed=s)[1] != val for s in range(1, 5))
    with pytest.raises(DashflowError, match="no label has two sources"):
        split_by_source([{**r, "source": r["label"]} for r in records], 0.25, seed=0)


def test_windows_cover_the_whole_clip(trained):
    classifier = trained["classifier"]
    windows = classifier.windows(np.arange(int(2.2 * SR), dtype=np.float32))
    assert windows.shape == (4, SR)  # starts 0, 0.5, 1.0 s and a last one ending at 2.2 s
    assert windows[-1, -1] == int(2.2 * SR) - 1
    assert classifier.windows(np.ones(SR // 2, np.float32)).shape == (1, SR)  # short: zero-padded


def test_save_load_round_trip_gives_identical_outputs(trained, tmp_path):
    classifier = trained["classifier"]
    clips = [synth(label, 5, 9, seconds=1.7) for label in CAPTIONS]
    again = InhouseClassifier.load(classifier.save(tmp_path / "copy"))
    assert np.array_equal(again.predict(clips), classifier.predict(clips))
    assert np.array_equal(again.embed(clips), classifier.embed(clips))
    assert again.predict(clips).shape == (4, 4) and again.embed(clips).shape == (4, TINY.embed_dim)
    assert again.sha256 == sha256_file(trained["folder"] / "model.safetensors")
    assert again.labels == classifier.labels and again.caption_to_label == classifier.caption_to_label


def test_missing_or_mismatched_files_are_one_line_errors(trained, tmp_path):
    def load_error(folder: Path) -> str:
        with pytest.raises(DashflowError) as info:
            InhouseClassifier.load(folder)
        assert "\n" not in str(info.value)
        return str(info.value)

    folder = tmp_path / "broken"
    shutil.copytree(trained["folder"], folder)
    (folder / "model.safetensors").unlink()
    assert "model.safetensors: not found" in load_error(folder)
    five = InhouseClassifier(InhouseCNN(5, TINY), list("abcde"), {}, TINY, MelSettings(), {})
    five.save(tmp_path / "five")
    shutil.copy(tmp_path / "five" / "model.safetensors", folder)
    assert "do not fit InhouseCNN" in load_error(folder) and "head" in load_error(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    assert "unreadable weights" in load_error(folder)
    config = json.loads((trained["folder"] / "config.json").read_text())
    del config["labels"]
    (folder / "config.json").write_text(json.dumps(config))
    assert "not an in-house classifier config" in load_error(folder)


def test_top1_and_per_class_counts():
    scores = top1_by_class(["dog", "dog", "cat", "cat", "bird"], ["dog", "cat", "cat", "cat", "dog"])
    assert scores["overall"] == pytest.approx(3 / 5)
    assert scores["per_class"] == {"cat": (2, 3), "dog": (1, 2)}
    with pytest.raises(DashflowError):
        top1_by_class(["dog"], [])


def test_prompt_separation_follows_what_drives_the_embedding():
    rng = np.random.default_rng(0)
    prompts, seeds = [p for p in "abcd" for _ in range(5)], list(range(5)) * 4
    by_prompt = {p: rng.standard_normal(32) for p in "abcd"}
    by_seed = {s: rng.standard_normal(32) for s in range(5)}
    alike = np.stack([by_prompt[p] + 0.2 * rng.standard_normal(32) for p in prompts])
    result = prompt_separation(alike, prompts, seeds)
    assert result["separation"] > 0.5 and result["same_prompt"] > 0.9
    assert result["separation"] == pytest.approx(result["same_prompt"] - result["same_seed"])
    assert result["n_pairs_same_prompt"] == 4 * 10 and result["n_pairs_same_seed"] == 5 * 6
    ignored = np.stack([by_seed[s] + 0.2 * rng.standard_normal(32) for s in seeds])  # the prompt has no effect
    assert prompt_separation(ignored, prompts, seeds)["separation"] < -0.5
    unrelated = rng.standard_normal((20, 32))
    assert abs(prompt_separation(unrelated, prompts, seeds)["separation"]) < 0.15
    with pytest.raises(DashflowError, match="two prompts at one seed"):
        prompt_separation(alike, prompts, list(range(20)))


def test_train_classifier_cli(trained, tmp_path, capsys):
    out = tmp_path / "cli"
    assert run_cli(["train-classifier", "--manifest", trained["manifest"], "--out", out, "--split", "heldout",
                    "--epochs", "1", "--batch-size", "8", "--seed", "3"]) == 0
    assert "validation top-1" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["chirp", "click", "noise", "tone"] and config["seed"] == 3
    assert config["architecture"]["channels"] == list(Architecture().channels)
    assert run_cli(["train-classifier", "--manifest", trained["manifest"], "--out", out, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no clip has split 'test'" in err
    bad = trained["root"] / "unlabelled.jsonl"
    bad.write_text(json.dumps({"audio_id": "x", "audio": "audio/hum0.wav"}) + "\n")
    assert run_cli(["train-classifier", "--manifest", bad, "--out", out]) == 2
    assert "clip 'x' has no label" in capsys.readouterr().err


def test_several_manifests_train_as_one(trained, tmp_path, capsys):
    """A class from another corpus joins the old ones (the fine-tuning demo retrains its judge so):
    each manifest's audio paths resolve against its own folder; an audio_id in two is one line."""
    extra = tmp_path / "extra"
    lines = []
    for source in range(2):
        for k in range(2):
            name = f"sweep{source}_{k}"
            write_wav(extra / "audio" / f"{name}.wav", chirp(3000.0 + 500.0 * source, 300.0, 1.0))
            lines.append({"audio_id": name, "audio": f"audio/{name}.wav", "caption": "a falling sweep",
                          "label": "sweep", "source": f"sweep{source}", "split": "heldout"})
    (extra / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    _, chosen = labelled_records([trained["manifest"], extra / "manifest.jsonl"], "heldout")
    assert len(chosen) == 48 + 4 and {r["label"] for r in chosen} == {*CAPTIONS, "sweep"}
    assert all(Path(r["audio"]).is_file() for r in chosen)
    out = tmp_path / "both"
    assert run_cli(["train-classifier", "--manifest", trained["manifest"], extra / "manifest.jsonl", "--out", out,
                    "--split", "heldout", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0",
                    "--test-manifest", extra / "manifest.jsonl", trained["manifest"]]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["chirp", "click", "noise", "sweep", "tone"]
    assert config["training"]["n_clips"] == 52 and str(extra / "manifest.jsonl") in config["training"]["manifest"]
    assert config["validation"]["n_clips"] == 52  # both test manifests, read as one
    capsys.readouterr()
    assert run_cli(["train-classifier", "--manifest", extra / "manifest.jsonl", extra / "manifest.jsonl",
                    "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "audio_id 'sweep0_0' appears more than once" in err


def test_eval_reports_inhouse_metrics(trained, tmp_path, capsys):
    gen, ref = tmp_path / "generated", tmp_path / "reference"
    for label, captions in CAPTIONS.items():
        prompt = label if label == "click" else captions[0]  # a label name is a prompt too
        for seed in range(3):
            write_wav(gen / f"{label}_{seed}.wav", synth(label, seed, 20 + seed, seconds=1.5))
            (gen / f"{label}_{seed}.json").write_text(json.dumps({"prompt": prompt, "seed": seed, "steps": 25}))
            write_wav(ref / f"{label}_{seed}.wav", synth(label, 7, seed))
    write_wav(gen / "violin.wav", synth("tone", 2, 0))
    (gen / "violin.json").write_text(json.dumps({"prompt": "a violin solo", "seed": 0}))
    out = tmp_path / "report"
    assert run_cli(["eval", "--generated", gen, "--reference", ref, "--metrics", "inhouse", "--classifier",
                    trained["folder"], "--out", out, "--no-cache", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    run, model = report["runs"][0], report["models"]["inhouse"]
    metrics = run["metrics"]
    assert metrics["top1"]["value"] >= 0.9 and metrics["top1"]["n_clips"] == 12
    assert metrics["top1"]["n_unmapped"] == 1 and run["issues"]["unmapped"] == {"violin": "a violin solo"}
    assert {label: total for label, (_, total) in metrics["top1"]["per_class"].items()} == dict.fromkeys(CAPTIONS, 3)
    hits = [c["inhouse_label"] == c["prompted_label"] for c in run["per_clip"].values() if "prompted_label" in c]
    assert metrics["top1"]["value"] == pytest.approx(np.mean(hits))
    sep = metrics["prompt_sep"]
    assert sep["value"] > 0.3 and sep["value"] == pytest.approx(sep["same_prompt"] - sep["same_seed"])
    assert sep["n_clips"] == 13 and sep["n_prompts"] == 5
    assert np.isfinite(metrics["fd_inhouse"]["value"]) and metrics["fd_inhouse"]["n_reference"] == 12
    assert model["sha256"] == sha256_file(trained["folder"] / "model.safetensors") and model["n_labels"] == 4
    assert model["validation_top1"] == trained["classifier"].record["validation"]["top1"]
    assert model["folder"] == str(trained["folder"])
    assert "not comparable" in report["settings"]["inhouse"]["note"]
    md = (out / "report.md").read_text()
    assert "## In-house classifier" in md and "not comparable to published numbers" in md
    assert "its own validation top-1" in md and "prompt separation" in md
    assert re.search(r"\| tone \| \d / 3 \| [01]\.\d{3} \|", md)
    assert "Top-1 (in-house) ↑" in md and "1 generated clips whose prompt maps to no classifier label: violin" in md
    html = (out / "report.html").read_text()
    assert "In-house classifier" in html and "correct / total" in html
    assert "no classifier label" in capsys.readouterr().err


def test_eval_without_reference_or_classifier(trained, tmp_path, capsys):
    gen = tmp_path / "gen"
    for seed in range(2):
        for label in ("tone", "noise"):
            write_wav(gen / f"{label}{seed}.wav", synth(label, 1, seed))
            (gen / f"{label}{seed}.json").write_text(json.dumps({"prompt": label, "seed": seed}))
    out = tmp_path / "report"
    assert run_cli(["eval", "--generated", gen, "--metrics", "top1,prompt_sep", "--classifier", trained["folder"],
                    "--out", out, "--no-cache"]) == 0
    metrics = json.loads((out / "report.json").read_text())["runs"][0]["metrics"]
    assert metrics["fd_inhouse"] == {"value": None, "error": "needs --reference"}  # added by --classifier
    assert metrics["top1"]["n_clips"] == 4 and metrics["prompt_sep"]["n_pairs_same_seed"] == 2
    assert run_cli(["eval", "--generated", gen, "--metrics", "top1", "--no-cache"]) == 2
    assert "--classifier is needed for top1" in capsys.readouterr().err
    assert run_cli(["eval", "--generated", gen, "--metrics", "inhouse", "--classifier", tmp_path / "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "config.json: not found" in err


def test_every_source_trains_when_a_test_manifest_measures_it(trained, tmp_path):
    """--val-fraction 0 with a test manifest: all sources train; the recorded top-1 is on the test
    clips (here other recordings of the same labels), measured once at the end."""
    test_root = tmp_path / "other"
    lines = []
    for label in CAPTIONS:
        for k in range(2):
            name = f"{label}_test{k}"
            write_wav(test_root / "audio" / f"{name}.wav", synth(label, 4 + k, 7))
            lines.append({"audio_id": name, "audio": f"audio/{name}.wav", "label": label, "source": name,
                          "split": "train"})
    (test_root / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    classifier = train_classifier(trained["manifest"], tmp_path / "all", split="heldout", epochs=4, batch_size=8,
                                  lr=3e-3, val_fraction=0.0, test_manifest=test_root / "test.jsonl",
                                  test_split="train", seed=0, arch=TINY, progress=False)
    assert classifier.record["training"]["n_clips"] == 48 and classifier.record["training"]["n_sources"] == 16
    validation = classifier.record["validation"]
    assert validation["n_clips"] == 8 and validation["split"].startswith("test manifest")
    assert 0.0 <= validation["top1"] <= 1.0 and "val_top1" not in classifier.record["training"]["history"][-1]
    with pytest.raises(DashflowError, match="validation fraction must be positive"):
        train_classifier(trained["manifest"], tmp_path / "none", val_fraction=0.0, arch=TINY, progress=False)

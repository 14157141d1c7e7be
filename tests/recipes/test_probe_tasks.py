"""recipes/probe_tasks/build.py: splits by source, balanced classes, the manifest and tasks.json contract.

Stand-ins replace the voices and the MIDI renderer; one test runs the real TTS where it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dashflow.manifests import read_manifest, write_manifest

SR = 16000
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "probe_tasks" / "build.py"
KEYS = {"audio_id", "audio", "label", "source", "split", "duration"}
SMALL = {"train": 12, "val": 6, "test": 8}


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_tasks_build", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def fake_synth(engine: str, voice: str, text: str, path: Path, rate: float = 1.0) -> float:
    """A voice-dependent tone, 0.08 s per character at rate 1, in place of flite / espeak-ng."""
    freq = 100 + sum(map(ord, voice)) % 300
    sf.write(str(path), tone(freq, 0.08 * len(text) / rate), SR)
    return 0.0


def check_manifest(out: Path, name: str, clips: dict[str, int]) -> list[dict]:
    """The contract: keys, relative audio that resolves, splits, durations, balance, disjoint sources."""
    lines = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
    assert all(set(r) == KEYS and not Path(r["audio"]).is_absolute() for r in lines)
    records = read_manifest(out / f"{name}.jsonl")
    labels = {r["label"] for r in records}
    for record in records:
        assert Path(record["audio"]).is_file() and record["split"] in ("train", "val", "test")
        assert 1.0 <= record["duration"] <= 3.0
        assert record["duration"] == pytest.approx(sf.info(record["audio"]).duration, abs=1e-3)
    for split, wanted in clips.items():
        counts = {label: sum(r["split"] == split and r["label"] == label for r in records) for label in labels}
        assert set(counts.values()) == {-(-wanted // len(labels))}  # every class the same, the minimum reached
    sides = {}
    for record in records:
        sides.setdefault(record["source"], set()).add(record["split"])
    assert all(len(found) == 1 for found in sides.values())
    return records


def test_a_task_is_written_balanced_by_source_and_in_the_contract(probe, tmp_path):
    sources = {f"class{c}": [f"c{c}_rec{i}" for i in range(4)] for c in range(5)}
    splits = probe.split_three_ways([(lab, s) for lab, ids in sources.items() for s in ids], seed=0)

    def make(label, source, use, rng):
        return probe.loud_crop(tone(200 + 100 * int(label[-1]), 4.0), rng)

    task = probe.Task("sound_events", sources, splits, make)
    records = probe.write_task(task, tmp_path, np.random.default_rng(0), SMALL)
    check_manifest(tmp_path, "sound_events", SMALL)
    card = probe.task_card("sound_events", records)
    assert set(card) == {"measures", "cannot_measure", "classes", "clips", "split_by", "chance"}
    assert card["classes"] == 5 and card["chance"] == pytest.approx(0.2)
    assert card["clips"] == {"train": 15, "val": 10, "test": 10}
    again = probe.write_task(task, tmp_path / "again", np.random.default_rng(0), SMALL)
    assert [r["duration"] for r in again] == [r["duration"] for r in records]  # deterministic given the seed
    assert probe.crossing_sources([*records, {**records[0], "split": "test" if records[0]["split"] != "test"
                                              else "train"}]) == [records[0]["source"]]


def test_sound_events_recuts_the_demo_heldout_and_drops_thin_classes(probe, tmp_path):
    demo, records = tmp_path / "demo", []
    (demo / "audio").mkdir(parents=True)
    for label, n, freq in (("dog", 4, 500.0), ("speech", 3, 200.0), ("fire", 2, 900.0), ("piano", 5, 300.0)):
        for i in range(n):
            wav = np.concatenate([tone(freq, 0.5), np.zeros(SR // 2, np.float32)] * 4)  # 4 s, half silent
            sf.write(str(demo / "audio" / f"{label}{i}.wav"), wav, SR)
            records.append({"audio_id": f"{label}{i}", "audio": str(demo / "audio" / f"{label}{i}.wav"),
                            "label": label, "source": f"src_{label}{i}", "split": "heldout"})
    write_manifest(records, demo / "heldout.jsonl")
    task = probe.sound_events(demo, seed=0)
    assert set(task.sources) == {"dog", "speech"}  # piano is music, fire has 2 held-out sources
    assert len(task.dropped) == 1 and task.dropped[0].startswith("fire (2")
    written = probe.write_task(task, tmp_path / "out", np.random.default_rng(0), SMALL)
    check_manifest(tmp_path / "out", "sound_events", SMALL)
    for record in written:
        wav, _ = sf.read(record["audio"])
        assert np.sqrt(np.mean(wav ** 2)) > probe.FLOOR_RMS


def test_voice_tasks_split_by_voice_or_sentence(probe, tmp_path):
    speak = probe.Speaker(tmp_path / "cache", fake_synth)
    (tmp_path / "cache").mkdir()
    sentences = [f"sentence number {i} is read aloud here" for i in range(12)]
    clips = {"train": 24, "val": 12, "test": 24}
    for task in (probe.keywords(speak, 0), probe.speaker_gender(speak, sentences, 0),
                 probe.speaker_id(speak, sentences[:10], 0)):
        records = probe.write_task(task, tmp_path, np.random.default_rng(1), clips)
        check_manifest(tmp_path, task.name, clips)
        by_split = {s: {r["source"] for r in records if r["split"] == s} for s in ("train", "val", "test")}
        if task.name == "speaker_id":  # the label is the voice: every voice in every split, sentences apart
            assert all({r["label"] for r in records if r["split"] == s} == set(probe.SPEAKER_IDS) for s in by_split)
            assert all(s.startswith("sentence_") for s in by_split["test"])
        else:
            assert by_split["test"] <= set(probe.VOICES) and not by_split["test"] & by_split["train"]
    assert len(probe.WORDS) >= 10 and len(probe.SPEAKER_IDS) >= 8
    genders = {g for _, _, g in probe.VOICES.values()}
    assert genders == {"female", "male"}
    keyword_clips = [r["duration"] for r in read_manifest(tmp_path / "keywords.jsonl")]
    assert max(keyword_clips) <= 1.5 + 1e-3


def test_music_tasks_label_songs_by_groove_or_program_family(probe, tmp_path, monkeypatch):
    songs = []

    def fake_render(song, work, soundfont):
        songs.append(song)
        assert soundfont == probe.SOUNDFONT and "FluidR3" in soundfont.name  # not the demo's TimGM6mb
        return tone(220.0 + len(songs), 20.0)

    monkeypatch.setattr(probe, "render_song", fake_render)
    for name, table, word in (("music_style", probe.STYLES, "Groove"), ("instrument", probe.FAMILIES, "Voice")):
        songs.clear()
        task = probe.music(name, 3, 0, tmp_path)
        assert len(table) >= 5 and len(songs) == 3 * len(table) and len(set(songs)) == len(songs)
        assert all(word in song and song.count("\n") >= 15 for song in songs)  # 12 bars and the part
        probe.write_task(task, tmp_path, np.random.default_rng(2), SMALL)
        check_manifest(tmp_path, name, SMALL)


@pytest.mark.skipif(not (shutil.which("flite") and shutil.which("espeak-ng")),
                    reason="needs flite and espeak-ng: real voices are the point here (the logic is tested above "
                           "with a stand-in)")
def test_a_real_keywords_build_writes_tasks_json(probe, tmp_path):
    result = probe.build(tmp_path, seed=0, tasks=("keywords",), clips={"train": 12, "val": 12, "test": 12})
    check_manifest(tmp_path, "keywords", {"train": 12, "val": 12, "test": 12})
    cards = json.loads((tmp_path / "tasks.json").read_text())
    assert cards == result["tasks"] and cards["keywords"]["classes"] == len(probe.WORDS)
    assert json.loads((tmp_path / "summary.json").read_text())["tasks"]["keywords"]["dropped"] == []

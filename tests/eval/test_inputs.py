"""Folder scanning, basename pairing, captions and generation sidecars."""

from __future__ import annotations

import json

import pytest
from dashflow.eval.inputs import (
    pair,
    read_captions,
    read_sidecars,
    run_settings,
    scan_folder,
    sidecar_captions,
)

from dashflow.errors import DashflowError
from tests.conftest import tone, write_wav


def test_scan_and_pair_by_basename(tmp_path):
    for name in ("a", "b", "c"):
        write_wav(tmp_path / "gen" / f"{name}.wav", tone(440, 0.1))
    for name in ("b", "c", "d"):
        write_wav(tmp_path / "ref" / "sub" / f"{name}.wav", tone(440, 0.1))
    gen, ref = scan_folder(tmp_path / "gen"), scan_folder(tmp_path / "ref")
    assert list(gen.clips) == ["a", "b", "c"]
    pairing = pair(gen, ref)
    assert (pairing.paired, pairing.only_generated, pairing.only_reference) == (["b", "c"], ["a"], ["d"])


def test_scan_rejects_ambiguous_and_empty_folders(tmp_path):
    write_wav(tmp_path / "x" / "a.wav", tone(440, 0.1))
    write_wav(tmp_path / "x" / "deeper" / "a.wav", tone(440, 0.1))
    with pytest.raises(DashflowError, match="same basename"):
        scan_folder(tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DashflowError, match="no audio files"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(DashflowError, match="not a folder"):
        scan_folder(tmp_path / "missing")


def test_captions_jsonl(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join([
        json.dumps({"audio_id": "a", "caption": "first"}),
        json.dumps({"id": "b", "text": "bee"}),
        json.dumps({"audio": "/data/clips/c.wav", "caption": "see"}),
        "",
        json.dumps({"audio_id": "a", "caption": "second"}),  # last one wins, as upstream
    ]))
    assert read_captions(path) == {"a": "second", "b": "bee", "c": "see"}
    path.write_text('{"audio_id": "a", "caption": "x"}\n{not json}\n')
    with pytest.raises(DashflowError, match=r"captions.jsonl:2: not JSON"):
        read_captions(path)
    path.write_text('{"audio_id": "a"}\n')
    with pytest.raises(DashflowError, match=":1: needs an id"):
        read_captions(path)


def _gen_with_sidecars(tmp_path, records):
    for i, record in enumerate(records):
        write_wav(tmp_path / f"c{i}.wav", tone(440, 0.1))
        if record is not None:
            (tmp_path / f"c{i}.json").write_text(json.dumps(record))
    return scan_folder(tmp_path)


def test_run_settings_from_sidecars_and_flags(tmp_path):
    folder = _gen_with_sidecars(tmp_path, [
        {"steps": 25, "cfg": 5.0, "seed": 10, "checkpoint": "out/checkpoint-12000", "prompt": "a dog"},
        {"steps": 25, "cfg": 5.0, "seed": 2, "checkpoint": "out/checkpoint-12000", "prompt": "rain"},
        None])
    sidecars = read_sidecars(folder)
    assert set(sidecars) == {"c0", "c1"}
    assert sidecar_captions(sidecars) == {"c0": "a dog", "c1": "rain"}
    settings = run_settings(sidecars, {})
    assert settings == {"steps": 25, "cfg": 5.0, "seed": {"per_clip": [2, 10]},
                        "checkpoint": "out/checkpoint-12000", "train_step": 12000}
    assert run_settings({}, {"steps": 50, "cfg": 3.0}) == {"steps": 50, "cfg": 3.0}
    assert run_settings(sidecars, {"steps": 25})["steps"] == 25  # agreeing flag is fine
    with pytest.raises(DashflowError, match="--steps 50 contradicts the sidecars"):
        run_settings(sidecars, {"steps": 50})


def test_bad_sidecar_is_named(tmp_path):
    folder = _gen_with_sidecars(tmp_path, [None])
    (tmp_path / "c0.json").write_text("{broken")
    with pytest.raises(DashflowError, match="c0.json: bad sidecar JSON"):
        read_sidecars(folder)

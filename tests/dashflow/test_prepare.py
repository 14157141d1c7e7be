"""`dashflow prepare`: every corpus format on tiny fixtures, durations, bad files, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dashflow.cli import main as cli
from dashflow.data import read_manifest
from dashflow.errors import DashflowError
from dashflow.prepare import (
    caption_from_name,
    prepare_manifest,
    records_from_audiocaps,
    records_from_folder,
    records_from_musiccaps,
    records_from_voicebank,
)
from tests.conftest import noise, tone, write_wav


def wav(path: Path, seconds: float = 0.5) -> Path:
    return write_wav(path, tone(440, seconds))


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def by_id(manifest: Path) -> dict[str, dict]:
    return {r["audio_id"]: r for r in read_manifest(manifest)}


def test_caption_from_name():
    assert caption_from_name("DogBark_02.wav") == "dog bark"
    assert caption_from_name("sub/rain-on-roof.flac") == "rain on roof"


def test_folder_with_file_name_captions_and_durations(tmp_path):
    wav(tmp_path / "clips" / "DogBark_1.wav", 0.5)
    wav(tmp_path / "clips" / "birds" / "bird_song.wav", 1.25)
    out = tmp_path / "m.jsonl"
    assert cli(["prepare", "folder", str(tmp_path / "clips"), "-o", str(out)]) == 0
    records = by_id(out)
    assert records["DogBark_1"]["caption"] == "dog bark"
    assert records["birds/bird_song"]["duration"] == 1.25
    assert records["birds/bird_song"]["audio"] == str(tmp_path / "clips" / "birds" / "bird_song.wav")
    assert json.loads(out.read_text().splitlines()[0])["audio"] == "clips/DogBark_1.wav"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_folder_with_a_captions_file(tmp_path, kind):
    wav(tmp_path / "a.wav")
    wav(tmp_path / "b.wav")
    rows = [["a.wav", "a cat meows"], ["b", "rain, heavy"]]
    captions = tmp_path / f"captions.{kind}"
    if kind == "jsonl":
        captions.write_text("".join(json.dumps({"name": n, "caption": c}) + "\n" for n, c in rows))
    else:
        write_csv(captions, ["name", "caption"], rows, "\t" if kind == "tsv" else ",")
    count = prepare_manifest(records_from_folder(tmp_path, captions), tmp_path / "m.jsonl")
    records = by_id(tmp_path / "m.jsonl")
    assert count == 2 and records["a"]["caption"] == "a cat meows"
    assert records["b"]["caption"] == "rain, heavy"


def test_captions_file_needs_its_columns(tmp_path):
    wav(tmp_path / "a.wav")
    write_csv(tmp_path / "c.csv", ["file", "text"], [["a.wav", "x"]])
    with pytest.raises(DashflowError, match=r"c.csv: missing column\(s\) name, caption"):
        list(records_from_folder(tmp_path, tmp_path / "c.csv"))


def test_unreadable_files_are_reported_and_left_out(tmp_path):
    """Run as a user would: each bad file is one stderr line, then the summary."""
    wav(tmp_path / "good.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    out = tmp_path / "m.jsonl"
    done = subprocess.run([sys.executable, "-m", "dashflow.cli", "prepare", "folder",
                           str(tmp_path), "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and list(by_id(out)) == ["good"]
    err = done.stderr.splitlines()
    assert len(err) == 2
    assert err[0].startswith("skipping bad: ") and "bad.wav" in err[0]
    assert err[1] == f"wrote 1 clips to {out}"


def test_audiocaps_csv(tmp_path, caplog):
    audio = tmp_path / "audio"
    wav(audio / "Yabc123.wav")
    wav(audio / "def456_30.flac")
    wav(audio / "777.wav")
    table = write_csv(tmp_path / "train.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
                      [[1, "abc123", 0, "a dog barks"], [2, "def456", 30, "wind blows"],
                       [777, "zzz", 10, "named by id"], [3, "missing", 0, "not downloaded"]])
    assert prepare_manifest(records_from_audiocaps(table, audio), tmp_path / "m.jsonl") == 3
    records = by_id(tmp_path / "m.jsonl")
    assert records["1"]["caption"] == "a dog barks" and records["1"]["audio"].endswith("Yabc123.wav")
    assert records["2"]["audio"].endswith("def456_30.flac") and records["777"]["duration"] == 0.5
    assert any("skipping audiocap 3" in r.getMessage() for r in caplog.records)


def test_audiocaps_needs_its_columns(tmp_path):
    (tmp_path / "audio").mkdir()
    table = write_csv(tmp_path / "t.csv", ["youtube_id", "caption"], [["a", "b"]])
    with pytest.raises(DashflowError, match="audiocap_id, start_time"):
        list(records_from_audiocaps(table, tmp_path / "audio"))


def test_wavcaps_json(tmp_path):
    audio = tmp_path / "audio"
    wav(audio / "Yb0RFKhbpFJA.flac")
    wav(audio / "180913.wav")
    wav(audio / "sub" / "given.wav")
    data = {"data": [{"id": "Yb0RFKhbpFJA.wav", "caption": "a siren wails"},
                     {"id": "180913", "caption": "birds chirp", "duration": 3.0},
                     {"id": "x9", "caption": "path given", "audio": "sub/given.wav"},
                     {"id": "lost", "caption": "no file"}]}
    (tmp_path / "wavcaps.json").write_text(json.dumps(data))
    out = tmp_path / "m.jsonl"
    assert cli(["prepare", "wavcaps", str(tmp_path / "wavcaps.json"), "--audio-dir", str(audio),
                "-o", str(out)]) == 0
    records = by_id(out)
    assert set(records) == {"Yb0RFKhbpFJA.wav", "180913", "x9"}
    assert records["180913"]["caption"] == "birds chirp" and records["180913"]["duration"] == 0.5
    assert records["x9"]["audio"] == str(audio / "sub" / "given.wav")


def test_wavcaps_rejects_other_json(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "w.json").write_text(json.dumps([{"id": 1}]))
    assert cli(["prepare", "wavcaps", str(tmp_path / "w.json"), "--audio-dir",
                str(tmp_path / "audio"), "-o", str(tmp_path / "m.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a WavCaps JSON" in err and "\n" not in err


def test_musiccaps_and_lp_musiccaps_csv(tmp_path):
    audio = tmp_path / "audio"
    wav(audio / "-0Gj8-vB1q4.wav")
    wav(audio / "Yxyz_30.wav")
    header = ["ytid", "start_s", "end_s", "caption", "caption_writing"]
    table = write_csv(tmp_path / "musiccaps.csv", header, [
        ["-0Gj8-vB1q4", 30, 40, "a calm piano piece", "gentle solo piano"],
        ["xyz", 30, 40, "loud rock", "distorted guitars"],
        ["-0Gj8-vB1q4", 30, 40, "duplicate row", "dup"]])
    assert prepare_manifest(records_from_musiccaps(table, audio), tmp_path / "m.jsonl") == 2
    assert by_id(tmp_path / "m.jsonl")["-0Gj8-vB1q4"]["caption"] == "a calm piano piece"
    out = tmp_path / "lp.jsonl"
    assert cli(["prepare", "musiccaps", str(table), "--audio-dir", str(audio),
                "--caption-column", "caption_writing", "-o", str(out)]) == 0
    assert by_id(out)["xyz"]["caption"] == "distorted guitars"


def test_voicebank_pairs_clean_and_noisy(tmp_path, caplog):
    for split in ("trainset_28spk_wav", "testset_wav"):
        for name in ("p226_001", "p226_002"):
            write_wav(tmp_path / f"clean_{split}" / f"{name}.wav", tone(300, 0.5))
            write_wav(tmp_path / f"noisy_{split}" / f"{name}.wav", tone(300, 0.5) + noise(0.5))
    write_wav(tmp_path / "clean_testset_wav" / "p232_009.wav", tone(300, 0.5))  # no noisy twin
    out = tmp_path / "vb.jsonl"
    assert cli(["prepare", "voicebank", str(tmp_path), "-o", str(out)]) == 0
    records = read_manifest(out)
    assert len(records) == 4 and {r["task"] for r in records} == {"speech_enhancement"}
    first = records[0]
    assert "clean_testset_wav" in first["audio"] and "noisy_testset_wav" in first["noisy"]
    assert Path(first["audio"]).name == Path(first["noisy"]).name
    assert first["audio_id"] == "testset_wav/p226_001"
    assert any("skipping testset_wav/p232_009" in r.getMessage() for r in caplog.records)


def test_voicebank_layout_errors(tmp_path):
    with pytest.raises(DashflowError, match="no clean_\\* folders"):
        list(records_from_voicebank(tmp_path))
    (tmp_path / "clean_testset_wav").mkdir()
    with pytest.raises(DashflowError, match="noisy_testset_wav: missing the noisy folder"):
        list(records_from_voicebank(tmp_path))


def test_duplicate_ids_and_empty_results_are_errors(tmp_path):
    wav(tmp_path / "a.wav")
    with pytest.raises(DashflowError, match="duplicate audio_id 'a'"):
        prepare_manifest([{"audio_id": "a", "audio": tmp_path / "a.wav"}] * 2, tmp_path / "m.jsonl")
    with pytest.raises(DashflowError, match="no readable audio"):
        prepare_manifest([], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()

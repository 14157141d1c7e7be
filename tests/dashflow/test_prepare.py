"""`dashflow prepare`: every corpus format on tiny fixtures, durations, bad files, the CLI."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dashflow.cli import main as cli
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest
from dashflow.prepare import (
    caption_from_name,
    prepare_manifest,
    records_from_audiocaps,
    records_from_dns,
    records_from_folder,
    records_from_musiccaps,
    records_from_voicebank,
    split_disjoint,
)
from tests.conftest import SENTENCES, noise, tone, tts, write_wav


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


def test_folder_with_one_caption_for_all(tmp_path):
    """``--caption``: every file the table does not name gets the one caption (fine-tuning data)."""
    wav(tmp_path / "rooster_1.wav")
    wav(tmp_path / "rooster_2.wav")
    write_csv(tmp_path / "c.csv", ["name", "caption"], [["rooster_2", "a rooster crows twice"]])
    records = {r["audio_id"]: r["caption"] for r in records_from_folder(tmp_path, tmp_path / "c.csv", "a rooster crows")}
    assert records == {"rooster_1": "a rooster crows", "rooster_2": "a rooster crows twice"}


def test_captions_file_needs_its_columns(tmp_path):
    wav(tmp_path / "a.wav")
    write_csv(tmp_path / "c.csv", ["file", "text"], [["a.wav", "x"]])
    with pytest.raises(DashflowError, match=r"c.csv: missing column\(s\) name, caption"):
        list(records_from_folder(tmp_path, tmp_path / "c.csv"))


def test_unreadable_files_are_reported_and_left_out(tmp_path):
    """Run as a user would: each bad file is one warning line, then one error line counts them."""
    wav(tmp_path / "good.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    out = tmp_path / "m.jsonl"
    done = subprocess.run([sys.executable, "-m", "dashflow.cli", "prepare", "folder",
                           str(tmp_path), "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and list(by_id(out)) == ["good"]
    err = done.stderr.splitlines()
    assert len(err) == 2
    assert err[0].startswith("warning: skipped bad: cannot read audio (") and "bad.wav" in err[0]
    assert err[1] == f"error: 1 of 2 files failed (see warnings above); the other 1 are in {out}"


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
    assert first["audio_id"] == "testset_wav/p226_001" and first["speaker"] == "p226"
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


# ----------------------------------------------------------------------------- SE corpora

def test_dns_clean_and_noise_folders(tmp_path):
    wav(tmp_path / "clean_fullband" / "read_speech" / "book_00000_chp_0009_reader_06709_0.wav")
    wav(tmp_path / "clean_fullband" / "read_speech" / "book_00012_chp_0001_reader_01326_3.wav")
    wav(tmp_path / "clean_fullband" / "emotional_speech" / "angry_01.wav")
    write_wav(tmp_path / "noise_fullband" / "Door_Freesound_1.wav", noise(1.0))
    out = tmp_path / "manifests"
    assert cli(["prepare", "dns", str(tmp_path), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clean.jsonl", "noise.jsonl"]
    clean = by_id(out / "clean.jsonl")
    assert clean["read_speech/book_00000_chp_0009_reader_06709_0"]["speaker"] == "reader_06709"
    assert clean["read_speech/book_00012_chp_0001_reader_01326_3"]["speaker"] == "reader_01326"
    assert clean["emotional_speech/angry_01"]["speaker"] == "emotional_speech"
    assert by_id(out / "noise.jsonl")["Door_Freesound_1"]["duration"] == 1.0


def test_dns_test_set_pairs_by_fileid(tmp_path, caplog):
    for n in (0, 1, 12):
        wav(tmp_path / "clean" / f"clean_fileid_{n}.wav")
        write_wav(tmp_path / "noisy" / f"book_0{n}_snr{n}_tl-26_fileid_{n}.wav", noise(0.5))
    write_wav(tmp_path / "noisy" / "orphan_fileid_99.wav", noise(0.5))
    found = records_from_dns(tmp_path)
    assert list(found) == ["paired"] and len(found["paired"]) == 3
    pairs = {r["audio_id"]: r for r in found["paired"]}
    assert pairs["fileid_12"]["audio"].name == "clean_fileid_12.wav"
    assert pairs["fileid_12"]["noisy"].name == "book_012_snr12_tl-26_fileid_12.wav"
    assert any("skipping orphan_fileid_99" in r.getMessage() for r in caplog.records)


def test_dns_layout_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    wav(tmp_path / "clean" / "no_id_here.wav")
    for root in (tmp_path, tmp_path / "nothing"):
        assert cli(["prepare", "dns", str(root), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {root}: ") and "fileid_<N>" in err and err.count("\n") == 1
    (tmp_path / "noise").mkdir()
    with pytest.raises(DashflowError, match="noise: no audio files"):
        records_from_dns(tmp_path)


def se_records(speakers: dict[str, int]) -> list[dict]:
    return [{"audio_id": f"{s}_{i}", "audio": f"/x/{s}_{i}.wav", "speaker": s}
            for s, n in speakers.items() for i in range(n)]


def test_split_is_speaker_and_noise_disjoint():
    clean = se_records({"a": 10, "b": 10, "c": 30, "d": 10, "e": 10, "f": 10})
    noises = [{"audio_id": f"n{i}", "audio": f"/x/n{i}.wav"} for i in range(10)]
    for seed in range(5):
        parts = split_disjoint(clean, noises, test_fraction=0.25, seed=seed)
        train = {r["speaker"] for r in parts["train_clean"]}
        test = {r["speaker"] for r in parts["test_clean"]}
        assert train and test and not train & test and train | test == set("abcdef")
        assert len(parts["train_clean"]) + len(parts["test_clean"]) == len(clean)
        assert abs(len(parts["test_clean"]) - 20) <= 10  # whole speakers near a quarter
        assert len(parts["test_noise"]) == 2 and len(parts["train_noise"]) == 8
        ids = [{r["audio_id"] for r in parts[f"{side}_noise"]} for side in ("train", "test")]
        assert not ids[0] & ids[1]
    assert split_disjoint(clean, noises, 0.25, seed=1) == split_disjoint(clean, noises, 0.25, seed=1)
    chosen = split_disjoint(clean, noises, 0.25, test_speakers=["c", "f"])
    assert {r["speaker"] for r in chosen["test_clean"]} == {"c", "f"}


@pytest.mark.parametrize("clean, noises, kwargs, message", [
    (se_records({"a": 3}), 3, {}, "at least 2 speakers, found 1"),
    (se_records({"a": 3, "b": 2}) + [{"audio_id": "x", "audio": "/x.wav"}], 3, {}, "'x' has no 'speaker'"),
    (se_records({"a": 3, "b": 2}), 1, {}, "at least 2 noise files"),
    (se_records({"a": 3, "b": 2}), 3, {"test_fraction": 1.0}, "strictly between 0 and 1"),
    (se_records({"a": 3, "b": 2}), 3, {"test_speakers": ["z"]}, "test speaker\\(s\\) z"),
    (se_records({"a": 3, "b": 2}), 3, {"test_speakers": ["a", "b"]}, "every speaker"),
])
def test_split_errors(clean, noises, kwargs, message):
    noise_records = [{"audio_id": f"n{i}", "audio": f"/x/n{i}.wav"} for i in range(noises)]
    with pytest.raises(DashflowError, match=message):
        split_disjoint(clean, noise_records, **kwargs)


@pytest.fixture()
def se_manifests(tmp_path) -> Path:
    """clean.jsonl: 2 flite speakers x 2 sentences; noise.jsonl: 3 noise files."""
    lines = []
    for i, (voice, text) in enumerate(zip(("slt", "slt", "rms", "rms"), SENTENCES)):
        path = tts(text, tmp_path / "speech" / f"{voice}_{i}.wav", voice=voice)
        assert path is not None, "flite or espeak-ng is needed"
        lines.append({"audio_id": f"{voice}/{i}", "audio": f"speech/{voice}_{i}.wav", "speaker": voice})
    (tmp_path / "clean.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for i in range(3):
        write_wav(tmp_path / "noise" / f"n{i}.wav", noise(1.0 + i, seed=i, amp=0.05 * (i + 1)))
    (tmp_path / "noise.jsonl").write_text("".join(
        json.dumps({"audio_id": f"n{i}", "audio": f"noise/n{i}.wav"}) + "\n" for i in range(3)))
    return tmp_path


def test_split_command_writes_four_manifests(se_manifests, capsys):
    out = se_manifests / "split"
    assert cli(["prepare", "split", "--clean", str(se_manifests / "clean.jsonl"), "--noise",
                str(se_manifests / "noise.jsonl"), "--test-fraction", "0.5", "--seed", "3",
                "-o", str(out)]) == 0
    parts = {name: read_manifest(out / f"{name}.jsonl")
             for name in ("train_clean", "test_clean", "train_noise", "test_noise")}
    assert {len(parts["train_clean"]), len(parts["test_clean"])} == {2}
    assert len(parts["train_noise"]) + len(parts["test_noise"]) == 3
    assert Path(parts["test_clean"][0]["audio"]).parent == se_manifests / "speech"
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("train: 2 clips of 1 speaker(s)") and err[1].startswith("test: 2 clips")


def test_mix_command_writes_a_fixed_paired_test_set(se_manifests, capsys):
    args = ["prepare", "mix", "--clean", str(se_manifests / "clean.jsonl"), "--noise",
            str(se_manifests / "noise.jsonl"), "--snr", "0", "10", "--seed", "2"]
    out = se_manifests / "test"
    assert cli([*args, "-o", str(out)]) == 0
    assert capsys.readouterr().err.strip().endswith(f"wrote 4 noisy/clean pairs to {out / 'manifest.jsonl'}")
    records = read_manifest(out / "manifest.jsonl")
    assert [r["audio_id"] for r in records] == ["slt/0", "slt/1", "rms/2", "rms/3"]
    first = records[0]
    assert first["audio"] == str(out / "clean" / "slt_0.wav")
    assert first["noisy"] == str(out / "noisy" / "slt_0.wav")
    assert first["speaker"] == "slt" and first["noise"] in {"n0", "n1", "n2"} and "rt60" not in first
    for record in records:
        clean, sr = sf.read(record["audio"])
        noisy, _ = sf.read(record["noisy"])
        original, _ = sf.read(se_manifests / "speech" / Path(record["audio"]).name)
        assert sr == 16000 and clean.shape == noisy.shape == original.shape
        assert abs(clean.size / sr - record["duration"]) < 1e-3 and 0 <= record["snr_db"] <= 10
        measured = 10 * math.log10(np.square(clean).mean() / np.square(noisy - clean).mean())
        assert abs(measured - record["snr_db"]) < 0.05  # 16-bit files
    again = se_manifests / "again"
    assert cli([*args, "-o", str(again)]) == 0
    assert (again / "noisy" / "rms_3.wav").read_bytes() == (out / "noisy" / "rms_3.wav").read_bytes()


def test_mix_command_rejects_bad_settings_in_one_line(se_manifests, capsys):
    assert cli(["prepare", "mix", "--clean", str(se_manifests / "clean.jsonl"), "--noise",
                str(se_manifests / "noise.jsonl"), "--snr", "10", "0", "-o",
                str(se_manifests / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mixing.snr_db must be [low, high]") and err.count("\n") == 1

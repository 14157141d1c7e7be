"""Manifests, deterministic crops, resumable sampling, WebDataset shards, bad-file handling."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from dashflow.audio import load_audio
from dashflow.data import (
    AudioClipDataset,
    ResumableBatchSampler,
    ShardClipDataset,
    build_clip_loader,
    collate_clips,
    crop_offset,
    expand_shards,
    write_shards,
)
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest
from tests.conftest import noise, tone, write_wav

SR = 16000


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """Six clips of different lengths (0.3 to 2.3 s) with captions; one noisy pair."""
    for i in range(6):
        write_wav(tmp_path / "wavs" / f"c{i}.wav", tone(200 + 100 * i, 0.3 + 0.4 * i)
                  + noise(0.3 + 0.4 * i, seed=i, amp=0.01))
    write_wav(tmp_path / "noisy" / "c5.wav", 0.5 * load_audio(tmp_path / "wavs" / "c5.wav").numpy())
    lines = [{"audio_id": f"c{i}", "audio": f"wavs/c{i}.wav", "caption": f"tone {i}"}
             for i in range(6)]
    lines[5]["noisy"] = "noisy/c5.wav"
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    return tmp_path


def test_read_manifest_resolves_paths_against_its_folder(corpus):
    records = read_manifest(corpus / "m.jsonl")
    assert [r["audio_id"] for r in records] == [f"c{i}" for i in range(6)]
    assert records[0]["audio"] == str(corpus / "wavs" / "c0.wav")
    assert records[5]["noisy"] == str(corpus / "noisy" / "c5.wav")
    assert records[2]["caption"] == "tone 2"


@pytest.mark.parametrize("line, message", [
    ("{not json", "m.jsonl:2: not valid JSON"),
    ('["a", "b"]', "m.jsonl:2: expected a JSON object"),
    ('{"audio_id": "x"}', "m.jsonl:2: missing required key(s) audio"),
    ('{"audio_id": "a", "audio": "b.wav"}', "m.jsonl:2: duplicate audio_id 'a'"),
])
def test_read_manifest_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_id": "a", "audio": "a.wav"}\n' + line + "\n")
    with pytest.raises(DashflowError, match="^" + str(tmp_path).replace("\\", "\\\\") + "/"
                       + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_manifest(path)


def test_read_manifest_missing_or_empty(tmp_path):
    with pytest.raises(DashflowError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DashflowError, match="manifest is empty"):
        read_manifest(tmp_path / "e.jsonl")


def test_write_manifest_round_trip_stores_relative_paths(corpus, tmp_path):
    records = read_manifest(corpus / "m.jsonl")
    out = write_manifest(records, corpus / "copy.jsonl")
    first = json.loads(out.read_text().splitlines()[0])
    assert first["audio"] == "wavs/c0.wav"
    assert read_manifest(out) == records
    elsewhere = write_manifest(records, tmp_path / "other" / "m.jsonl")
    assert json.loads(elsewhere.read_text().splitlines()[0])["audio"] == str(corpus / "wavs" / "c0.wav")
    assert not list((tmp_path / "other").glob(".*tmp"))


def test_crops_are_deterministic_windows_of_the_clip(corpus):
    records = read_manifest(corpus / "m.jsonl")
    data = AudioClipDataset(records, crop_seconds=0.5, seed=3)
    item = data[(2, 4)]
    again = AudioClipDataset(records, crop_seconds=0.5, seed=3)[(2, 4)]
    assert torch.equal(item["audio"], again["audio"])
    full = load_audio(records[4]["audio"])
    offset = crop_offset(full.numel(), 8000, seed=3, epoch=2, key=4)
    assert torch.equal(item["audio"], full[offset:offset + 8000])
    assert item["length"] == 8000 and item["caption"] == "tone 4" and item["audio_id"] == "c4"
    offsets = {crop_offset(full.numel(), 8000, seed=s, epoch=e, key=4) for s in range(3) for e in range(3)}
    assert len(offsets) > 5  # seeds and epochs move the window


def test_short_clips_are_zero_padded_with_their_length(corpus):
    item = AudioClipDataset(read_manifest(corpus / "m.jsonl"), crop_seconds=1.0)[0]  # 0.3 s clip
    assert item["audio"].shape == (SR,) and item["length"] == int(0.3 * SR)
    assert item["audio"][item["length"]:].abs().sum() == 0


def test_noisy_audio_is_cropped_at_the_same_offset(corpus):
    item = AudioClipDataset(read_manifest(corpus / "m.jsonl"), crop_seconds=0.5, seed=1)[(0, 5)]
    torch.testing.assert_close(item["noisy"], 0.5 * item["audio"], atol=1e-4, rtol=0)


def test_validation_crops_take_the_start(corpus):
    records = read_manifest(corpus / "m.jsonl")
    item = AudioClipDataset(records, crop_seconds=0.5, random_crop=False)[(7, 3)]
    assert torch.equal(item["audio"], load_audio(records[3]["audio"])[:8000])


def test_bad_files_are_reported_by_name_and_skipped(corpus, caplog):
    (corpus / "wavs" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    records = read_manifest(corpus / "m.jsonl") + [
        {"audio_id": "broken", "audio": str(corpus / "wavs" / "broken.wav")},
        {"audio_id": "gone", "audio": str(corpus / "wavs" / "gone.wav")}]
    with caplog.at_level(logging.WARNING, logger="dashflow.data"):
        data = AudioClipDataset(records, crop_seconds=0.5)
    assert len(data) == 6
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("skipping broken: ") and "broken.wav" in lines[0]
    assert lines[1].startswith("skipping gone: ") and "gone.wav" in lines[1]
    with pytest.raises(DashflowError, match="none of the 2 manifest entries"):
        AudioClipDataset(records[-2:], crop_seconds=0.5)


def test_collate_batches_audio_lengths_and_captions(corpus):
    data = AudioClipDataset(read_manifest(corpus / "m.jsonl"), crop_seconds=0.5)
    batch = collate_clips([data[0], data[5]])
    assert batch["audio"].shape == (2, 8000) and batch["length"].tolist() == [int(0.3 * SR), 8000]
    assert batch["caption"] == ["tone 0", "tone 5"] and "noisy" not in batch
    assert collate_clips([data[5]])["noisy"].shape == (1, 8000)


def test_sampler_resumes_exactly_and_splits_ranks():
    full = ResumableBatchSampler(10, batch_size=2, seed=5)
    stream = [b for b, _ in zip(full, range(12))]  # 2.4 epochs of 5 batches
    resumed = ResumableBatchSampler(10, batch_size=2, seed=5, start_step=7)
    assert [b for b, _ in zip(resumed, range(5))] == stream[7:12]
    assert sorted(i for batch in stream[:5] for _, i in batch) == list(range(10))
    assert {e for batch in stream[5:10] for e, _ in batch} == {1}
    assert stream[:5] != [[(0, i) for _, i in b] for b in stream[5:10]]  # reshuffled per epoch
    ranks = [ResumableBatchSampler(10, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    first = [next(iter(s)) for s in ranks]
    assert not {i for _, i in first[0]} & {i for _, i in first[1]}
    with pytest.raises(DashflowError, match="cannot fill one batch"):
        ResumableBatchSampler(3, batch_size=2, world_size=2)


def test_manifest_loader_resumes_at_a_step(corpus):
    def batches(start, count):
        loader = build_clip_loader(corpus / "m.jsonl", 2, 0.25, seed=1, start_step=start)
        return [b for b, _ in zip(loader, range(count))]
    full, resumed = batches(0, 7), batches(4, 3)
    for a, b in zip(full[4:], resumed):
        assert a["audio_id"] == b["audio_id"] and torch.equal(a["audio"], b["audio"])


def test_shards_carry_the_same_records(corpus, caplog):
    records = read_manifest(corpus / "m.jsonl")
    write_manifest(records + [{"audio_id": "gone", "audio": str(corpus / "gone.wav")}],
                   corpus / "with_bad.jsonl")
    with caplog.at_level(logging.WARNING, logger="dashflow.data"):
        shards = write_shards(corpus / "with_bad.jsonl", corpus / "shards", clips_per_shard=4)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert any("skipping gone" in r.getMessage() for r in caplog.records)
    assert expand_shards(corpus / "shards") == [str(p) for p in shards]
    assert expand_shards(str(corpus / "shards" / "shard-{000000..000001}.tar")) == [str(p) for p in shards]

    stream = ShardClipDataset([str(p) for p in shards], crop_seconds=None, batch_size=1, seed=0)
    items = {item["audio_id"]: item for item, _ in zip(stream, range(6))}
    assert set(items) == {f"c{i}" for i in range(6)}
    for record in records:
        item = items[record["audio_id"]]
        reference = load_audio(record["audio"])
        assert item["caption"] == record["caption"] and item["length"] == reference.numel()
        torch.testing.assert_close(item["audio"], reference, atol=1 / 32768 + 1e-6, rtol=0)
    torch.testing.assert_close(items["c5"]["noisy"], 0.5 * items["c5"]["audio"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_loader_resumes_exactly(corpus, workers):
    manifest = write_manifest(read_manifest(corpus / "m.jsonl"), corpus / "six.jsonl")
    write_shards(manifest, corpus / "shards", clips_per_shard=1)

    def batches(start, count):
        loader = build_clip_loader(corpus / "shards", 2, 0.25, seed=2, start_step=start,
                                   num_workers=workers)
        return [b for b, _ in zip(loader, range(count))]
    full, resumed = batches(0, 8), batches(3, 5)
    assert [b["audio_id"] for b in full[3:]] == [b["audio_id"] for b in resumed]
    assert all(torch.equal(a["audio"], b["audio"]) for a, b in zip(full[3:], resumed))
    seen = [i for b in full[:3] for i in b["audio_id"]]
    assert len(seen) == 6 if workers == 0 else len(set(seen)) >= 3


def test_shards_need_enough_files_for_every_stream(corpus):
    shards = write_shards(corpus / "m.jsonl", corpus / "one", clips_per_shard=100)
    stream = ShardClipDataset([str(p) for p in shards], 0.25, batch_size=2, world_size=2)
    with pytest.raises(DashflowError, match="1 shards cannot feed 2 process"):
        next(iter(stream))
    with pytest.raises(DashflowError, match="no .tar shards"):
        expand_shards(corpus / "nothing-*.tar")


def test_loader_draws_nothing_from_the_global_rng(corpus):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(iter(build_clip_loader(corpus / "m.jsonl", 2, 0.25)))
    assert torch.equal(torch.rand(3), expected)
    assert np.isfinite(expected.numpy()).all()

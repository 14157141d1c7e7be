"""Frozen features for probes (dashflow.features) and the `dashflow probe` command."""

import json

import pytest
import torch
from dashflow.tokenizer.model import DashengTokenizer

from dashflow.cli import main
from dashflow.errors import DashflowError
from dashflow.features import (
    CodecFeatures,
    LogMelFeatures,
    cached_features,
    encode_clips,
    encoder_from_spec,
    feature_id,
)
from tests.conftest import tone, write_wav

FREQS = {"low": 200, "mid": 700, "high": 2500}


@pytest.fixture(scope="module")
def tone_task(tmp_path_factory):
    """3 tone classes, 0.4-1.0 s clips, each split its own sources; and a tiny tokenizer folder."""
    root = tmp_path_factory.mktemp("probe")
    rows = []
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        for label, freq in FREQS.items():
            for i in range(count):
                name = f"{split}_{label}_{i}"
                seconds = 0.4 + 0.1 * i
                write_wav(root / f"{name}.wav", tone(freq * (1 + 0.02 * i), seconds))
                rows.append({"audio_id": name, "audio": f"{name}.wav", "label": label, "split": split,
                             "duration": seconds})
    (root / "tones.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    DashengTokenizer.from_preset("tiny").save_pretrained(root / "tokenizer")
    return root


def records(root, split="train"):
    from dashflow.manifests import read_manifest

    return [r for r in read_manifest(root / "tones.jsonl") if r["split"] == split]


def test_codec_features_mask_each_clip_exactly(tone_task):
    encoder = encoder_from_spec(f"tok={tone_task / 'tokenizer'}@semantic").encoder
    assert isinstance(encoder, CodecFeatures) and encoder.hop_size_in_ms == 40.0
    clips = records(tone_task)
    features, mask = encode_clips(encoder, clips, batch_size=4, progress=False)
    assert mask.sum(1).tolist() == [int(r["duration"] * 25) for r in clips]
    alone, _ = encode_clips(encoder, clips[:1], batch_size=1, progress=False)
    torch.testing.assert_close(features[0, :mask[0].sum()], alone[0, :mask[0].sum()], atol=2e-3, rtol=1e-2)


def test_parts_and_labels_come_from_the_spec(tone_task):
    whole = encoder_from_spec(str(tone_task / "tokenizer"))
    part = encoder_from_spec(f"{tone_task / 'tokenizer'}@acoustic")
    assert (whole.label, part.label) == ("tokenizer", "tokenizer@acoustic")
    assert feature_id(whole.encoder).endswith("-latents") and feature_id(part.encoder).endswith("-acoustic")
    with pytest.raises(DashflowError, match="no part 'nonsense'"):
        encode_clips(encoder_from_spec(f"{tone_task / 'tokenizer'}@nonsense").encoder, records(tone_task)[:1],
                     progress=False)


def test_logmel_baseline_runs_at_the_latent_rate():
    encoder = LogMelFeatures(40.0)
    assert encoder(torch.randn(2, 16000)).shape == (2, 26, 128) and encoder.hop_size_in_ms == 40.0
    assert encoder_from_spec("logmel:20").encoder.hop_size_in_ms == 20.0


def test_an_xares_encoder_file_plugs_in_unchanged(tone_task, tmp_path):
    source = tmp_path / "my_encoder.py"
    source.write_text(
        "import torch\n\nclass TwoBandEncoder(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.sampling_rate = 16000\n"
        "        self.output_dim = 2\n        self.hop_size_in_ms = 20\n        self.scale = torch.nn.Parameter(torch.ones(2))\n"
        "    def forward(self, wav):\n        frames = wav[:, : wav.shape[1] // 320 * 320].reshape(wav.shape[0], -1, 320)\n"
        "        return torch.stack([frames.abs().mean(-1), frames.diff(dim=-1).abs().mean(-1)], -1) * self.scale\n")
    encoder = encoder_from_spec(f"xares:{source}").encoder
    features, mask = encode_clips(encoder, records(tone_task), progress=False)
    assert features.shape[-1] == 2
    assert mask.sum(1).tolist() == [int(r["duration"] * 50) for r in records(tone_task)]
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(DashflowError, match="ends in 'Encoder', found 0"):
        encoder_from_spec(f"xares:{tmp_path / 'bad.py'}")


def test_features_are_cached_by_weights_hash(tone_task, tmp_path, monkeypatch):
    encoder = encoder_from_spec(str(tone_task / "tokenizer")).encoder
    first = cached_features(encoder, records(tone_task), tmp_path, progress=False)
    monkeypatch.setattr("dashflow.features.encode_clips", lambda *a, **k: pytest.fail("re-encoded"))
    second = cached_features(encoder, records(tone_task), tmp_path, progress=False)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert [p.name for p in tmp_path.iterdir()] == [feature_id(encoder)]


def test_audio_shorter_than_one_frame_is_one_line(tmp_path):
    write_wav(tmp_path / "blip.wav", tone(440, 0.01))
    with pytest.raises(DashflowError, match="10.0 ms is shorter than one 40 ms frame"):
        encode_clips(LogMelFeatures(), [{"audio_id": "b", "audio": str(tmp_path / "blip.wav")}], progress=False)


def test_probe_command_scores_every_encoder_on_every_task(tone_task, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["probe", "--task", str(tone_task / "tones.jsonl"), "--encoder", "logmel",
                 "--encoder", f"sem={tone_task / 'tokenizer'}@semantic", "--out", str(out), "--epochs", "20",
                 "--lr", "1e-2", "--knn", "--cache", str(tmp_path / "cache")])
    assert code == 0
    results = json.loads((out / "probe.json").read_text())
    assert list(results["encoders"]) == ["logmel", "sem"]
    assert results["tasks"]["tones"] == {"classes": 3, "clips": {"train": 18, "val": 9, "test": 9},
                                         "majority": pytest.approx(1 / 3)}
    logmel = results["encoders"]["logmel"]["scores"]["tones"]
    assert logmel["test"] == 1.0 and logmel["knn"] == 1.0  # pure tones: the log-mel separates them
    assert "| majority class | 33.3 | 33.3 |" in (out / "probe.md").read_text()
    assert results["settings"]["head"] == "linear"


def test_probe_command_bad_inputs(tone_task, tmp_path, capsys):
    one_class = tmp_path / "one.jsonl"
    one_class.write_text(json.dumps({"audio_id": "a", "audio": "a.wav", "label": "x", "split": "train"}) + "\n")
    assert main(["probe", "--task", str(one_class), "--encoder", "logmel", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text('{"model_type": "bert"}')
    assert main(["probe", "--task", str(tone_task / "tones.jsonl"), "--encoder", str(tmp_path / "weird"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown codec kind" in err and err.count("\n") == 1


def test_bench_codec_writes_one_table(tone_task, tmp_path):
    """Codec rows get reconstruction, speed and probe columns; a part and the log-mel baseline get
    probe columns only; an untrained row is marked."""
    from dashflow.tokenizer.transformers_codecs import save_tiny_codec

    clips = tmp_path / "clips.jsonl"
    clips.write_text("".join(json.dumps({"audio_id": f"c{i}", "audio": str(tone_task / f"test_mid_{i}.wav")}) + "\n"
                             for i in range(2)))
    encodec = save_tiny_codec("encodec", tmp_path / "encodec")
    out = tmp_path / "bench"
    assert main(["bench-codec", "--task", str(tone_task / "tones.jsonl"), "--audio", str(clips),
                 "--speech", str(clips), "--encoder", f"tok={tone_task / 'tokenizer'}",
                 "--encoder", f"sem={tone_task / 'tokenizer'}@semantic", "--encoder", "logmel",
                 "--encoder", f"encodec={encodec}", "--untrained", "encodec", "--out", str(out),
                 "--cache", ""]) == 0
    results = json.loads((out / "codec_bench.json").read_text())
    rows = results["encoders"]
    assert set(rows["tok"]["reconstruction"]["audio"]) == {"mel_distance", "stft_distance", "si_sdr", "rtf"}
    assert rows["tok"]["dim"] == 64 and rows["tok"]["rate_hz"] == 25.0 and rows["encodec"]["rate_hz"] == 50.0
    assert rows["sem"]["reconstruction"] == {} and rows["logmel"]["reconstruction"] == {}
    assert rows["encodec"]["untrained"] and not rows["tok"]["untrained"]
    markdown = (out / "codec_bench.md").read_text()
    assert "| encodec (untrained) | 16 | 50 |" in markdown and "| majority class |" in markdown
    html = (out / "codec_bench.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html


def test_tiny_feature_values_survive_storage(tone_task, tmp_path):
    """Untrained codecs can output 1e-6-scale features; storage must not flush them to zero."""

    class Whisper(LogMelFeatures):
        def forward(self, wav):
            return super().forward(wav) * 1e-7

    encoder = Whisper()
    features, mask = cached_features(encoder, records(tone_task)[:2], tmp_path, progress=False)
    stored = features[mask].float()
    assert (stored != 0).float().mean() > 0.99
    reference = (LogMelFeatures()(torch.zeros(1, 16000)) * 1e-7).abs().max()
    assert stored.abs().max() > 0.1 * reference

"""SpkSim: the GE2E speaker encoder (resemblyzer's layout and front end) and its place in `dashflow eval`."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from dashflow.eval import speaker
from dashflow.eval.speaker import (
    GE2EEncoder,
    SpeakerEncoder,
    find_weights,
    mel_frames,
    normalize_volume,
    partial_starts,
    partial_step,
    speaker_similarity,
)
from dashflow.eval.weights import sha256_file

from dashflow.audio import load_audio
from dashflow.errors import DashflowError
from tests.conftest import SENTENCES, chirp, noise, tone, tts, write_wav
from tests.eval.conftest import run_cli

TINY = {"hidden_size": 16, "num_layers": 2, "embedding_size": 16}
# resemblyzer 0.1.4 VoiceEncoder: nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
OFFICIAL_SHAPES = {
    **{f"lstm.weight_ih_l{i}": (1024, 40 if i == 0 else 256) for i in range(3)},
    **{f"lstm.weight_hh_l{i}": (1024, 256) for i in range(3)},
    **{f"lstm.bias_{kind}_l{i}": (1024,) for i in range(3) for kind in ("ih", "hh")},
    "linear.weight": (256, 256), "linear.bias": (256,),
}
NO_DISTRIBUTION = "no-such-distribution-for-dashflow-tests"


def save_ge2e(path: Path, seed: int = 0, **config) -> Path:
    """A random encoder saved as resemblyzer saves ``pretrained.pt``: model state with the GE2E loss's
    two scalars, next to a step count and optimizer state."""
    torch.manual_seed(seed)
    state = GE2EEncoder(**(config or TINY)).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1000, "model_state": {"similarity_weight": torch.tensor([10.0]),
                                              "similarity_bias": torch.tensor([-5.0]), **state},
                "optimizer_state": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)
    return path


@pytest.fixture(scope="module")
def tiny_ge2e(tmp_path_factory) -> Path:
    return save_ge2e(tmp_path_factory.mktemp("ge2e") / "pretrained.pt")


@pytest.fixture(scope="module")
def encoder(tiny_ge2e) -> SpeakerEncoder:
    return SpeakerEncoder(tiny_ge2e)


def voice(seconds: float = 2.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A crude voiced signal: harmonics of ``f0`` plus a little noise."""
    return sum(tone(f0 * k, seconds, amp=0.2 / k) for k in range(1, 6)) + noise(seconds, amp=0.01, seed=seed)


def test_full_size_layout_on_meta():
    with torch.device("meta"):
        model = GE2EEncoder()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == OFFICIAL_SHAPES
    assert sum(p.numel() for p in model.parameters()) == 1_423_616
    assert model.is_official_size and not GE2EEncoder(**TINY).is_official_size


def test_resemblyzer_checkpoint_loads_strictly_and_is_recorded(tiny_ge2e, encoder):
    assert dict(encoder.model.config) | TINY == dict(encoder.model.config)
    assert encoder.settings["sha256"] == sha256_file(tiny_ge2e)
    assert encoder.settings["weights"] == str(tiny_ge2e)
    assert encoder.settings["official_file"] is False and encoder.settings["official_architecture"] is False
    assert "no VAD" in encoder.settings["preprocessing"] and "every 77 frames" in encoder.settings["partials"]


class NotATensor:
    pass


def test_bad_weight_files_fail_in_one_line(tmp_path):
    state = GE2EEncoder(**TINY).state_dict()
    state.pop("linear.bias")
    torch.save({"model_state": state}, tmp_path / "partial.pt")
    with pytest.raises(DashflowError, match="partial.pt: weights do not fit GE2EEncoder: 1 missing keys \\(first: linear.bias\\)"):
        GE2EEncoder.from_weight_file(tmp_path / "partial.pt")
    torch.save({"model_state": {"linear.weight": torch.zeros(4, 4)}}, tmp_path / "nolstm.pt")
    with pytest.raises(DashflowError, match="not a GE2E speaker-encoder state dict \\(no lstm.weight_ih_l0\\)"):
        GE2EEncoder.from_weight_file(tmp_path / "nolstm.pt")
    wide = {k: (torch.zeros(v.shape[0], 64) if k == "lstm.weight_ih_l0" else v) for k, v in state.items()}
    torch.save(wide, tmp_path / "wide.pt")
    with pytest.raises(DashflowError, match="takes 64 mel bands"):
        GE2EEncoder.from_weight_file(tmp_path / "wide.pt")
    torch.save({"model_state": state, "evil": NotATensor()}, tmp_path / "evil.pt")  # never unpickled
    with pytest.raises(DashflowError, match="evil.pt: cannot load weights"):
        GE2EEncoder.from_weight_file(tmp_path / "evil.pt")


def test_front_end_matches_librosa_melspectrogram():
    wav = chirp(100.0, 7000.0, 1.03) + noise(1.03, amp=0.05, seed=3)
    ours = mel_frames(torch.from_numpy(wav)).numpy()
    # resemblyzer's audio.wav_to_mel_spectrogram (librosa >= 0.10 defaults, written out)
    expected = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40,
                                              window="hann", center=True, pad_mode="constant", power=2.0).T
    assert ours.shape == expected.shape == (1 + len(wav) // 160, 40)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * expected.max())


@pytest.mark.parametrize(("seconds", "count"), [(0.5, 1), (1.9, 1), (2.0, 2), (3.0, 3), (10.0, 12)])
def test_partial_utterances(seconds, count):
    """160-frame partials every 77 frames; the last needs 75 % coverage unless it is the only one
    (1.9 s: the second partial would be 70.6 % covered, 2.0 s: 76.9 %)."""
    starts = partial_starts(int(seconds * 16000))
    assert partial_step() == 77
    assert starts == [77 * i for i in range(count)]


def test_volume_is_raised_to_minus_30_dbfs_never_lowered():
    quiet, loud = 0.001 * voice(), voice()
    raised = normalize_volume(quiet)
    assert 20 * np.log10(np.sqrt(np.mean(raised.astype(np.float64) ** 2))) == pytest.approx(-30.0, abs=1e-4)
    assert normalize_volume(loud) is loud
    with pytest.raises(DashflowError, match="silent signal"):
        normalize_volume(np.zeros(16000, np.float32))


def test_embeddings_and_similarity(encoder):
    a, b = voice(3.0, 120.0, seed=1), voice(3.0, 230.0, seed=2) + chirp(300.0, 3000.0, 3.0, amp=0.1)
    emb = encoder.embed(a)
    assert emb.shape == (16,) and emb.dtype == np.float32
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-6) and (emb >= 0).all()
    assert encoder.similarity(a, a.copy()) == pytest.approx(1.0, abs=1e-6)
    assert encoder.similarity(a, b) < 0.999
    # below -30 dBFS the level is normalised away
    np.testing.assert_allclose(encoder.embed(0.01 * a), encoder.embed(0.001 * a), atol=1e-5)
    with pytest.raises(DashflowError, match="silent signal"):
        encoder.similarity(a, np.zeros_like(a))
    with pytest.raises(DashflowError, match="needs a mono clip"):
        encoder.embed(np.stack([a, a]))
    np.testing.assert_allclose(encoder.embed(np.stack([a, b], axis=1)[:, 0]), emb, atol=1e-6)  # strided view


def test_utterance_embedding_is_the_renormalised_mean_of_partials(encoder):
    wav = voice(3.0, 180.0, seed=4)     # 3 partials; the audio is zero-padded to the last one's end
    starts = partial_starts(len(wav))
    padded = np.pad(normalize_volume(wav), (0, (starts[-1] + 160) * 160 - len(wav)))
    mel = mel_frames(torch.from_numpy(padded))
    with torch.no_grad():
        partials = encoder.model(torch.stack([mel[s:s + 160] for s in starts]))
    mean = partials.mean(0)
    assert len(starts) == 3 and not torch.allclose(partials[0], partials[-1])
    np.testing.assert_allclose(encoder.embed(wav), (mean / mean.norm()).numpy(), atol=1e-6)


def test_weights_are_found_without_importing_resemblyzer(tmp_path, monkeypatch, tiny_ge2e):
    assert find_weights(tiny_ge2e) == tiny_ge2e
    with pytest.raises(DashflowError, match="speaker weights .*nothing.pt not found"):
        find_weights(tmp_path / "nothing.pt")
    monkeypatch.setattr(speaker, "WEIGHTS_DISTRIBUTION", NO_DISTRIBUTION)
    assert find_weights() is None
    with pytest.raises(DashflowError, match="pip install --no-deps resemblyzer"):
        speaker_similarity(voice(), voice())
    # an installed distribution listing resemblyzer/pretrained.pt in its RECORD
    site = tmp_path / "site"
    info = site / "fake_ge2e-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ge2e\nVersion: 0.1\n")
    (info / "RECORD").write_text("resemblyzer/__init__.py,,\nresemblyzer/pretrained.pt,,\n")
    save_ge2e(site / "resemblyzer" / "pretrained.pt")
    (site / "resemblyzer" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(speaker, "WEIGHTS_DISTRIBUTION", "fake-ge2e")
    monkeypatch.delitem(sys.modules, "resemblyzer", raising=False)
    assert find_weights() == site / "resemblyzer" / "pretrained.pt"
    assert "resemblyzer" not in sys.modules
    a = voice(seed=5)
    assert speaker_similarity(a, a) == pytest.approx(1.0, abs=1e-6)


def _speech_folders(root: Path) -> tuple[Path, Path]:
    """clean/ and enhanced/ (noisy copies) of two TTS utterances, plus a silent pair."""
    ref, gen = root / "clean", root / "enhanced"
    for i, text in enumerate(SENTENCES[:2]):
        if tts(text, ref / f"utt{i}.wav") is None:
            pytest.skip("needs flite or espeak-ng for real speech")
        wav, sr = sf.read(ref / f"utt{i}.wav", dtype="float32")
        write_wav(gen / f"utt{i}.wav", np.clip(wav + noise(len(wav) / sr, sr=sr, amp=0.02, seed=i)[: len(wav)], -1, 1))
    write_wav(ref / "silent.wav", np.zeros(16000, np.float32))
    write_wav(gen / "silent.wav", np.zeros(16000, np.float32))
    return gen, ref


def test_enhancement_eval_reports_spksim(tmp_path, tiny_ge2e):
    gen, ref = _speech_folders(tmp_path)
    out = tmp_path / "report"
    assert run_cli(["eval", "--generated", gen, "--reference", ref, "--metrics", "enhancement", "--out", out,
                    "--no-cache", "--speaker-weights", tiny_ge2e, "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    run = report["runs"][0]
    spksim = run["metrics"]["spksim"]
    assert spksim["n_clips"] == 2 and spksim["n_failed"] == 1 and 0.0 <= spksim["value"] <= 1.0
    assert spksim["value"] == pytest.approx(np.mean([run["per_clip"][f"utt{i}"]["spksim"] for i in range(2)]))
    assert "silent" in run["issues"]["failed"]["spksim"]["silent"]
    assert report["models"]["speaker"]["sha256"] == sha256_file(tiny_ge2e)
    assert report["metric_info"]["spksim"]["better"] == "higher"
    md = (out / "report.md").read_text()
    assert "SpkSim ↑" in md and "| speaker |" in md and sha256_file(tiny_ge2e)[:16] in md
    assert "| run | length (s) | PESQ-WB ↑ |" in md  # no empty generation-setting columns
    html = (out / "report.html").read_text()
    assert "GE2E" in html and "<th>steps</th>" not in html


def test_enhancement_eval_without_speaker_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(speaker, "WEIGHTS_DISTRIBUTION", NO_DISTRIBUTION)
    gen, ref = _speech_folders(tmp_path)
    out = tmp_path / "report"
    assert run_cli(["eval", "--generated", gen, "--reference", ref, "--metrics", "enhancement", "--out", out,
                    "--no-cache", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics = report["runs"][0]["metrics"]
    assert metrics["spksim"] == {"value": None, "error": speaker.MISSING_WEIGHTS}
    for key in ("pesq", "stoi", "sisdr", "dnsmos_ovrl"):
        assert np.isfinite(metrics[key]["value"]), key
    assert "speaker" not in report["models"]
    md = (out / "report.md").read_text()
    assert f"SpkSim not computed: {speaker.MISSING_WEIGHTS}" in md and "| n/a |" in md


@pytest.fixture(scope="module")
def real_encoder() -> SpeakerEncoder:
    weights = find_weights()
    if weights is None:
        pytest.skip("needs resemblyzer's pretrained.pt (pip install --no-deps resemblyzer); "
                    "the tiny stand-in tests above cover the same code")
    return SpeakerEncoder(weights)


@pytest.mark.weights
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # resemblyzer imports scipy.ndimage.morphology
def test_real_weights_match_resemblyzer(real_encoder, tmp_path, monkeypatch):
    """Our embedding equals resemblyzer's ``embed_utterance`` after its volume normalisation."""
    assert real_encoder.settings["official_file"] and real_encoder.settings["official_architecture"]
    monkeypatch.setitem(sys.modules, "webrtcvad", types.ModuleType("webrtcvad"))  # only its VAD needs it
    reference = importlib.import_module("resemblyzer.voice_encoder").VoiceEncoder(device="cpu", verbose=False)
    rz_audio = importlib.import_module("resemblyzer.audio")
    for i, seconds in enumerate((1.2, 2.0, 4.7)):
        wav = voice(seconds, 110.0 + 40 * i, seed=i)
        expected = reference.embed_utterance(rz_audio.normalize_volume(wav, -30, increase_only=True))
        np.testing.assert_allclose(real_encoder.embed(wav), expected, atol=1e-5)


@pytest.mark.weights
def test_real_weights_separate_speakers(real_encoder, tmp_path):
    """Two sentences of one flite voice are closer than the same sentences of different voices."""
    voices = ("slt", "rms", "awb")
    emb = {(v, i): real_encoder.embed(load_audio(tts(SENTENCES[i], tmp_path / f"{v}{i}.wav", voice=v), 16000).numpy())
           for v in voices for i in (6, 7)}
    same = [float(emb[v, 6] @ emb[v, 7]) for v in voices]
    different = [float(emb[a, i] @ emb[b, j]) for a in voices for b in voices if a < b for i in (6, 7) for j in (6, 7)]
    assert min(same) > max(different)

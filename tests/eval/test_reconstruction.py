"""Mel/STFT distances (DAC definitions) and the speech metrics: PESQ, STOI, SI-SDR, DNSMOS."""

from __future__ import annotations

import numpy as np
import pytest
from dashflow.eval.enhancement import align, dnsmos, pesq_wb, si_sdr, stoi
from dashflow.eval.reconstruction import MEL_PRESETS, mel_distance, stft_distance

from dashflow.audio import load_audio
from dashflow.errors import DashflowError
from tests.conftest import SENTENCES, noise, tone, tts


def _librosa_distance(est, ref, windows, n_mels, pow_, mag_w, log_w, eps=1e-5):
    """The DAC loss written with librosa: periodic Hann, centred reflect padding, hop = window / 4."""
    import librosa  # dev extra
    total = 0.0
    for i, w in enumerate(windows):
        mags = [np.abs(librosa.stft(x.astype(np.float64), n_fft=w, hop_length=w // 4, window="hann",
                                    center=True, pad_mode="reflect")) for x in (est, ref)]
        if n_mels is not None:
            fb = librosa.filters.mel(sr=16000, n_fft=w, n_mels=n_mels[i])
            mags = [fb @ m for m in mags]
        logs = [np.log10(np.maximum(m, eps) ** pow_) for m in mags]
        total += log_w * np.abs(logs[0] - logs[1]).mean() + mag_w * np.abs(mags[0] - mags[1]).mean()
    return total


def test_spectral_distances_match_an_independent_librosa_computation():
    ref = tone(300.0, 1.0) + noise(1.0, amp=0.05, seed=0)
    est = 0.7 * ref + noise(1.0, amp=0.02, seed=1)
    dac = MEL_PRESETS["dac"]
    assert mel_distance(est, ref) == pytest.approx(
        _librosa_distance(est, ref, dac.window_lengths, dac.n_mels, 2.0, 1.0, 1.0), rel=1e-3)
    base = MEL_PRESETS["dac-base"]
    assert mel_distance(est, ref, preset="dac-base") == pytest.approx(
        _librosa_distance(est, ref, base.window_lengths, base.n_mels, 1.0, 0.0, 1.0), rel=1e-3)
    assert stft_distance(est, ref) == pytest.approx(
        _librosa_distance(est, ref, (2048, 512), None, 2.0, 1.0, 1.0), rel=1e-3)


def test_spectral_distances_order_and_errors():
    ref = tone(300.0, 1.0)
    assert mel_distance(ref, ref) == 0.0 and stft_distance(ref, ref) == 0.0
    close, far = ref + noise(1.0, amp=0.01), ref + noise(1.0, amp=0.2)
    assert 0 < mel_distance(close, ref) < mel_distance(far, ref)
    assert 0 < stft_distance(close, ref) < stft_distance(far, ref)
    with pytest.raises(DashflowError, match="equal lengths"):
        mel_distance(ref[:-1], ref)
    with pytest.raises(DashflowError, match="too short"):
        mel_distance(ref[:800], ref[:800])
    with pytest.raises(DashflowError, match="unknown mel preset"):
        mel_distance(ref, ref, preset="dac-44k")


def test_si_sdr_known_values_and_scale_invariance():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(16000)
    residual = rng.standard_normal(16000)
    residual -= residual.mean()
    r0 = ref - ref.mean()
    residual -= (residual @ r0) / (r0 @ r0) * r0  # orthogonal to the target
    residual *= np.linalg.norm(r0) / np.linalg.norm(residual) * 10 ** (-20 / 20)
    est = ref + residual
    assert si_sdr(ref, est) == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(ref, 3.0 * est) == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(ref, est + 5.0) == pytest.approx(20.0, abs=1e-6)  # zero-mean


def test_alignment_rules():
    ref, est = np.ones(10000), np.full(11000, 2.0)
    r, e = align(ref, est, "reference")
    assert len(r) == len(e) == 10000
    r, e = align(ref, np.full(9000, 2.0), "reference")
    assert len(e) == 10000 and not e[9000:].any()
    r, e = align(ref, np.full(11000, 2.0), "uniflow")  # differ by <= 1600: crop to the shorter
    assert len(r) == len(e) == 10000
    r, e = align(ref, np.full(12000, 2.0), "uniflow")  # else zero-pad the shorter
    assert len(r) == len(e) == 12000 and not r[10000:].any()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tts(SENTENCES[0], tmp_path_factory.mktemp("speech") / "s.wav")
    if path is None:
        pytest.skip("needs flite or espeak-ng for real speech")
    return load_audio(path, 16000).numpy()


def test_pesq_and_stoi_rank_degradations(speech):
    light = speech + noise(len(speech) / 16000, amp=0.003, seed=1)[: len(speech)]
    heavy = speech + noise(len(speech) / 16000, amp=0.05, seed=2)[: len(speech)]
    assert pesq_wb(speech, speech) > 4.4
    assert pesq_wb(speech, speech) > pesq_wb(speech, light) > pesq_wb(speech, heavy) >= 1.0
    assert stoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    assert stoi(speech, light) > stoi(speech, heavy)
    with pytest.raises(DashflowError, match="PESQ failed"):
        pesq_wb(np.zeros(16000), np.zeros(16000))  # no utterance
    with pytest.raises(DashflowError, match="STOI failed"):
        stoi(speech[:1600], speech[:1600])  # pystoi would return 1e-5 and only warn


def test_dnsmos_scores_speech(speech):
    clean = dnsmos(speech)
    assert set(clean) == {"ovrl", "sig", "bak", "p808"}
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    noisy = dnsmos(np.clip(speech + noise(len(speech) / 16000, amp=0.1, seed=3)[: len(speech)], -1, 1))
    assert noisy["bak"] < clean["bak"]

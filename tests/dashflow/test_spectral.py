"""The one mel / STFT front end (tokenizer and eval both use it) against librosa (float64)."""

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dashflow.spectral import centre_pad, mel_filterbank, stft_magnitude

SR = 16000


@pytest.mark.parametrize("n_fft,n_mels", [(512, 64), (1024, 128)])
def test_htk_filterbank_matches_librosa(n_fft, n_mels):
    ours = mel_filterbank(SR, n_fft, n_mels, 0.0, SR / 2, scale="htk", norm=None).numpy()
    ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=SR / 2, htk=True,
                              norm=None, dtype=np.float64).T
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("n_fft,n_mels,fmin,fmax", [(1024, 80, 0.0, None), (400, 40, 50.0, 7600.0)])
def test_slaney_filterbank_matches_librosa(n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(SR, n_fft, n_mels, fmin, fmax).numpy()
    ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64).T
    assert ours.shape == (n_fft // 2 + 1, n_mels)
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_stft_magnitude_matches_librosa():
    wav = np.random.default_rng(0).standard_normal(4000)
    ours = stft_magnitude(torch.from_numpy(wav)[None], 512, 128)[0].numpy()
    ref = np.abs(librosa.stft(wav, n_fft=512, hop_length=128, window="hann", center=True, pad_mode="reflect"))
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_centre_pad_reflects_each_clip_at_its_own_end():
    wav = torch.randn(2, 40)
    lengths = torch.tensor([40, 25])
    padded = centre_pad(wav, 8, lengths)
    assert padded.shape == (2, 56)
    torch.testing.assert_close(padded[0], F.pad(wav[:1, None], (8, 8), mode="reflect")[0, 0])
    short = F.pad(wav[1:, None, :25], (8, 8), mode="reflect")[0, 0]
    torch.testing.assert_close(padded[1, :41], short)
    assert (padded[1, 41:] == 0).all()


def test_tokenizer_and_eval_share_the_filterbank():
    """The Slaney formula is written once: the tokenizer's losses and eval's metrics import it."""
    import dashflow.eval.reconstruction as recon
    import dashflow.tokenizer.losses as losses

    assert recon.mel_filterbank is losses.MelMagnitude.__init__.__globals__["mel_filterbank"] is mel_filterbank

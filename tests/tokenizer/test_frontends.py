"""Front ends against an independent librosa computation (float64), per-clip padding and top_db."""

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dashflow.tokenizer.frontends import AcousticFrontEnd, DashengFrontEnd

from tests.conftest import chirp, noise, tone

SR = 16000


def _signal(seconds: float = 1.0) -> np.ndarray:
    """Chord + chirp + a little noise, followed by 0.3 s of digital silence."""
    wav = tone(440, seconds) + tone(1250, seconds, amp=0.1) + chirp(200, 7000, seconds, amp=0.1)
    wav = wav + noise(seconds, amp=0.01)
    return np.concatenate([wav, np.zeros(int(0.3 * SR), np.float32)])


def _librosa_mel(wav: np.ndarray, n_fft: int, n_mels: int, power: float) -> np.ndarray:
    """HTK mel, no filter norm, centred reflect STFT with a periodic Hann window (float64)."""
    fb = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=SR / 2, htk=True,
                             norm=None, dtype=np.float64)
    spec = np.abs(librosa.stft(wav.astype(np.float64), n_fft=n_fft, hop_length=160, win_length=n_fft,
                               window="hann", center=True, pad_mode="reflect")) ** power
    return fb @ spec


def test_dasheng_front_end_matches_librosa_db_with_top_db_floor():
    wav = _signal()
    ours = DashengFrontEnd()(torch.from_numpy(wav)[None])[0].numpy()
    db = 10 * np.log10(np.maximum(_librosa_mel(wav, 512, 64, 2.0), 1e-10))
    ref = np.maximum(db, db.max() - 120.0)
    assert ours.shape == ref.shape == (64, len(wav) // 160 + 1)
    # float32 vs float64: within 0.001 dB everywhere (measured 1.6e-4); silence sits on the floor
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert np.isclose(ours[:, -10:], ours.max() - 120.0, atol=1e-3).all()


def test_acoustic_front_end_matches_librosa_log_magnitude_mel():
    wav = _signal()
    ours = AcousticFrontEnd()(torch.from_numpy(wav)[None])[0].numpy()
    ref = np.log(np.maximum(_librosa_mel(wav, 1024, 128, 1.0), 1e-7))
    assert ours.shape == ref.shape == (128, len(wav) // 160 + 1)
    # natural-log units: within 5e-4 (measured 5.8e-5), float32 vs float64
    np.testing.assert_allclose(ours, ref, atol=5e-4)


def test_top_db_floor_is_per_clip_not_per_batch():
    front = DashengFrontEnd()
    loud = torch.from_numpy(_signal())
    quiet = 1e-4 * torch.from_numpy(_signal())  # 80 dB quieter
    batch = front(torch.stack([loud, quiet]))
    torch.testing.assert_close(batch[0], front(loud[None])[0])
    torch.testing.assert_close(batch[1], front(quiet[None])[0])
    # a batch-wide floor (torchaudio on 3-D input) would lift the quiet clip's silence to the
    # loud clip's peak - 120 dB; per clip it stays at the -100 dB amin floor
    assert batch[0].min() > -90 and batch[1].min() == -100


def test_padded_clip_gives_the_same_frames_as_alone():
    front_ends = [DashengFrontEnd(), AcousticFrontEnd()]
    clip = torch.from_numpy(_signal(0.7))
    padded = torch.stack([torch.from_numpy(_signal(1.0)), F.pad(clip, (0, 4800))])
    lengths = torch.tensor([padded.shape[1], clip.shape[0]])
    frames = clip.shape[0] // 160 + 1
    for front in front_ends:
        alone = front(clip[None])[0]
        batched = front(padded, lengths)[1, :, :frames]
        torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("front", [DashengFrontEnd(), AcousticFrontEnd()], ids=["dasheng", "acoustic"])
def test_missing_front_end_buffers_are_recomputed_on_strict_load(front):
    state = {k: v for k, v in front.state_dict().items() if not k.endswith(("window", "fb"))}
    assert not state  # the front ends hold buffers only
    fresh = type(front)()
    for buffer in fresh.buffers():
        buffer.zero_()
    fresh.load_state_dict(state, strict=True)
    for (name, ours), (_, ref) in zip(fresh.state_dict().items(), front.state_dict().items()):
        torch.testing.assert_close(ours, ref, msg=name)


def test_front_end_ignores_autocast_and_stays_float32():
    wav = torch.from_numpy(_signal(0.5))[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = DashengFrontEnd()(wav)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, DashengFrontEnd()(wav))

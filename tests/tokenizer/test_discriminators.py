"""Discriminators: output structure and shapes, weight norm, batch independence, full-size
parameter counts and key names on the meta device."""

from __future__ import annotations

import math

import torch
from dashflow.tokenizer.discriminators import (
    MFD_FFT_SIZES,
    MFD_HOP_SIZES,
    MPD_PERIODS,
    MultiFrequencyDiscriminator,
    MultiPeriodDiscriminator,
    PeriodDiscriminator,
    SpectralDiscriminator,
    TokenizerDiscriminator,
)
from torch.nn.utils import parametrize


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def test_period_discriminator_shapes():
    d = PeriodDiscriminator(3, channels=(4, 8, 8))
    logits, features = d(torch.randn(2, 1000))
    rows = math.ceil(1000 / 3)  # reflect-padded to a multiple of the period
    for _ in range(2):  # two stride-3 convs, then a stride-1 conv
        rows = _conv_out(rows, 5, 3, 2)
    assert [f.shape for f in features] == [
        (2, 4, _conv_out(334, 5, 3, 2), 3), (2, 8, rows, 3), (2, 8, rows, 3), (2, 1, rows, 3)]
    assert logits.shape == (2, rows * 3)


def test_spectral_discriminator_shapes_and_magnitude():
    d = SpectralDiscriminator(126, 63, channels=(4, 4, 8, 8, 16))
    wav = torch.randn(2, 4000)
    spec = d.magnitude(wav)
    assert spec.shape == (2, 1, 64, 4000 // 63 + 1) and spec.dtype == torch.float32
    assert spec.min() >= math.sqrt(1e-7) - 1e-9 and spec.max() <= math.sqrt(1e3) + 1e-4
    logits, features = d(wav)
    freq, time = 64, 4000 // 63 + 1
    for _ in range(4):
        freq, time = _conv_out(freq, 5, 2, 2), _conv_out(time, 5, 2, 2)
    assert [tuple(f.shape[1:2]) for f in features] == [(4,), (4,), (8,), (8,), (16,), (1,)]
    assert features[-1].shape == (2, 1, freq, time) and logits.shape == (2, freq * time)


def test_magnitude_peaks_at_the_tone_bin():
    d = SpectralDiscriminator(542, 271)
    t = torch.arange(16000) / 16000
    spec = d.magnitude(torch.sin(2 * math.pi * 1000 * t)[None])
    peak = spec[0, 0].mean(dim=-1).argmax().item()
    assert abs(peak - 1000 * 542 / 16000) <= 1


def test_families_return_one_entry_per_subdiscriminator():
    mpd = MultiPeriodDiscriminator(periods=(2, 3), channels=(4, 4))
    mfd = MultiFrequencyDiscriminator((78, 206), (39, 103), channels=(4, 4, 4, 4, 4))
    for family, count, layers in ((mpd, 2, 3), (mfd, 2, 6)):
        logits, features = family(torch.randn(3, 2000))
        assert len(logits) == len(features) == count
        assert all(x.shape[0] == 3 and x.dim() == 2 for x in logits)
        assert all(len(f) == layers for f in features)


def test_tiny_discriminator_outputs_and_weight_norm():
    d = TokenizerDiscriminator.from_preset("tiny")
    out = d(torch.randn(2, 8000))
    assert set(out) == {"mpd", "mfd"}
    assert len(out["mpd"][0]) == len(d.config.mpd_periods)
    assert len(out["mfd"][0]) == len(d.config.mfd_fft_sizes)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)


def test_each_clip_is_judged_alone():
    """The recipe runs real and fake as one batch: outputs must not mix batch entries."""
    torch.manual_seed(0)
    d = TokenizerDiscriminator.from_preset("tiny").eval()
    a, b = torch.randn(1, 6000), torch.randn(1, 6000)
    joint = d(torch.cat([a, b]))
    alone = d(a)
    for name in joint:
        for x, y in zip(joint[name][0], alone[name][0]):
            torch.testing.assert_close(x[:1], y, rtol=1e-4, atol=1e-5)


def test_gradients_reach_the_waveform():
    d = TokenizerDiscriminator.from_preset("tiny")
    wav = torch.randn(1, 4000, requires_grad=True)
    out = d(wav)
    sum(x.sum() for family in out.values() for x in family[0]).backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0


def test_paper_discriminator_on_meta_device():
    with torch.device("meta"):
        d = TokenizerDiscriminator.from_preset("paper")
    assert tuple(d.config.mpd_periods) == MPD_PERIODS
    assert tuple(d.config.mfd_fft_sizes) == MFD_FFT_SIZES
    assert tuple(d.config.mfd_hop_sizes) == MFD_HOP_SIZES
    count = lambda m: sum(p.numel() for p in m.parameters())
    # per period: 1->32->128->512->1024->1024 (5x1 kernels) + 1024->1 (3x1), weight norm g+v
    per_period = sum(o * i * 5 + o + o for i, o in ((1, 32), (32, 128), (128, 512), (512, 1024),
                                                    (1024, 1024))) + (1024 * 3 + 1 + 1)
    assert count(d.mpd) == 5 * per_period
    # per resolution: 1->32->64->128->256 (5x5), 256->512 (3x3), 512->1 (3x3)
    per_res = sum(o * i * k * k + o + o for i, o, k in ((1, 32, 5), (32, 64, 5), (64, 128, 5),
                                                        (128, 256, 5), (256, 512, 3))) + (512 * 9 + 1 + 1)
    assert count(d.mfd) == 8 * per_res
    assert round(count(d) / 1e6, 2) == 59.20
    keys = set(d.state_dict())
    assert "mpd.discriminators.4.convs.4.parametrizations.weight.original1" in keys
    assert "mfd.discriminators.7.conv_post.bias" in keys
    assert d.state_dict()["mfd.discriminators.0.convs.0.parametrizations.weight.original1"].shape \
        == (32, 1, 5, 5)


def test_save_and_load_round_trip(tmp_path):
    d = TokenizerDiscriminator.from_preset("tiny")
    d.save_pretrained(tmp_path)
    loaded = TokenizerDiscriminator.from_pretrained(tmp_path)
    wav = torch.randn(1, 4000)
    torch.testing.assert_close(d(wav)["mfd"][0][0], loaded(wav)["mfd"][0][0])

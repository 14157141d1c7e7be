"""Losses on inputs whose values can be worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from dashflow.spectral import mel_filterbank
from dashflow.tokenizer.losses import (
    GeneratorLoss,
    MultiScaleMelLoss,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    semantic_loss,
)


def family(*logits: float, features=None):
    """A discriminator family whose sub-discriminators output constant logits."""
    return ([torch.full((2, 3), v) for v in logits],
            features if features is not None else [[torch.zeros(2, 3)] for _ in logits])


def test_discriminator_hinge_values():
    # real >= 1 and fake <= -1 cost nothing; real = fake = 0 costs 1 + 1
    loss, parts = discriminator_hinge_loss({"a": family(2.0)}, {"a": family(-2.0)})
    assert loss.item() == 0.0
    loss, _ = discriminator_hinge_loss({"a": family(0.0)}, {"a": family(0.0)})
    assert loss.item() == 2.0
    # sub-discriminators averaged within a family (real 0.5 -> 0.5, fake 0.5 -> 1.5; real 1,
    # fake -1 -> 0), families summed with weights
    loss, parts = discriminator_hinge_loss({"a": family(0.5, 1.0), "b": family(0.0)},
                                           {"a": family(0.5, -1.0), "b": family(0.0)},
                                           {"b": 0.1})
    assert parts["a"].item() == pytest.approx(1.0) and parts["b"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx(1.0 + 0.1 * 2.0)


def test_generator_hinge_values():
    loss, _ = generator_hinge_loss({"a": family(0.0)})
    assert loss.item() == 1.0
    loss, parts = generator_hinge_loss({"a": family(-1.0, 3.0)})  # mean(2, 0)
    assert parts["a"].item() == 1.0 and loss.item() == 1.0


def test_feature_matching_sums_layers_and_averages_subdiscriminators():
    real_maps = [[torch.ones(2, 4), torch.full((2, 5), 3.0)], [torch.zeros(2, 4)]]
    fake_maps = [[torch.zeros(2, 4, requires_grad=True), torch.zeros(2, 5)],
                 [torch.full((2, 4), 2.0)]]
    real = {"a": ([torch.zeros(1)] * 2, [[m.requires_grad_() for m in maps] for maps in real_maps])}
    fake = {"a": ([torch.zeros(1)] * 2, fake_maps)}
    loss, _ = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(((1 + 3) + 2) / 2)
    loss.backward()
    assert real_maps[0][0].grad is None  # the real side is a fixed target
    assert fake_maps[0][0].grad is not None


def test_mel_filterbank_matches_librosa():
    import librosa  # dev extra
    for n_fft, n_mels, htk, norm in ((2048, 320, False, "slaney"), (32, 5, False, "slaney"),
                                     (1024, 100, True, None)):
        ours = mel_filterbank(16000, n_fft, n_mels, scale="htk" if htk else "slaney", norm=norm)
        ref = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels,
                                                   htk=htk, norm=norm)).T
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_mel_loss_of_a_gain_is_the_log_of_the_gain():
    """mel is linear in magnitude, so a x2 gain shifts every log-mel bin by ln 2."""
    target = 0.5 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    assert MultiScaleMelLoss()(target, target).item() == 0.0
    assert MultiScaleMelLoss()(2 * target, target).item() == pytest.approx(math.log(2), rel=1e-4)
    log10_sum = MultiScaleMelLoss(log="log10", reduction="sum")
    assert log10_sum(2 * target, target).item() == pytest.approx(7 * math.log10(2), rel=1e-4)
    vocos = MultiScaleMelLoss.preset("vocos")
    assert len(vocos.mels) == 1 and vocos(2 * target, target).item() == pytest.approx(math.log(2), rel=1e-4)


def test_mel_loss_trims_to_the_shorter_input_and_has_gradients():
    target = torch.randn(1, 4000)
    pred = torch.randn(1, 4100, requires_grad=True)
    loss = MultiScaleMelLoss()(pred, target)
    loss.backward()
    assert pred.grad[:, 4000:].abs().sum() == 0 and pred.grad[:, :4000].abs().sum() > 0


def test_mel_loss_rejects_bad_settings():
    with pytest.raises(ValueError):
        MultiScaleMelLoss(windows=(64, 128), n_mels=(10,))
    with pytest.raises(ValueError):
        MultiScaleMelLoss.preset("hifigan")


def test_semantic_loss_is_masked_mse_with_a_fixed_target():
    semantic = torch.zeros(1, 3, 4, requires_grad=True)
    acoustic = torch.tensor([[[1.0] * 4, [2.0] * 4, [100.0] * 4]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    loss = semantic_loss(semantic, acoustic, mask)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert semantic.grad is None and acoustic.grad[0, 2].abs().sum() == 0
    assert semantic_loss(semantic, acoustic).item() == pytest.approx((1 + 4 + 10000) / 3)


def test_generator_loss_combines_with_the_paper_weights():
    torch.manual_seed(0)
    target, recon = torch.randn(1, 4000), torch.randn(1, 4000)
    semantic, acoustic = torch.zeros(1, 6, 8), torch.ones(1, 6, 8)
    real = {"mpd": family(1.0, features=[[torch.ones(2, 3)]]),
            "mfd": family(0.0, features=[[torch.ones(2, 3)]])}
    fake = {"mpd": family(0.0), "mfd": family(-1.0)}
    total, parts = GeneratorLoss()(recon, target, encoding(semantic, acoustic), real, fake)
    mel = MultiScaleMelLoss()(recon, target)
    assert parts["mel"].item() == pytest.approx(mel.item()) and parts["sem"].item() == 1.0
    assert parts["adv"].item() == pytest.approx(1.0 + 2.0) and parts["fm"].item() == 2.0
    assert total.item() == pytest.approx(45 * mel.item() + 45 * 1.0 + 3.0 + 2.0, rel=1e-6)

    weighted = GeneratorLoss(lambda_sem=0.0, lambda_mel=1.0, lambda_adv=2.0, lambda_fm=0.5,
                             family_weights={"mfd": 0.1})
    total, parts = weighted(recon, target, encoding(semantic, acoustic), real, fake)
    assert parts["adv"].item() == pytest.approx(1.0 + 0.1 * 2.0)
    assert total.item() == pytest.approx(mel.item() + 2 * (1.0 + 0.2) + 0.5 * (1.0 + 0.1), rel=1e-6)


def test_generator_loss_without_discriminator_is_reconstruction_only():
    total, parts = GeneratorLoss()(torch.zeros(1, 2000), torch.zeros(1, 2000),
                                   encoding(torch.zeros(1, 2, 4), torch.full((1, 2, 4), 0.5)))
    assert set(parts) == {"mel", "sem"}
    assert total.item() == pytest.approx(45 * 0.25)


def test_generator_loss_adds_losatoks_low_dimensional_and_kl_terms():
    """LoSATok: 45 (L_H + L_L) + 1e-2 KL on top of the mel term."""
    low = encoding(torch.zeros(1, 2, 4), torch.full((1, 2, 4), 0.5), semantic_low=torch.zeros(1, 2, 2),
                   acoustic_low=torch.full((1, 2, 2), 2.0), kl=torch.tensor(3.0))
    total, parts = GeneratorLoss()(torch.zeros(1, 2000), torch.zeros(1, 2000), low)
    assert parts["sem_low"].item() == 4.0 and parts["kl"].item() == 3.0
    assert total.item() == pytest.approx(45 * 0.25 + 45 * 4.0 + 1e-2 * 3.0)


def encoding(semantic, acoustic, mask=None, **low_parts):
    """What a tokenizer's encode returns, as far as the generator loss reads it."""
    return SimpleNamespace(semantic=semantic, acoustic=acoustic, mask=mask, **low_parts)

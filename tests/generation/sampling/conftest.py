"""Shared by the sampling tests."""

import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny-tensor loops run fastest on one thread (and do not fight other test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(one_thread) -> AudioGenModel:
    """The tiny preset, in eval mode, with its zero-initialised paths woken."""
    torch.manual_seed(0)
    m = AudioGenModel.from_preset("tiny").eval()
    with torch.no_grad():  # wake the zero-initialised paths so conditions and time matter
        for p in m.backbone.parameters():
            if not p.any():
                p.normal_(0, 0.05)
        m.dummy_ta_embed.normal_()
    return m

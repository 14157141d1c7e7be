"""VGGish and Cnn14: official layouts, parity with the public reference packages, strict loading."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from dashflow.eval.cnn14 import Cnn14
from dashflow.eval.embedders import Cnn14Embedder, VGGishEmbedder, audioldm_prepare
from dashflow.eval.vggish import VGGish, log_mel_examples
from dashflow.eval.weights import load_state_dict, locate

from dashflow.errors import DashflowError
from tests.conftest import tone
from tests.eval.conftest import randomize_batchnorm, save_cnn14, save_vggish

# torchvggish's VGG (vggish-10086976.pth): make_layers() [64, M, 128, M, 256, 256, M, 512, 512, M]
# and embeddings Linear(512*4*6, 4096), Linear(4096, 4096), Linear(4096, 128)
VGGISH_SHAPES = {
    "features.0.weight": (64, 1, 3, 3), "features.3.weight": (128, 64, 3, 3),
    "features.6.weight": (256, 128, 3, 3), "features.8.weight": (256, 256, 3, 3),
    "features.11.weight": (512, 256, 3, 3), "features.13.weight": (512, 512, 3, 3),
    "embeddings.0.weight": (4096, 12288), "embeddings.2.weight": (4096, 4096), "embeddings.4.weight": (128, 4096),
}


def _panns_models():
    """panns_inference.models without running the package __init__ (it downloads a label CSV)."""
    spec = importlib.util.find_spec("panns_inference")  # dev extra (with torchlibrosa)
    assert spec is not None, "panns_inference missing: pip install -e '.[dev]'"
    if "panns_inference.models" not in sys.modules:
        package = types.ModuleType("panns_inference")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules.setdefault("panns_inference", package)
    return importlib.import_module("panns_inference.models")


def test_vggish_full_size_layout_on_meta():
    with torch.device("meta"):
        model = VGGish()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 72_141_184
    assert set(state) == {f"{k[:-7]}.{s}" for k in VGGISH_SHAPES for s in ("weight", "bias")}
    assert {k: tuple(state[k].shape) for k in VGGISH_SHAPES} == VGGISH_SHAPES
    assert model.is_official_size


def test_cnn14_full_size_layout_on_meta():
    with torch.device("meta"):
        model = Cnn14()
    state = model.state_dict()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert trainable == 80_753_615  # the PANNs paper's 80.8 M
    assert frozen == 2 * 257 * 512 + 257 * 64  # torchlibrosa's DFT kernels and mel matrix
    bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = {"spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                "logmel_extractor.melW", *(f"bn0.{k}" for k in bn_keys),
                *(f"fc{n}.{k}" for n in ("1", "_audioset") for k in ("weight", "bias"))}
    for i in range(1, 7):
        expected |= {f"conv_block{i}.conv1.weight", f"conv_block{i}.conv2.weight"}
        expected |= {f"conv_block{i}.bn{j}.{k}" for j in (1, 2) for k in bn_keys}
    assert set(state) == expected
    assert tuple(state["conv_block6.conv2.weight"].shape) == (2048, 2048, 3, 3)
    assert tuple(state["fc_audioset.weight"].shape) == (527, 2048)
    assert tuple(state["spectrogram_extractor.stft.conv_real.weight"].shape) == (257, 1, 512)
    assert tuple(state["logmel_extractor.melW"].shape) == (257, 64)


def test_vggish_examples_are_whole_096_s_frames():
    assert log_mel_examples(np.zeros(160000)).shape == (10, 1, 96, 64)  # 10 s -> 998 frames -> 10
    assert log_mel_examples(np.zeros(32000)).shape == (2, 1, 96, 64)
    assert log_mel_examples(np.zeros(15300)).shape == (0, 1, 96, 64)   # < 0.96 s
    assert log_mel_examples(audioldm_prepare(np.zeros(8000))).shape == (2, 1, 96, 64)  # padded to 2 s
    np.testing.assert_allclose(log_mel_examples(np.zeros(32000)), np.log(0.01), rtol=1e-6)


def test_vggish_matches_torchvggish():
    import torchvggish  # dev extra
    from torchvggish import torchvggish as tv

    torch.manual_seed(0)
    reference = tv._vgg(postprocess=False).eval()
    ours = VGGish().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    wav = tone(440.0, 3.0) + np.random.default_rng(0).uniform(-0.1, 0.1, 48000).astype(np.float32)
    ref_examples = torchvggish.waveform_to_examples(wav, 16000).detach()
    examples = torch.from_numpy(log_mel_examples(wav))
    torch.testing.assert_close(examples, ref_examples, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        full = reference(ref_examples)  # torchvggish keeps the final ReLU
        pre = ours(examples)
    torch.testing.assert_close(torch.relu(pre), full, rtol=1e-5, atol=1e-6)
    assert (pre < 0).any()  # the pre-activation embedding is what FAD uses


def test_cnn14_matches_panns_inference():
    models = _panns_models()
    torch.manual_seed(0)
    reference = randomize_batchnorm(models.Cnn14(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64,
                                                 fmin=50, fmax=8000, classes_num=527)).eval()
    ours = Cnn14().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    wav = torch.from_numpy(tone(330.0, 2.0)[None] + np.random.default_rng(1).uniform(-0.1, 0.1, (1, 32000))
                           .astype(np.float32))
    with torch.no_grad():
        out = reference(wav)
        features, logits = ours(wav)
    torch.testing.assert_close(features, out["embedding"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.sigmoid(logits), out["clipwise_output"], rtol=1e-5, atol=1e-6)


def test_cnn14_front_end_matches_librosa():
    import librosa  # dev extra
    wav = tone(500.0, 1.0) + np.random.default_rng(2).uniform(-0.05, 0.05, 16000).astype(np.float32)
    model = Cnn14(channels=(4, 4, 4, 4, 4, 4))
    with torch.no_grad():
        ours = model.logmel_extractor(model.spectrogram_extractor(torch.from_numpy(wav)[None]))[0, 0].numpy()
    mel = librosa.feature.melspectrogram(y=wav.astype(np.float64), sr=16000, n_fft=512, hop_length=160,
                                         window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=64,
                                         fmin=50, fmax=8000)
    expected = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T
    np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_official_files_load_strictly_full_size(tmp_path):
    """The real architectures through the real loading path, on a 2-second clip."""
    vggish_path = save_vggish(tmp_path)
    cnn14_path = save_cnn14(tmp_path)
    wav = tone(440.0, 2.0)
    vggish = VGGishEmbedder(vggish_path, torch.device("cpu"))
    assert vggish.model.is_official_size and vggish.settings["official_architecture"]
    assert vggish.settings["official_file"] is False  # random weights are not the published file
    assert vggish(wav, "0")["frames"].shape == (2, 128)
    cnn14 = Cnn14Embedder(cnn14_path, torch.device("cpu"))
    out = cnn14(wav, "0")
    assert out["features"].shape == (2048,) and out["logits"].shape == (527,)
    assert (out["features"] >= 0).all()  # ReLU(fc1)
    assert cnn14.model.is_official_size and len(cnn14.settings["sha256"]) == 64


def test_dc_offset_is_removed_before_embedding(tiny_weights):
    cnn14 = Cnn14Embedder(tiny_weights / "Cnn14_16k_mAP=0.438.pth", torch.device("cpu"))
    wav = tone(440.0, 2.0)
    a, b = cnn14(wav, "0"), cnn14(wav + 0.3, "0")
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-4, atol=1e-5)


class NotATensor:
    pass


def test_checkpoints_load_with_weights_only(tmp_path):
    # numpy 1.x pickles name numpy.core.multiarray: patch a legacy-format file to those names
    path = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.ones(2)}, "sampler": {"idx": np.arange(4), "n": np.int64(3)}}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert set(load_state_dict(path)) == {"w"}
    # a DataParallel prefix is stripped
    torch.save({"module.a": torch.zeros(1), "module.b": torch.ones(1)}, tmp_path / "dp.pth")
    assert set(load_state_dict(tmp_path / "dp.pth")) == {"a", "b"}
    # arbitrary objects are never unpickled
    torch.save({"model": {"w": torch.ones(1)}, "evil": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(DashflowError, match="evil.pth: cannot load weights"):
        load_state_dict(tmp_path / "evil.pth")


def test_wrong_or_missing_files_fail_in_one_line(tmp_path):
    torch.save({"features.0.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "vggish-10086976.pth")
    with pytest.raises(DashflowError, match="not a VGGish state dict"):
        VGGish.from_weight_file(tmp_path / "vggish-10086976.pth")
    state = Cnn14(channels=(4, 4, 4, 4, 4, 4)).state_dict()
    state.pop("fc1.bias")
    torch.save({"model": state}, tmp_path / "cnn14.pth")
    with pytest.raises(DashflowError, match="missing keys .first: fc1.bias"):
        Cnn14.from_weight_file(tmp_path / "cnn14.pth")
    with pytest.raises(DashflowError) as info:
        locate("cnn14", tmp_path)
    message = str(info.value)
    assert "Cnn14_16k_mAP=0.438.pth" in message and "zenodo.org/record/3987831" in message
    assert "\n" not in message


def test_eval_imports_neither_tokenizer_nor_generation():
    import subprocess

    code = ("import sys, dashflow.eval.cli, dashflow.eval.suite, dashflow.eval.report, dashflow.eval.clap, "
            "dashflow.eval.enhancement, dashflow.eval.reconstruction; "
            "bad = [m for m in sys.modules if m.startswith(('dashflow.tokenizer', 'dashflow.generation'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

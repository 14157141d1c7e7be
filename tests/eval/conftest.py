"""Fixtures for eval tests: random-weight networks saved as the official files, and audio folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import chirp, noise, tone, write_wav

TINY_VGGISH = {"conv_channels": (4, 4, 8, 8, 8, 8), "fc_dims": (32, 32, 128)}
TINY_CNN14 = {"channels": (4, 8, 8, 8, 16, 32), "classes_num": 527}


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics so eval-mode BatchNorm is not an identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    return model


def save_vggish(folder: Path, seed: int = 0, **config) -> Path:
    """A random VGGish saved as ``vggish-10086976.pth`` (a plain state dict, like torchvggish's)."""
    from dashflow.eval.vggish import VGGish

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vggish-10086976.pth"
    torch.save(VGGish(**config).state_dict(), path)
    return path


def save_cnn14(folder: Path, seed: int = 0, **config) -> Path:
    """A random Cnn14 saved as ``Cnn14_16k_mAP=0.438.pth`` in the PANNs layout (``{"model": ...}``
    beside numpy sampler state, which ``weights_only`` loading must accept)."""
    from dashflow.eval.cnn14 import Cnn14

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Cnn14_16k_mAP=0.438.pth"
    model = randomize_batchnorm(Cnn14(**config), seed)
    sampler = {"indexes_per_class": [np.arange(5)], "random_state": np.random.RandomState(0).get_state()}
    torch.save({"iteration": 1000, "model": model.state_dict(), "sampler": sampler}, path)
    return path


def save_tiny_clap(folder: Path, seed: int = 0) -> Path:
    """A tiny random Hugging Face CLAP (HTSAT + RoBERTa) with its processor files."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        RobertaTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barks", "rain on a tin roof", "a man speaks", "birds sing", "a car engine"],
                            vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2),
        audio_config=dict(patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2], window_size=8,
                          hidden_size=16, spec_size=256, num_mel_bins=64, enable_fusion=False),
        projection_dim=16)
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder holding tiny random VGGish and Cnn14 under the official file names."""
    folder = tmp_path_factory.mktemp("weights")
    save_vggish(folder, **TINY_VGGISH)
    save_cnn14(folder, **TINY_CNN14)
    return folder


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory) -> Path:
    return save_tiny_clap(tmp_path_factory.mktemp("clap") / "clap-tiny")


def clip(kind: int, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A varied 16 kHz test clip: tones, chirps or noise depending on ``kind``."""
    if kind % 3 == 0:
        return tone(220.0 * (1 + kind % 5), seconds) + noise(seconds, amp=0.02, seed=seed)
    if kind % 3 == 1:
        return chirp(100.0 + 40 * kind, 5000.0, seconds) + noise(seconds, amp=0.02, seed=seed)
    return noise(seconds, amp=0.05 + 0.01 * kind, seed=seed)


def make_folders(root: Path, n: int = 12, seconds: float = 2.0) -> tuple[Path, Path, Path]:
    """reference/ and generated/ folders of n paired clips (+ sidecars) and a captions file."""
    ref, gen = root / "reference", root / "generated"
    captions = []
    for i in range(n):
        write_wav(ref / f"clip{i:02d}.wav", clip(i, seconds, seed=i))
        write_wav(gen / f"clip{i:02d}.wav", 0.8 * clip(i, seconds, seed=i) + noise(seconds, amp=0.03, seed=100 + i))
        (gen / f"clip{i:02d}.json").write_text(json.dumps({"steps": 25, "cfg": 5.0, "seed": i,
                                                           "checkpoint": "runs/tta/checkpoint-3000",
                                                           "prompt": f"sound number {i}"}))
        captions.append(json.dumps({"audio_id": f"clip{i:02d}", "caption": ["a dog barks", "rain on a tin roof",
                                                                           "birds sing"][i % 3]}))
    (root / "captions.jsonl").write_text("\n".join(captions) + "\n")
    return gen, ref, root / "captions.jsonl"


def run_cli(argv: list[str]) -> int:
    from dashflow.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def generation_run(tmp_path_factory, tiny_weights, tiny_clap) -> dict:
    """`dashflow eval` with fad,fd,kl,is,clap over two generated runs, bad files and unpaired clips."""
    root = tmp_path_factory.mktemp("eval_cli")
    gen, ref, captions = make_folders(root, n=12)
    write_wav(gen / "extra.wav", clip(4, seed=40))                  # no reference, no caption
    write_wav(ref / "ref_only.wav", clip(5, seed=50))               # no generated clip
    (gen / "bad_empty.wav").write_bytes(b"")                        # unreadable: reported, excluded
    (gen / "bad_junk.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    gen2 = root / "generated_6000"
    for path in sorted(gen.glob("clip*.wav"))[:6]:
        write_wav(gen2 / path.name, clip(int(path.stem[4:]) + 1, seed=7))
        record = json.loads(path.with_suffix(".json").read_text())
        record["checkpoint"] = "runs/tta/checkpoint-6000"
        (gen2 / path.with_suffix(".json").name).write_text(json.dumps(record))
    out = root / "report"
    argv = ["eval", "--generated", gen, gen2, "--reference", ref, "--captions", captions,
            "--metrics", "fad,fd,kl,is,clap", "--out", out, "--weights-dir", tiny_weights,
            "--clap-model", tiny_clap, "--cache-dir", root / "cache", "--device", "cpu"]
    code = run_cli(argv)
    return {"code": code, "out": out, "argv": argv, "root": root,
            "report": json.loads((out / "report.json").read_text()) if code in (0, 2) else None}

"""DashengTokenizer on the tiny preset: lengths, chunking, batching, freezing, ISTFT, weight files."""

import json

import pytest
import torch
import torch.nn.functional as F
from dashflow.tokenizer import DashengTokenizer
from dashflow.tokenizer.decoder import ISTFT
from dashflow.tokenizer.semantic import DashengEncoder
from safetensors.torch import load_file, save_file

from dashflow.errors import DashflowError
from tests.conftest import chirp, noise, tone

SR = 16000


@pytest.fixture(scope="module")
def model() -> DashengTokenizer:
    torch.manual_seed(0)
    tok = DashengTokenizer.from_preset("tiny")
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained encoder has
        bn = tok.semantic_encoder.init_bn[1]
        bn.running_mean.uniform_(-60, 0)
        bn.running_var.uniform_(50, 200)
    return tok.eval()


def _clip(frames: int, seed: int, amp: float = 1.0) -> torch.Tensor:
    """A clip giving exactly ``frames`` mel frames: tones + chirp + noise [S]."""
    seconds = (frames - 1) * 160 / SR
    wav = tone(300 + 100 * seed, seconds) + chirp(100, 6000, seconds, amp=0.1) + noise(seconds, seed=seed)
    return amp * torch.from_numpy(wav)


def _reference_semantic(encoder: DashengEncoder, wav: torch.Tensor) -> torch.Tensor:
    """tokenizer.md section 2 written out for one clip: 1008-frame chunks (last padded to >= 4
    frames), positions restarting per chunk, plain softmax attention, no masking."""
    x = encoder.init_bn(encoder.front_end(wav[None])[:, None])
    outputs = []
    for chunk in x.split(1008, dim=-1):
        chunk = F.pad(chunk, (0, max(0, 4 - chunk.shape[-1])))
        h = encoder.patch_embed(chunk)
        h = (h + encoder.time_pos_embed[..., :h.shape[-1]] + encoder.freq_pos_embed).flatten(2).transpose(1, 2)
        for block in encoder.blocks:
            attn, (n, length, dim) = block.attn, h.shape
            q, k, v = attn.qkv(block.norm1(h)).reshape(n, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            weights = (q @ k.transpose(-2, -1) * (dim // attn.num_heads) ** -0.5).softmax(-1)
            h = h + attn.proj((weights @ v).transpose(1, 2).reshape(n, length, dim))
            h = h + block.mlp(block.norm2(h))
        outputs.append(encoder.norm(h))
    return torch.cat(outputs, dim=1)


# ---- lengths -------------------------------------------------------------------------------

def test_ten_seconds_give_250_latents_and_decode_to_640_per_latent(model):
    wav = 0.1 * torch.randn(2, 10 * SR)
    with torch.no_grad():
        encoding = model.encode(wav)
        audio = model.decode(encoding.latents)
    assert encoding.latents.shape == (2, 250, 64) == encoding.semantic.shape == encoding.acoustic.shape
    assert encoding.mask.shape == (2, 250) and encoding.mask.all()
    assert audio.shape == (2, 250 * 640) and torch.isfinite(audio).all()
    torch.testing.assert_close(encoding.latents, encoding.semantic + encoding.acoustic)


@pytest.mark.parametrize("samples", [513, 640, 1234, 19_999, 160_000, 161_440])
def test_latent_length_formula_and_forward_keeps_input_length(model, samples):
    wav = 0.1 * torch.randn(1, samples)
    with torch.no_grad():
        recon, encoding = model(wav)
    assert encoding.latents.shape[1] == (samples // 160 + 1) // 4 == model.latent_length(samples)
    assert recon.shape == (1, samples)


# ---- semantic encoder: reference algorithm, chunking, batching -----------------------------

@pytest.mark.parametrize("frames", [1001, 1010, 1100, 2020])
def test_semantic_encoder_matches_reference_chunking_for_one_clip(model, frames):
    wav = _clip(frames, seed=1)
    with torch.no_grad():
        ours = model.semantic_encoder(wav[None])[0]
        ref = _reference_semantic(model.semantic_encoder, wav)[0, :frames // 4]
    assert ours.shape == ref.shape == (frames // 4, 64)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_padded_batch_gives_each_clip_its_own_result(model):
    clips = [_clip(1100, 0), _clip(601, 1, amp=1e-3), _clip(250, 2)]  # 2 chunks; quiet; short
    clips[2][len(clips[2]) // 2:] = 0.0  # a silent half exercises the per-clip top_db floor
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.stack([F.pad(c, (0, int(lengths.max()) - len(c))) for c in clips])
    with torch.no_grad():
        together = model.encode(batch, lengths)
        for i, clip in enumerate(clips):
            alone = model.encode(clip[None])
            n = alone.latents.shape[1]
            assert together.mask[i].sum() == n and together.mask[i, :n].all()
            for field in ("latents", "semantic", "acoustic"):
                torch.testing.assert_close(getattr(together, field)[i, :n], getattr(alone, field)[0],
                                           atol=2e-5, rtol=1e-5, msg=f"clip {i} {field}")
                assert (getattr(together, field)[i, n:] == 0).all()


def test_chunk_batching_does_not_change_results(model):
    wav = torch.stack([_clip(3100, 3), _clip(3100, 4)])  # 4 chunks each
    encoder = model.semantic_encoder
    with torch.no_grad():
        all_at_once = encoder(wav)
        encoder.chunk_batch_size = 1
        try:
            one_by_one = encoder(wav)
        finally:
            encoder.chunk_batch_size = 32
    torch.testing.assert_close(one_by_one, all_at_once, atol=1e-5, rtol=1e-5)


def test_ten_minute_input_runs_in_bounded_chunk_groups(model):
    seen = []
    hook = model.semantic_encoder.blocks[0].register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape))
    try:
        with torch.no_grad():
            encoding = model.encode(0.05 * torch.randn(1, 600 * SR))
    finally:
        hook.remove()
    assert encoding.latents.shape == (1, 15000, 64)
    assert len(seen) == 2 and max(s[0] for s in seen) <= model.semantic_encoder.chunk_batch_size
    assert all(s[1] <= 252 for s in seen)  # attention never spans more than one 10.08 s chunk


# ---- freezing ------------------------------------------------------------------------------

def test_semantic_branch_is_frozen_and_stays_in_eval_mode():
    tok = DashengTokenizer.from_preset("tiny").train()
    assert tok.training and tok.encoder.patch_embed.training and not tok.semantic_encoder.training
    assert not any(m.training for m in tok.semantic_encoder.modules())
    stats = tok.semantic_encoder.init_bn[1].running_mean.clone()
    recon, encoding = tok(0.1 * torch.randn(2, SR))
    (recon.square().mean() + encoding.latents.square().mean()).backward()
    assert torch.equal(tok.semantic_encoder.init_bn[1].running_mean, stats)
    assert not encoding.semantic.requires_grad and encoding.acoustic.requires_grad
    assert all(p.grad is None and not p.requires_grad for p in tok.semantic_encoder.parameters())
    trainable = tok.trainable_parameters()
    assert all(p.grad is not None for p in trainable)
    frozen = sum(p.numel() for p in tok.semantic_encoder.parameters())
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in tok.parameters()) - frozen


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    tok = DashengTokenizer.from_preset("tiny")
    latents = torch.randn(1, 20, 64)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            tok.enable_gradient_checkpointing()
        tok.zero_grad()
        tok.decode(latents).square().mean().backward()
        grads.append(tok.decoder.backbone.embed.weight.grad.clone())
    assert tok.is_gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1])


# ---- decoder -------------------------------------------------------------------------------

def test_istft_inverts_its_own_analysis():
    istft = ISTFT(1280, 320)
    wav = torch.randn(2, 320 * 60, dtype=torch.float64)
    recon = istft(istft.stft(wav))
    assert recon.shape == wav.shape
    inner = slice(1280, -1280)
    assert (recon[:, inner] - wav[:, inner]).abs().max() < 1e-4
    wav32 = wav.float()
    assert (istft(istft.stft(wav32))[:, inner] - wav32[:, inner]).abs().max() < 1e-4


def test_istft_head_clips_magnitude_and_runs_in_float32(model):
    head = model.decoder.head
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        wav = head(torch.full((1, 10, 64), 1e4))  # exp() would overflow without the clip
    assert wav.dtype == torch.float32 and torch.isfinite(wav).all()


# ---- input checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("wav,lengths,match", [
    (torch.zeros(SR), None, "float waveform"),
    (torch.zeros(1, 400), None, "too short"),
    (torch.zeros(2, SR), torch.tensor([SR, SR + 1]), "lengths must lie"),
    (torch.zeros(2, SR), torch.tensor([SR, 100]), "lengths must lie"),
    (torch.zeros(2, SR), torch.tensor([1.0, 2.0]), "integer tensor"),
])
def test_bad_inputs_raise_one_line_errors(model, wav, lengths, match):
    with pytest.raises(DashflowError, match=match) as info:
        model.encode(wav, lengths)
    assert "\n" not in str(info.value)


# ---- weight files ----------------------------------------------------------------------------

def test_save_and_load_round_trip_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    loaded = DashengTokenizer.from_pretrained(tmp_path / "tok")
    fields = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert fields(loaded.config) == fields(model.config) == DashengTokenizer.preset_config("tiny")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.weights_hash() == model.weights_hash()
    wav = _clip(300, 5)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav)[0], model(wav)[0], atol=0, rtol=0)


def test_subfolder_layout_of_a_pipeline_loads(model, tmp_path):
    model.save_pretrained(tmp_path / "pipeline" / "tokenizer")
    loaded = DashengTokenizer.from_pretrained(tmp_path / "pipeline", subfolder="tokenizer")
    assert loaded.weights_hash() == model.weights_hash()


def test_weights_hash_tracks_every_weight(model):
    clone = DashengTokenizer.from_preset("tiny")
    clone.load_state_dict(model.state_dict())
    before = clone.weights_hash()
    assert before == model.weights_hash() and len(before) == 16
    with torch.no_grad():
        clone.decoder.head.out.bias[0] += 1e-6
    assert clone.weights_hash() != before


def test_load_in_bfloat16_keeps_front_end_buffers_float32(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = DashengTokenizer.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.encoder.front_end.mel_spec.mel_scale.fb.dtype == torch.float32


def _broken_copy(model, folder, edit):
    model.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.pop("decoder.head.out.bias"), "1 missing .*decoder.head.out.bias"),
    (lambda s: s.update(extra=torch.zeros(1)), "1 unexpected .*extra"),
    (lambda s: s.update({"encoder.norm.weight": torch.zeros(65)}), "shape mismatches .*encoder.norm.weight"),
])
def test_mismatched_weights_raise_one_line(model, tmp_path, edit, match):
    folder = _broken_copy(model, tmp_path, edit)
    with pytest.raises(DashflowError, match=match) as info:
        DashengTokenizer.from_pretrained(folder)
    assert "\n" not in str(info.value) and "model.safetensors" in str(info.value)


def test_leftover_classifier_head_is_ignored(model, tmp_path):
    folder = _broken_copy(model, tmp_path, lambda s: s.update({"encoder.model.outputlayer.weight": torch.ones(2)}))
    assert DashengTokenizer.from_pretrained(folder).weights_hash() == model.weights_hash()


@pytest.mark.parametrize("setup,match", [
    (lambda d: None, "tokenizer folder not found"),
    (lambda d: d.mkdir(), "config.json not found"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}")), "no model.safetensors"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{oops")), "cannot parse config.json"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"hop_length": 256}')), "hop_length must be 160"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}"), (d / "model.safetensors").write_bytes(b"xx")),
     "unreadable weights"),
])
def test_missing_or_broken_checkpoint_folders(tmp_path, setup, match):
    folder = tmp_path / "tok"
    setup(folder)
    with pytest.raises(DashflowError, match=match):
        DashengTokenizer.from_pretrained(folder)


def test_hub_ids_go_through_snapshot_download(model, tmp_path, monkeypatch):
    import huggingface_hub

    from dashflow import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: True)  # as on a machine online
    model.save_pretrained(tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = DashengTokenizer.from_pretrained("mispeech/dashengtokenizer")
    assert calls == [("mispeech/dashengtokenizer", ["*.json", "*.safetensors"])]
    assert loaded.weights_hash() == model.weights_hash()

    def offline(**_kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(DashflowError, match="not downloadable .*couldn't connect") as info:
        DashengTokenizer.from_pretrained("mispeech/dashengtokenizer")
    assert "\n" not in str(info.value)


def test_unreachable_hub_and_local_looking_paths_fail_at_once(tmp_path, monkeypatch):
    """No network wait: a path whose first folder exists is local; with the Hub unreachable (here
    HF_HUB_OFFLINE) a repo id fails before any download is tried."""
    import huggingface_hub

    from dashflow import hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **_: pytest.fail("tried the network"))
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DashflowError, match="runs/tokenizer: tokenizer folder not found"):
        DashengTokenizer.from_pretrained("runs/tokenizer")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.hub_reachable()
    with pytest.raises(DashflowError, match="Hugging Face Hub is unreachable"):
        DashengTokenizer.from_pretrained("mispeech/dashengtokenizer")


# ---- bare Dasheng checkpoints (PyPI dasheng format) ------------------------------------------

def _dasheng_file(path, encoder: DashengEncoder, **config) -> None:
    base = {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": [64, 4], "patch_stride": [64, 4],
            "target_length": 1008, "n_mels": 64, "pooling": "mean"}
    torch.save({"model": encoder.state_dict(), "config": {**base, **config}}, path)


def test_bare_dasheng_checkpoint_loads_into_the_semantic_branch(tmp_path):
    torch.manual_seed(1)
    encoder = DashengEncoder(64, 2, 4)
    _dasheng_file(tmp_path / "dasheng_tiny.pt", encoder)
    tok = DashengTokenizer.from_preset("tiny")
    tok.load_semantic_checkpoint(tmp_path / "dasheng_tiny.pt")
    for key, value in encoder.state_dict().items():
        assert torch.equal(tok.semantic_encoder.state_dict()[key], value), key


@pytest.mark.parametrize("config,match", [({"embed_dim": 768}, "embed_dim=768"),
                                          ({"patch_size": [64, 2]}, "patch_size")])
def test_dasheng_checkpoint_of_another_size_is_refused(tmp_path, config, match):
    _dasheng_file(tmp_path / "other.pt", DashengEncoder(64, 2, 4), **config)
    with pytest.raises(DashflowError, match=match):
        DashengTokenizer.from_preset("tiny").load_semantic_checkpoint(tmp_path / "other.pt")


class _NotATensor:
    """A custom class: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


def test_unreadable_dasheng_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    torch.save({"model": {}, "config": _NotATensor()}, tmp_path / "code.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    tok = DashengTokenizer.from_preset("tiny")
    for name, match in (("bad.pt", "not a readable"), ("code.pt", "not a readable"),
                        ("other.pt", "expected a dasheng checkpoint"), ("missing.pt", "not found")):
        with pytest.raises(DashflowError, match=match):
            tok.load_semantic_checkpoint(tmp_path / name)


def test_config_json_is_official_field_names(model, tmp_path):
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    official = {"embed_dim", "depth", "num_heads", "n_mels_patch", "hop_length", "upsample_tokens",
                "decoder_embed_dim", "decoder_depth", "decoder_intermediate_size", "istft_n_fft", "istft_hop"}
    assert {k for k in saved if not k.startswith("_")} == official

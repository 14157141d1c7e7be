"""LayerFusion DiT backbone: layout, block maths, RoPE, masks, init, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from dashflow.generation.model.dit import (
    GEGLU,
    Attention,
    LayerFusionAudioDiT,
    RotaryEmbedding,
    rotate_half,
    timestep_embedding,
)

C, DTA, D, H = 8, 12, 32, 4


def tiny_backbone(depth: int = 3) -> LayerFusionAudioDiT:
    torch.manual_seed(0)
    return LayerFusionAudioDiT(in_chans=C, embed_dim=D, depth=depth, num_heads=H,
                               context_dim=DTA, ta_context_dim=DTA)


def randomise_zero_inits(net: LayerFusionAudioDiT) -> None:
    """Give adaLN and cross-attention outputs weights so time and context matter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in [net.time_ada_final] + [m for blk in net.blocks()
                                           for m in (blk.adaln.time_ada, blk.cross_attn.proj)]:
            lin.weight.copy_(0.1 * torch.randn(lin.weight.shape, generator=g))
            lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g))


def inputs(b: int = 2, t: int = 10, l: int = 5):
    g = torch.Generator().manual_seed(2)
    return (torch.randn(b, C, t, generator=g), torch.tensor([700.0, 250.0][:b]),
            torch.randn(b, t, DTA, generator=g), torch.randn(b, l, DTA, generator=g))


@pytest.mark.parametrize("depth, counts", [(11, (5, 11)), (32, (16, 33)), (3, (1, 3))])
def test_block_layout(depth, counts):
    with torch.device("meta"):
        net = LayerFusionAudioDiT(depth=depth)
    assert len(net.in_blocks) == len(net.out_blocks) == counts[0]
    assert len(net.blocks()) == counts[1]
    assert all(b.skip_linear is not None for b in net.out_blocks)
    assert all(b.skip_linear is None for b in [*net.in_blocks, net.mid_block])


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 1.0, 999.0])
    emb = timestep_embedding(t)
    k = torch.arange(128, dtype=torch.float64)
    f = torch.exp(-math.log(1e4) * k / 128)
    want = torch.cat([torch.cos(t.double()[:, None] * f), torch.sin(t.double()[:, None] * f)], -1)
    assert emb.shape == (3, 256)
    torch.testing.assert_close(emb.double(), want, atol=1e-4, rtol=0)


def test_rope_buffer_and_rotate_half_layout():
    rope = RotaryEmbedding(64)
    want = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    torch.testing.assert_close(rope.inv_freq.double(), want)
    assert "inv_freq" in rope.state_dict()  # persistent: the official file stores it
    x = torch.randn(1, 1, 6, 64)
    q, _ = rope(x, x)
    p = 5
    ang = p * rope.inv_freq
    x1, x2 = x[0, 0, p, :32], x[0, 0, p, 32:]
    torch.testing.assert_close(q[0, 0, p], torch.cat([x1 * ang.cos() - x2 * ang.sin(),
                                                      x2 * ang.cos() + x1 * ang.sin()]))
    torch.testing.assert_close(rotate_half(torch.arange(4.0)), torch.tensor([-2.0, -3.0, 0.0, 1.0]))


def test_rope_scores_depend_only_on_offset():
    rope = RotaryEmbedding(16)
    q0, k0 = torch.randn(16), torch.randn(16)
    q, k = rope(q0.expand(1, 1, 12, 16), k0.expand(1, 1, 12, 16))
    scores = q[0, 0] @ k[0, 0].T
    torch.testing.assert_close(scores[2, 5], scores[6, 9])
    torch.testing.assert_close(scores[7, 1], scores[10, 4])
    assert not torch.allclose(scores[2, 5], scores[2, 6])


def test_attention_key_mask_hides_keys():
    attn = Attention(D, H, rope=True)
    x = torch.randn(1, 7, D)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    y = attn(x, key_mask=mask)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 3, D)
    torch.testing.assert_close(attn(x2, key_mask=mask)[:, :4], y[:, :4])


def test_attention_uses_qk_layernorm_before_rope():
    attn = Attention(D, H, rope=True)
    x = torch.randn(2, 5, D)
    hd = D // H

    def heads(t):
        return t.view(2, 5, H, hd).transpose(1, 2)

    q = F.layer_norm(heads(attn.to_q(x)), (hd,), attn.norm_q.weight, attn.norm_q.bias)
    k = F.layer_norm(heads(attn.to_k(x)), (hd,), attn.norm_k.weight, attn.norm_k.bias)
    q, k = attn.rotary(q, k)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    want = attn.proj((w @ heads(attn.to_v(x))).transpose(1, 2).reshape(2, 5, D))
    torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=1e-5)


def test_geglu_is_a_times_gelu_b():
    geglu = GEGLU(6, 4)
    x = torch.randn(3, 6)
    a, b = geglu.proj(x).split(4, dim=-1)
    torch.testing.assert_close(geglu(x), a * F.gelu(b, approximate="none"))


def test_reference_init():
    net = tiny_backbone()
    zero = [net.time_ada_final] + [m for b in net.blocks() for m in (b.adaln.time_ada, b.cross_attn.proj)]
    assert all(not m.weight.any() and not m.bias.any() for m in zero)
    assert net.final_block.linear.weight.abs().sum() > 0  # the output Linear is NOT zeroed
    assert net.final_block.final_layer.weight.abs().sum() > 0
    assert not net.final_block.final_layer.bias.any() and not net.patch_embed.proj.bias.any()
    w = net.mid_block.attn.to_q.weight
    assert w.abs().max() <= math.sqrt(6 / (2 * D)) + 1e-6  # xavier-uniform bound


def test_block_equals_reference_formula():
    """Order, gates (tanh(1-g1) vs (1-g2)), chunk order, skip fusion and ta-context addition."""
    net = tiny_backbone()
    randomise_zero_inits(net)
    blk = net.out_blocks[0]
    g = torch.Generator().manual_seed(3)
    x, skip = torch.randn(2, 6, D, generator=g), torch.randn(2, 6, D, generator=g)
    tt, ta = torch.randn(2, D, generator=g), torch.randn(2, 6, DTA, generator=g)
    ctx = torch.randn(2, 4, D, generator=g)
    got = blk(x, tt, ta, ctx, None, None, skip)

    h = blk.skip_linear(blk.skip_norm(torch.cat([x, skip], -1)))
    sh1, sc1, g1, sh2, sc2, g2 = blk.adaln.time_ada(tt)[:, None, :].chunk(6, dim=-1)
    h = h + torch.tanh(1 - g1) * blk.attn(blk.norm1(h) * (1 + sc1) + sh1)
    h = h + blk.ta_context_projection(blk.ta_context_norm(ta))
    h = h + blk.cross_attn(blk.norm2(h), blk.norm_context(ctx))
    h = h + (1 - g2) * blk.mlp(blk.norm3(h) * (1 + sc2) + sh2)
    torch.testing.assert_close(got, h)
    assert blk.ta_context_projection.bias is None


def test_zero_adaln_gates_start_at_tanh1_and_1():
    net = tiny_backbone()
    blk = net.mid_block
    x, tt = torch.randn(1, 5, D), torch.randn(1, D)
    ta, ctx = torch.randn(1, 5, DTA), torch.randn(1, 3, D)
    h = x + math.tanh(1.0) * blk.attn(blk.norm1(x))
    h = h + blk.ta_context_projection(blk.ta_context_norm(ta))  # cross-attention starts at 0
    h = h + blk.mlp(blk.norm3(h))
    torch.testing.assert_close(blk(x, tt, ta, ctx, None, None), h)


def test_forward_shapes_and_scalar_timestep():
    net = tiny_backbone()
    randomise_zero_inits(net)
    x, t, ta, ctx = inputs()
    y = net(x, t, ta, ctx)
    assert y.shape == x.shape
    torch.testing.assert_close(net(x, torch.tensor(700.0), ta, ctx), net(x, torch.tensor([700.0, 700.0]), ta, ctx))
    with pytest.raises(ValueError, match="time_aligned_context"):
        net(x, t, ta[:, :-1], ctx)


def test_float_timesteps_are_not_truncated_in_the_backbone():
    net = tiny_backbone()
    randomise_zero_inits(net)
    x, _, ta, ctx = inputs()
    a = net(x, torch.tensor([500.0, 500.0]), ta, ctx)
    b = net(x, torch.tensor([500.5, 500.5]), ta, ctx)
    assert (a - b).abs().max() > 1e-6


def test_masks_hide_padded_context_and_frames():
    net = tiny_backbone()
    randomise_zero_inits(net)
    x, t, ta, ctx = inputs()
    ctx_mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    x_mask = torch.tensor([[True] * 6 + [False] * 4, [True] * 10])
    y = net(x, t, ta, ctx, x_mask, ctx_mask)
    ctx2 = ctx.clone()
    ctx2[0, 3:] = 5.0
    torch.testing.assert_close(net(x, t, ta, ctx2, x_mask, ctx_mask), y)
    x2, ta2 = x.clone(), ta.clone()
    x2[0, :, 6:] = 3.0
    ta2[0, 6:] = 3.0
    y2 = net(x2, t, ta2, ctx, x_mask, ctx_mask)
    # frames 0..4 cannot see the padding; frame 5 neighbours it through the final k=3 conv
    torch.testing.assert_close(y2[0, :, :5], y[0, :, :5])
    torch.testing.assert_close(y2[1], y[1])
    assert not torch.allclose(net(x, t, ta, ctx2), net(x, t, ta, ctx))  # without masks it leaks


def test_unet_skips_are_last_in_first_out():
    net = LayerFusionAudioDiT(in_chans=C, embed_dim=D, depth=7, num_heads=H, context_dim=DTA,
                              ta_context_dim=DTA)
    outs, skips = [], []
    for blk in net.in_blocks:
        blk.register_forward_hook(lambda m, a, out: outs.append(out))
    for blk in net.out_blocks:
        blk.register_forward_pre_hook(lambda m, args: skips.append(args[6]))
    net(*inputs())
    assert len(outs) == len(skips) == 3
    for i, skip in enumerate(skips):
        assert skip is outs[-1 - i]


def test_gradient_checkpointing_matches():
    net = tiny_backbone()
    randomise_zero_inits(net)
    x, t, ta, ctx = inputs()

    def run():
        net.zero_grad()
        y = net(x, t, ta, ctx)
        (y ** 2).mean().backward()
        return y.detach(), [p.grad.clone() for p in net.parameters()]

    y0, g0 = run()
    for blk in net.blocks():
        blk.gradient_checkpointing = True
    y1, g1 = run()
    torch.testing.assert_close(y1, y0)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b)


def test_model_level_gradient_checkpointing_switch():
    from dashflow.generation.model.audiogen import AudioGenModel

    torch.manual_seed(0)
    model = AudioGenModel.from_preset("tiny", dit_depth=2)
    randomise_zero_inits(model.backbone)
    args = (torch.randn(2, 16, 6), torch.tensor([900.0, 100.0]), torch.randn(2, 3, 32),
            torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool))

    def grads():
        model.zero_grad()
        model(*args).velocity.square().mean().backward()
        return [p.grad.clone() for p in model.backbone.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()  # diffusers' switch reaches every block
    assert all(blk.gradient_checkpointing for blk in model.backbone.blocks())
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b)

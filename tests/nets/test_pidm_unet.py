"""Tests of PIDM's texture cross-attention, texture encoder and noise predictor."""

import math

import pytest
import torch

from lightning_modules.nets.cross_attention import TextureCrossAttention
from lightning_modules.nets.pidm_unet import PIDMUNet, PIDMUNetConfig, TextureEncoder

SMALL = dict(
    model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8, 4), image_size=16,
    embed_channels=32,
)  # fmt: skip
POSE_CHANNELS = 4


def small_net(learn_sigma: bool = True, **changes) -> PIDMUNet:
    return PIDMUNet(POSE_CHANNELS, PIDMUNetConfig(**{**SMALL, **changes}), learn_sigma)


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Re-draw every parameter so that zero-initialised layers do not hide anything."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.1)
    return module


def _inputs(net: PIDMUNet, batch: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y_t = torch.randn(batch, 3, size, size, generator=g)
    pose = torch.rand(batch, net.in_channels - 3, size, size, generator=g)
    source = torch.randn(batch, 3, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return y_t, t, pose, source


def _reference_attention(attn: TextureCrossAttention, h: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Per-head einsum attention with q and k each scaled by d^(-1/4), as the official legacy code computes it."""
    b, c, hh, ww = h.shape
    x = h.reshape(b, c, -1)
    q = attn.to_q(attn.norm(x))
    k, v = attn.to_kv(f.reshape(b, c, -1)).chunk(2, dim=1)
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = (z.reshape(b * heads, d, -1) for z in (q, k, v))
    scale = 1 / math.sqrt(math.sqrt(d))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    out = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    return h + attn.proj_out(out).reshape(b, c, hh, ww)


@pytest.mark.parametrize("num_heads", [1, 4])
def test_cross_attention_matches_einsum_reference(num_heads):
    attn = _randomize(TextureCrossAttention(16, num_heads))
    h, f = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(attn(h, f), _reference_attention(attn, h, f), atol=1e-5, rtol=1e-5)


def test_fresh_cross_attention_is_identity_and_depends_on_texture_once_trained():
    attn = TextureCrossAttention(8)
    h = torch.randn(1, 8, 4, 4)
    assert torch.equal(attn(h, torch.randn(1, 8, 4, 4)), h)
    _randomize(attn)
    assert not torch.allclose(attn(h, torch.randn(1, 8, 4, 4)), attn(h, torch.randn(1, 8, 4, 4)))


def test_cross_attention_rejects_mismatched_texture_and_bad_heads():
    with pytest.raises(ValueError, match="num_heads"):
        TextureCrossAttention(10, num_heads=4)
    with pytest.raises(ValueError, match="do not match"):
        TextureCrossAttention(8)(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4))


def test_texture_encoder_returns_every_block_output():
    enc = TextureEncoder(3, 16, (1, 2, 2), 2)
    features = enc(torch.randn(2, 3, 16, 16))
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [(16, 16, 16)] * 3 + [(16, 8, 8), (32, 8, 8), (32, 8, 8), (32, 4, 4), (32, 4, 4), (32, 4, 4)]
    kept = enc(torch.randn(2, 3, 16, 16), keep=(8, 4))
    assert [tuple(f.shape[1:]) for f in kept] == [(32, 4, 4), (32, 8, 8)]
    assert not any("emb" in name for name, _ in enc.named_parameters())


def test_tdb_placement_and_feature_indexing():
    net = small_net()
    encoder = [b.texture_index for b in net.encoder]
    decoder = [b.texture_index for b in net.decoder]
    # 9 encoder features; TDBs after the last ResBlock of the 8² and 4² levels, decoder block 1 of those levels.
    assert encoder == [None, None, None, None, 5, None, None, 8]
    assert net.middle.texture_index == 8
    assert decoder == [None, 7, None, None, 4, None, None, None, None]
    assert net.texture_feature_indices == (4, 5, 7, 8)
    assert [b.tail is not None for b in net.decoder] == [False, False, True, False, False, True, False, False, False]


def test_forward_shapes_and_fixed_variance_output():
    net = _randomize(small_net())
    y_t, t, pose, source = _inputs(net)
    assert net(y_t, t, pose, source=source).shape == (2, 6, 16, 16)
    fixed = small_net(learn_sigma=False)
    assert fixed(y_t, t, pose, source=source).shape == (2, 3, 16, 16)


def test_precomputed_texture_equals_source_and_matters():
    net = _randomize(small_net()).eval()
    y_t, t, pose, source = _inputs(net)
    texture = net.encode(source)
    all_features = net.texture_encoder(source)
    for k, feature in zip(net.texture_feature_indices, texture):
        assert torch.equal(feature, all_features[k])
    with torch.no_grad():
        out = net(y_t, t, pose, source=source)
        assert torch.equal(net(y_t, t, pose, texture=texture), out)
        assert not torch.allclose(net(y_t, t, pose, source=torch.zeros_like(source)), out)


def test_texture_features_batch_along_dim0():
    net = _randomize(small_net()).eval()
    y_t, t, pose, source = _inputs(net)
    null = torch.zeros_like(source)
    with torch.no_grad():
        cond_tex, null_tex = net.encode(source), net.encode(null)
        batched = [torch.cat(pair) for pair in zip(cond_tex, null_tex)]
        out = net(y_t.repeat(2, 1, 1, 1), t.repeat(2), pose.repeat(2, 1, 1, 1), texture=batched)
        separate = torch.cat([net(y_t, t, pose, texture=cond_tex), net(y_t, t, pose, texture=null_tex)])
    torch.testing.assert_close(out, separate, atol=1e-5, rtol=1e-5)


def test_every_parameter_is_trained():
    net = _randomize(small_net(dropout=0.1)).train()
    y_t, t, pose, source = _inputs(net)
    net(y_t, t, pose, source=source).square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.slow
def test_gradient_checkpointing_matches():
    net = _randomize(small_net())
    ckpt = small_net(gradient_checkpointing=True)
    ckpt.load_state_dict(net.state_dict())
    y_t, t, pose, source = _inputs(net)
    grads = []
    for model in (net, ckpt):
        out = model(y_t, t, pose, source=source)
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_multi_head_and_other_layouts_run():
    layout = {"channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (16,)}
    net = small_net(**layout, num_heads=2)
    assert [b.cross_attn.num_heads for b in net.encoder if b.cross_attn is not None] == [2]
    y_t, t, pose, source = _inputs(net, size=32)  # any size divisible by 2^(levels-1) works
    assert net(y_t, t, pose, source=source).shape == (2, 6, 32, 32)


def test_bad_arguments_are_rejected():
    net = small_net()
    y_t, t, pose, source = _inputs(net)
    with pytest.raises(ValueError, match="exactly one of source and texture"):
        net(y_t, t, pose)
    with pytest.raises(ValueError, match="exactly one of source and texture"):
        net(y_t, t, pose, source=source, texture=net.encode(source))
    with pytest.raises(ValueError, match="feature maps"):
        net(y_t, t, pose, texture=net.encode(source)[:-1])
    with pytest.raises(ValueError, match="channels"):
        net(y_t, t, pose[:, :2], source=source)
    with pytest.raises(ValueError, match="not divisible"):
        net(y_t[..., :10, :10], t, pose[..., :10, :10], source=source[..., :10, :10])
    with pytest.raises(ValueError, match=r"\[32\] match no level"):
        small_net(attention_resolutions=(32, 8))


def test_norm_channels_per_group_reaches_the_texture_encoder_and_cross_attention():
    net = small_net(norm_channels_per_group=4)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.num_channels == 4 * m.num_groups for m in norms)
    encoder_norms = [m for m in net.texture_encoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    cross_attention_norms = [m.norm for m in net.modules() if isinstance(m, TextureCrossAttention)]
    assert encoder_norms and cross_attention_norms
    assert all(m.num_channels == 4 * m.num_groups for m in [*encoder_norms, *cross_attention_norms])
    small_net().load_state_dict(net.state_dict())


def test_widths_the_official_grouping_does_not_divide_build_and_regroup():
    # 24 channels give 48-channel levels, which min(32, C) groups cannot split; the network still builds and runs.
    net = small_net(model_channels=24, norm_channels_per_group=4)
    assert {m.num_channels for m in net.modules() if isinstance(m, torch.nn.GroupNorm)} >= {24, 48}
    assert all(m.num_channels == 4 * m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm))
    y_t, t, pose, source = _inputs(net)
    assert net(y_t, t, pose, source=source).shape == (2, 6, 16, 16)

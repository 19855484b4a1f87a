"""Tests of the shared network building blocks (layers, residual blocks, attention, SPADE)."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.nets.attention import SelfAttention2d
from lightning_modules.nets.blocks import ResBlock
from lightning_modules.nets.layers import (
    GroupNorm32,
    normalization,
    regroup_normalization,
    run_block,
    timestep_embedding,
    zero_module,
)
from lightning_modules.nets.spade import SPADEGroupNorm, SPADEResBlock


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Re-draw every parameter so that zero-initialised layers take part."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)
    return module


def test_timestep_embedding_is_cos_then_sin_with_official_frequencies():
    t = torch.tensor([0, 7, 999])
    emb = timestep_embedding(t, 8)
    assert emb.dtype == torch.float32 and emb.shape == (3, 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = [math.exp(-math.log(10000) * i / 4) for i in range(4)]
    expected = [math.cos(7 * f) for f in freqs] + [math.sin(7 * f) for f in freqs]
    torch.testing.assert_close(emb[1], torch.tensor(expected), rtol=0, atol=1e-6)


def test_timestep_embedding_odd_dim_is_zero_padded():
    emb = timestep_embedding(torch.tensor([3]), 5)
    assert emb.shape == (1, 5) and emb[0, -1] == 0


def test_groupnorm32_computes_in_float32_and_returns_input_dtype():
    norm = _randomize(GroupNorm32(4, 8))
    x = (torch.randn(2, 8, 4, 4) * 50 + 100).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    expected = F.group_norm(x.float(), 4, norm.weight, norm.bias, 1e-5).to(torch.bfloat16)
    assert torch.equal(out, expected)


# 48 and 72: widths of a 24-channel network, which the official min(32, C) groups do not divide.
@pytest.mark.parametrize(("channels", "groups"), [(8, 8), (24, 24), (32, 32), (96, 32), (48, 24), (72, 24)])
def test_normalization_uses_at_most_32_groups(channels, groups):
    norm = normalization(channels)
    assert isinstance(norm, GroupNorm32) and norm.num_groups == groups and norm.eps == 1e-5


def test_zero_module_zeroes_every_parameter():
    conv = zero_module(torch.nn.Conv2d(3, 4, 3))
    assert all(torch.count_nonzero(p) == 0 for p in conv.parameters())


@pytest.mark.parametrize(
    ("resample", "expected"),
    [
        ("none", lambda x: x),
        ("down", lambda x: F.avg_pool2d(x, 2)),
        ("up", lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
    ],
)
def test_resblock_starts_as_parameter_free_resampling(resample, expected):
    block = ResBlock(8, emb_channels=16, resample=resample)
    x = torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(block(x, torch.randn(2, 16)), expected(x))


def test_resblock_without_embedding_has_no_embedding_parameters():
    block = ResBlock(8, 16)
    assert block.emb_proj is None
    assert not any("emb" in name for name, _ in block.named_parameters())
    assert block(torch.randn(1, 8, 4, 4)).shape == (1, 16, 4, 4)


def test_resblock_applies_scale_shift_after_norm():
    block = _randomize(ResBlock(8, 16, emb_channels=4))
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 4)
    h = block.in_conv(F.silu(block.in_norm(x)))
    scale, shift = block.emb_proj(F.silu(emb))[..., None, None].chunk(2, dim=1)
    h = block.out_conv(F.silu(block.out_norm(h) * (1 + scale) + shift))
    torch.testing.assert_close(block(x, emb), block.skip(x) + h)
    with pytest.raises(ValueError, match="without emb"):
        block(x)


def _einsum_attention(x, qkv_weight, qkv_bias, heads):
    """Attention with explicit einsums and a float32 softmax, on a [q | k | v] layout."""
    b, c, h, w = x.shape
    qkv = F.conv1d(x.reshape(b, c, h * w), qkv_weight, qkv_bias)
    q, k, v = qkv.reshape(b, 3, heads, c // heads, h * w).unbind(1)
    weights = torch.softmax(torch.einsum("bhdt,bhds->bhts", q, k) / math.sqrt(c // heads), dim=-1)
    return torch.einsum("bhts,bhds->bhdt", weights, v).reshape(b, c, h * w)


@pytest.mark.parametrize("kwargs", [{"num_heads": 2}, {"head_channels": 8}])
def test_self_attention_matches_einsum_reference(kwargs):
    attn = _randomize(SelfAttention2d(32, **kwargs))
    assert attn.num_heads == (2 if "num_heads" in kwargs else 4)
    x = torch.randn(2, 32, 4, 6)
    a = _einsum_attention(attn.norm(x), attn.qkv.weight, attn.qkv.bias, attn.num_heads)
    expected = x + attn.proj_out(a).reshape_as(x)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_self_attention_starts_as_identity_and_validates_heads():
    x = torch.randn(1, 16, 4, 4)
    assert torch.equal(SelfAttention2d(16, num_heads=4)(x), x)
    with pytest.raises(ValueError, match="exactly one"):
        SelfAttention2d(16, num_heads=2, head_channels=8)
    with pytest.raises(ValueError, match="multiple"):
        SelfAttention2d(16, head_channels=5)


def test_spade_groupnorm_modulates_with_resized_labels():
    spade = _randomize(SPADEGroupNorm(8, 3, hidden_channels=5))
    assert sum(p.numel() for p in spade.parameters()) == (3 * 9 * 5 + 5) + 2 * (5 * 9 * 8 + 8)
    x, y = torch.randn(2, 8, 4, 6), torch.randn(2, 3, 8, 12)
    y_small = y[:, :, ::2, ::2]  # nearest down-sampling by 2 picks the top-left pixel
    hidden = F.relu(spade.label_conv(y_small))
    expected = F.group_norm(x, 8) * (1 + spade.gamma_conv(hidden)) + spade.beta_conv(hidden)
    torch.testing.assert_close(spade(x, y), expected)


def test_spade_resblock_applies_spade_then_timestep_modulation():
    block = _randomize(SPADEResBlock(8, 4, 6, 3, spade_hidden_channels=5, resample="up"))
    x, emb, y = torch.randn(2, 8, 4, 4), torch.randn(2, 6), torch.randn(2, 3, 16, 16)
    up = lambda v: F.interpolate(v, scale_factor=2, mode="nearest")  # noqa: E731
    h = block.in_conv(up(F.silu(block.in_norm(x, y))))
    scale, shift = block.emb_proj(F.silu(emb))[..., None, None].chunk(2, dim=1)
    h = block.out_conv(F.silu(block.out_norm(h, y) * (1 + scale) + shift))
    out = block(x, emb, y)
    assert out.shape == (2, 4, 8, 8)
    torch.testing.assert_close(out, block.skip(up(x)) + h)


def test_regrouped_normaliser_keeps_the_per_channel_means_that_single_channel_groups_remove():
    norm = normalization(32)  # official grouping: 32 groups of one channel
    x, offset = torch.randn(2, 32, 8, 8), torch.randn(1, 32, 1, 1)
    torch.testing.assert_close(norm(x), norm(x + offset), atol=1e-4, rtol=0)
    regroup_normalization(norm, 4)
    assert norm.num_groups == 8
    assert (norm(x) - norm(x + offset)).abs().max() > 0.1


def test_regrouping_reaches_spade_and_rejects_widths_it_does_not_divide():
    module = torch.nn.ModuleDict({"plain": normalization(64), "spade": SPADEGroupNorm(64, 3, 8)})
    regroup_normalization(module, 8)
    assert module["plain"].num_groups == module["spade"].num_groups == 8
    with pytest.raises(ValueError, match="plain: 64 channels cannot form groups of 24"):
        regroup_normalization(module, 24)


class _CountingBlock(torch.nn.Module):
    """A linear map plus a nonlinearity that counts its forward calls and takes an optional second input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.linear(x) + (0 if shift is None else shift))


@pytest.mark.parametrize("shift", [None, torch.ones(4)])
def test_run_block_checkpointed_recomputes_in_backward_with_the_same_gradients(shift):
    x = torch.randn(3, 4)
    plain, checkpointed = _CountingBlock(), _CountingBlock()
    checkpointed.load_state_dict(plain.state_dict())
    expected = run_block(plain, x, shift, checkpointed=False)
    expected.sum().backward()
    out = run_block(checkpointed, x, shift, checkpointed=True)
    out.sum().backward()
    assert torch.equal(out, expected)
    assert torch.equal(checkpointed.linear.weight.grad, plain.linear.weight.grad)
    assert (plain.calls, checkpointed.calls) == (1, 2)  # the forward ran again in the backward pass


def test_run_block_without_gradients_is_a_plain_call():
    block = _CountingBlock()
    with torch.no_grad():
        run_block(block, torch.randn(2, 4), checkpointed=True)
    assert block.calls == 1

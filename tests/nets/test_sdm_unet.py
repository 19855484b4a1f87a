"""Tests of the SDM denoiser network's structure and behaviour."""

import pytest
import torch

from lightning_modules.nets.attention import SelfAttention2d
from lightning_modules.nets.blocks import ResBlock
from lightning_modules.nets.sdm_unet import Downsample, SDMUNet, SDMUNetConfig, Upsample
from lightning_modules.nets.spade import SPADEGroupNorm, SPADEResBlock

SMALL = dict(
    model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), image_size=16,
    num_head_channels=16, spade_hidden_channels=16,
)  # fmt: skip


def small(**changes) -> SDMUNetConfig:
    return SDMUNetConfig(**{**SMALL, **changes})


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.05)
    return module


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("label_channels", "millions"), [(151, 660.61), (20, 653.06), (36, 653.98), (184, 662.51)]
)
def test_official_256_configuration_parameter_count(label_channels, millions):
    with torch.device("meta"):
        net = SDMUNet(label_channels)
    assert abs(_params(net) / 1e6 - millions) < 0.005
    assert abs(_params(net.time_embed) / 1e6 - 1.313) < 0.0005
    spade = sum(_params(m) for m in net.modules() if isinstance(m, SPADEGroupNorm))
    assert sum(isinstance(m, SPADEGroupNorm) for m in net.modules()) == 50
    if label_channels == 151:
        assert abs(spade / 1e6 - 107.88) < 0.005


def test_official_256_block_layout():
    with torch.device("meta"):
        net = SDMUNet(151)
    assert len(net.encoder) == 17 and len(net.decoder) == 18
    encoder_heads = [b.attn.num_heads for b in net.encoder if b.attn is not None]
    decoder_heads = [b.attn.num_heads for b in net.decoder if b.attn is not None]
    assert encoder_heads == [8, 8, 16, 16, 16, 16]
    assert decoder_heads == [16] * 6 + [8] * 3
    assert net.middle.attn.num_heads == 16
    assert [b.upsample is not None for b in net.decoder] == [False, False, True] * 5 + [False] * 3
    assert not any(isinstance(m, SPADEGroupNorm) for m in net.encoder.modules())
    assert net.decoder[0].res.in_conv.in_channels == 2048 and net.decoder[5].res.in_conv.in_channels == 1536


def test_head_count_mode_uses_num_heads_upsample_in_decoder():
    net = SDMUNet(3, small(num_head_channels=-1, num_heads=2, num_heads_upsample=4))
    assert {b.attn.num_heads for b in net.encoder if b.attn is not None} == {2}
    assert net.middle.attn.num_heads == 2
    assert {b.attn.num_heads for b in net.decoder if b.attn is not None} == {4}


@pytest.mark.parametrize(("learn_sigma", "channels"), [(True, 6), (False, 3)])
def test_forward_shapes_non_square_and_zero_initialised_output(learn_sigma, channels):
    net = SDMUNet(4, small(), learn_sigma=learn_sigma)
    x, t, y = torch.randn(2, 3, 16, 32), torch.tensor([0, 999]), torch.rand(2, 4, 16, 32)
    out = net(x, t, y)
    assert out.shape == (2, channels, 16, 32)
    assert torch.count_nonzero(out) == 0  # official zero-init of the output conv


def test_label_map_only_reaches_the_decoder():
    net = _randomize(SDMUNet(4, small())).eval()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    features = []
    net.encoder[-1].register_forward_hook(lambda module, args, out: features.append(out))
    out_a = net(x, t, torch.rand(1, 4, 16, 16))
    out_b = net(x, t, torch.zeros(1, 4, 16, 16))
    assert torch.equal(features[0], features[1])
    assert not torch.allclose(out_a, out_b)


def test_without_resblock_updown_uses_conv_resampling():
    net = SDMUNet(4, small(resblock_updown=False))
    assert isinstance(net.encoder[-2].res, Downsample) and isinstance(net.decoder[1].upsample, Upsample)
    assert not any(isinstance(m, (ResBlock, SPADEResBlock)) and m.resample.mode != "none" for m in net.modules())
    assert _randomize(net)(torch.randn(1, 3, 16, 16), torch.tensor([3]), torch.rand(1, 4, 16, 16)).shape == (
        1, 6, 16, 16,
    )  # fmt: skip


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    net = _randomize(SDMUNet(4, small()))
    x, t, y = torch.randn(1, 3, 8, 8), torch.tensor([2]), torch.rand(1, 4, 8, 8)
    net(x, t, y).square().mean().backward()
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.gradient_checkpointing = True
    net(x, t, y).square().mean().backward()
    for expected, p in zip(plain, net.parameters()):
        torch.testing.assert_close(p.grad, expected)


def test_bad_inputs_raise_clear_errors():
    net = SDMUNet(4, small())
    with pytest.raises(ValueError, match="not divisible by 2"):
        net(torch.randn(1, 3, 15, 16), torch.tensor([1]), torch.rand(1, 4, 15, 16))
    with pytest.raises(ValueError, match="expects 4"):
        net(torch.randn(1, 3, 16, 16), torch.tensor([1]), torch.rand(1, 5, 16, 16))


def test_attention_blocks_are_placed_by_image_size_factor():
    net = SDMUNet(4, small(channel_mult=(1, 1, 2), attention_resolutions=(16,), image_size=32))
    placed = [b.attn is not None for b in net.encoder]
    assert placed == [False, False, True, False, False]  # only at downsample factor 2
    assert sum(isinstance(m, SelfAttention2d) for m in net.decoder.modules()) == 2


def test_norm_channels_per_group_regroups_every_normaliser_and_keeps_the_weights_interchangeable():
    official, regrouped = SDMUNet(4, small()), SDMUNet(4, small(norm_channels_per_group=4))
    norms = [m for m in regrouped.modules() if isinstance(m, (torch.nn.GroupNorm, SPADEGroupNorm))]
    assert norms and all(m.num_channels == 4 * m.num_groups for m in norms)
    assert any(isinstance(m, SPADEGroupNorm) for m in norms)
    regrouped.load_state_dict(official.state_dict())  # same parameters, strict

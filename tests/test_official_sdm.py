"""The official SDM checkpoint importer, pinned to the official-code fixture and checked by round trips."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from official_fixtures import load_official_fixture

from lightning_modules.diffusion.guidance import classifier_free, guided_denoiser
from lightning_modules.diffusion.samplers import ddim
from lightning_modules.diffusion.schedule import DiffusionSchedule
from lightning_modules.nets.attention import SelfAttention2d
from lightning_modules.nets.sdm_unet import SDMUNet
from lightning_modules.official import export_official_sdm, load_official_sdm, sdm_hparams_from_flags


@pytest.fixture(scope="module")
def official(fixtures_dir: Path) -> dict:
    folder = fixtures_dir / "sdm_official"
    return {
        "config": json.loads((folder / "config.json").read_text()),
        "state_dict": load_official_fixture(folder / "state_dict.pt"),
        "io": load_official_fixture(folder / "io.pt"),
        "diffusion": load_official_fixture(folder / "diffusion.pt"),
    }


@pytest.fixture(scope="module")
def net(official: dict) -> SDMUNet:
    return load_official_sdm(official["state_dict"], official["config"])


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.05)
    return module


def test_fixture_parameter_count(net, official):
    assert sum(p.numel() for p in net.parameters()) == official["config"]["num_parameters"]


@pytest.mark.parametrize(("output", "null"), [("output_cond", False), ("output_null", True)])
def test_fixture_network_outputs(net, official, output, null):
    io = official["io"]
    y = torch.zeros_like(io["y"]) if null else io["y"]
    with torch.no_grad():
        result = net(io["x_t"], io["t"], y)
    assert (result - io[output]).abs().max() <= 1e-4


@pytest.mark.slow
def test_fixture_guided_ddim10_end_point(net, official):
    io, diffusion = official["io"], official["diffusion"]
    schedule = DiffusionSchedule.create("linear", 1000).respace("ddim10")
    variants = {"cond": {"y": io["y"]}, "null": {"y": torch.zeros_like(io["y"])}}
    denoise = guided_denoiser(net, variants, classifier_free(float(diffusion["guided_s"])))
    with torch.no_grad():
        sample = ddim(denoise, diffusion["ddim10_x_T"], schedule, clip_x0=True)
    assert (sample - diffusion["ddim10_s1p5_sample"]).abs().max() <= 5e-4


BASE_FLAGS = {
    "image_size": 16, "num_channels": 32, "channel_mult": "1,2", "num_res_blocks": 1, "attention_resolutions": "8",
    "num_heads": 4, "num_head_channels": 16, "num_heads_upsample": -1, "num_classes": 4, "no_instance": False,
    "learn_sigma": True, "resblock_updown": True, "use_scale_shift_norm": True, "class_cond": True, "dropout": 0.0,
    "use_fp16": False, "use_checkpoint": False,
}  # fmt: skip
FLAG_VARIANTS = {
    "head_count_no_instance": {"num_head_channels": -1, "num_heads": 2, "num_heads_upsample": 1, "no_instance": True},
    "conv_resampling_new_order": {"resblock_updown": False, "use_new_attention_order": True, "learn_sigma": False},
    "three_levels_two_attention": {"image_size": 32, "channel_mult": "1,1,2", "attention_resolutions": "16,8"},
    "auto_channel_mult": {"image_size": 64, "num_channels": 32, "channel_mult": "", "attention_resolutions": "8"},
}


def _round_trip(flags: dict) -> tuple[SDMUNet, SDMUNet]:
    torch.manual_seed(0)
    source = _randomize(SDMUNet(**sdm_hparams_from_flags(flags))).eval()
    exported = export_official_sdm(source, legacy_attention_order=not flags.get("use_new_attention_order", False))
    official_prefixes = ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.")
    assert all(k.startswith(official_prefixes) for k in exported)
    return source, load_official_sdm(exported, flags)


@pytest.mark.parametrize("variant", FLAG_VARIANTS)
def test_export_import_round_trip(variant):
    source, loaded = _round_trip({**BASE_FLAGS, **FLAG_VARIANTS[variant]})
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_imported_network_runs_on_non_square_input():
    source, loaded = _round_trip({**BASE_FLAGS, **FLAG_VARIANTS["head_count_no_instance"]})
    x, y = torch.randn(1, 3, 16, 32), torch.rand(1, loaded.label_channels, 16, 32)
    with torch.no_grad():
        out = loaded(x, torch.tensor([10]), y)
        torch.testing.assert_close(out, source(x, torch.tensor([10]), y))
    assert out.shape == (1, 6, 16, 32)


def _official_legacy_attention(x, norm, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
    """Official legacy attention: per-head [q|k|v] rows, q and k scaled by d^(-1/4), float32 softmax."""
    b, c, h, w = x.shape
    qkv = F.conv1d(norm(x).reshape(b, c, h * w), qkv_weight, qkv_bias)
    d = c // heads
    q, k, v = qkv.reshape(b * heads, 3 * d, h * w).split(d, dim=1)
    scale = 1 / math.sqrt(math.sqrt(d))
    weights = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1)
    a = torch.einsum("bts,bcs->bct", weights, v).reshape(b, c, h * w)
    return x + F.conv1d(a, proj_weight, proj_bias).reshape(b, c, h, w)


@pytest.mark.parametrize("head_flags", [{"num_head_channels": 16}, {"num_head_channels": -1, "num_heads": 4}])
def test_imported_attention_matches_official_legacy_layout(head_flags):
    flags = {**BASE_FLAGS, **head_flags}
    exported = export_official_sdm(_randomize(SDMUNet(**sdm_hparams_from_flags(flags))))
    net = load_official_sdm(exported, flags)
    attn: SelfAttention2d = net.middle.attn
    assert attn.num_heads == 4
    x = torch.randn(2, 64, 4, 2)
    w = {k.removeprefix("middle_block.1."): v for k, v in exported.items() if k.startswith("middle_block.1.")}
    expected = _official_legacy_attention(
        x, attn.norm, w["qkv.weight"], w["qkv.bias"], w["proj_out.weight"], w["proj_out.bias"], 4
    )
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_missing_and_unexpected_keys_are_named(official):
    config, state_dict = official["config"], dict(official["state_dict"])
    del state_dict["output_blocks.3.0.out_norm.mlp_gamma.weight"]
    with pytest.raises(KeyError, match=r"missing official keys: output_blocks\.3\.0\.out_norm\.mlp_gamma\.weight"):
        load_official_sdm(state_dict, config)
    state_dict = {**official["state_dict"], "input_blocks.9.0.op.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match=r"unexpected official keys: input_blocks\.9\.0\.op\.weight"):
        load_official_sdm(state_dict, config)


def test_wrong_flags_give_a_shape_error_naming_the_key(official):
    with pytest.raises(ValueError, match=r"'middle_block\.0\.in_norm\.mlp_shared\.0\.weight' has shape"):
        load_official_sdm(official["state_dict"], {**official["config"], "no_instance": True})


def test_wrapped_state_dicts_are_unwrapped(official, net):
    state_dict, config = official["state_dict"], official["config"]
    for wrapped in ({f"module.{k}": v for k, v in state_dict.items()}, {"ema": state_dict, "step": 3}):
        loaded = load_official_sdm(wrapped, config)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    with pytest.raises(ValueError, match="exactly one of"):
        load_official_sdm({"model": state_dict, "ema": state_dict}, config)


def test_readme_flags_translate_to_the_official_architecture():
    flags = {
        "image_size": 256, "num_channels": 256, "num_res_blocks": 2, "attention_resolutions": "32,16,8",
        "num_head_channels": 64, "learn_sigma": "True", "resblock_updown": True, "use_scale_shift_norm": True,
        "num_classes": 151, "no_instance": True, "channel_mult": "",
    }  # fmt: skip
    hparams = sdm_hparams_from_flags(flags)
    assert hparams["config"].channel_mult == (1, 1, 2, 2, 4, 4)
    assert hparams["config"].attention_resolutions == (32, 16, 8)
    assert hparams["label_channels"] == 151 and hparams["learn_sigma"] is True and hparams["config"].num_heads == 4
    assert sdm_hparams_from_flags({**flags, "no_instance": False})["label_channels"] == 152


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"use_scale_shift_norm": False}, NotImplementedError, "use_scale_shift_norm"),
        ({"class_cond": False}, ValueError, "class_cond"),
        ({"channel_mult": "", "image_size": 48}, ValueError, "no automatic channel_mult for image_size 48"),
        ({"learn_sigma": "yes"}, ValueError, "'learn_sigma' must be a boolean"),
    ],
)
def test_invalid_flags_are_rejected(change, error, message):
    with pytest.raises(error, match=message):
        sdm_hparams_from_flags({**BASE_FLAGS, **change})


def test_required_flag_missing_is_named():
    flags = dict(BASE_FLAGS)
    del flags["num_classes"]
    with pytest.raises(KeyError, match="num_classes"):
        sdm_hparams_from_flags(flags)

"""Official PIDM import: conformance with the fixture, other official configurations, and clear errors."""

import json
from pathlib import Path

import pytest
import torch
from official_fixtures import load_official_fixture

from lightning_modules.diffusion import DiffusionSchedule, ddim, guided_denoiser, style_only, training_losses
from lightning_modules.nets.pidm_unet import PIDMUNet, TexturedBlock
from lightning_modules.official import load_official_pidm
from lightning_modules.official.pidm import (
    export_official_pidm,
    official_key_map,
    official_unused_shapes,
    pidm_hparams_from_config,
)

# The official DeepFashion-256 model (config/diffconfig.py) in official field names.
OFFICIAL_256 = dict(
    image_size=256, in_channels=23, out_channels=6, model_channels=128, channel_mult=[1, 1, 2, 2, 4, 4],
    num_res_blocks=2, embed_channels=512, attention_resolutions=[32, 16, 8], dropout=0.1, num_heads=1,
    num_head_channels=-1, num_heads_upsample=-1, resblock_updown=True, resnet_two_cond=True, dims=2,
    num_classes=None, num_input_res_blocks=None, input_channel_mult=None, time_embed_channels=None,
    use_new_attention_order=False, enc_channel_mult=[1, 1, 2, 2, 4, 4, 4], enc_pool="adaptivenonzero",
)  # fmt: skip


def _tiny(**overrides) -> dict:
    return {**OFFICIAL_256, "image_size": 16, "model_channels": 32, "channel_mult": [1, 2, 2], "embed_channels": 64,
            "attention_resolutions": [8, 4], "dropout": 0.0, **overrides}  # fmt: skip


@pytest.fixture(scope="module")
def official(fixtures_dir: Path) -> dict:
    root = fixtures_dir / "pidm_official"
    load = lambda name: load_official_fixture(root / name)  # noqa: E731
    return {
        "config": json.loads((root / "config.json").read_text()),
        "state_dict": load("state_dict.pt"),
        "io": load("io.pt"),
        "diffusion": load("diffusion.pt"),
    }


@pytest.fixture(scope="module")
def model(official) -> PIDMUNet:
    return load_official_pidm(official["state_dict"], official["config"])


def max_abs(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual.double() - expected.double()).abs().max().item()


def test_fixture_outputs_and_encoder_features(model, official):
    io = official["io"]
    with torch.no_grad():
        features = model.texture_encoder(io["source"])
        cond = model(io["y_t"], io["t"], io["pose"], source=io["source"])
        null = model(io["y_t"], io["t"], io["pose"], source=torch.zeros_like(io["source"]))
    assert len(features) == official["config"]["num_encoder_features"] == len(io["encoder_features"])
    assert max(max_abs(a, b) for a, b in zip(features, io["encoder_features"])) <= 1e-4
    assert max_abs(cond, io["output_cond"]) <= 1e-4
    assert max_abs(null, io["output_null"]) <= 1e-4


def test_fixture_parameter_count_and_tdb_indexing(model, official):
    config = official["config"]
    assert sum(p.numel() for p in model.parameters()) == config["num_parameters"] - config["num_parameters_unused"]
    mapping = official_key_map(model)
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, TexturedBlock) and m.cross_attn is not None}
    tdb_index = {
        mapping[f"{name}.cross_attn.to_q.weight"].removesuffix(".to_q.weight"): block.texture_index
        for name, block in blocks.items()
    }
    assert tdb_index == config["tdb_encoder_feature_index"]


def test_export_reproduces_the_official_layout(model, official):
    exported = export_official_pidm(model)
    reference = official["state_dict"]
    assert set(exported) == set(reference)
    assert len(exported) == official["config"]["num_state_dict_keys"]
    assert all(exported[k].shape == reference[k].shape for k in reference)
    assert set(official_unused_shapes(model)) == set(official["config"]["unused_parameter_keys"])
    used = set(official_key_map(model).values())
    assert all(torch.equal(exported[k], reference[k]) for k in used)


def test_official_256_parameter_counts():
    """The reference's measured counts: 180.36 M official (H_E 38.29 M), 162.37 M used."""
    with torch.device("meta"):
        net = PIDMUNet(**pidm_hparams_from_config(OFFICIAL_256))
    used = sum(p.numel() for p in net.parameters())
    unused = sum(torch.Size(s).numel() for s in official_unused_shapes(net).values())
    encoder_unused = sum(
        torch.Size(s).numel() for k, s in official_unused_shapes(net).items() if k.startswith("encoder.")
    )
    encoder = sum(p.numel() for p in net.texture_encoder.parameters()) + encoder_unused
    assert round(used / 1e6, 2) == 162.37
    assert round((used + unused) / 1e6, 2) == 180.36
    assert round(encoder / 1e6, 2) == 38.29
    assert sum(b.cross_attn is not None for b in [*net.encoder, net.middle, *net.decoder]) == 7


def _expected_official_layout(config: dict) -> tuple[set[str], set[str]]:
    """TDB and up-sampling ResBlock prefixes by the official placement rule (written out independently)."""
    levels, n = len(config["channel_mult"]), config["num_res_blocks"]
    tdbs, ups, k, j = {"middle_block.1"}, set(), 0, 0
    for level in range(levels):
        for i in range(n):
            k += 1
            if config["image_size"] >> level in config["attention_resolutions"] and i == n - 1:
                tdbs.add(f"input_blocks.{k}.1")
        k += level != levels - 1
    for level in reversed(range(levels)):
        for i in range(n + 1):
            if config["image_size"] >> level in config["attention_resolutions"] and i == n - 1:
                tdbs.add(f"output_blocks.{j}.1")
            if level and i == n:
                ups.add(f"output_blocks.{j}.1")
            j += 1
    return tdbs, ups


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        _tiny(channel_mult=[1, 2, 3], attention_resolutions=[16, 4], num_res_blocks=1),
        _tiny(image_size=32, channel_mult=[1, 1, 2, 2], num_res_blocks=3, attention_resolutions=[8, 128]),
        _tiny(resnet_two_cond=False, out_channels=3, in_channels=21),
        _tiny(num_heads=2, use_new_attention_order=True),
        _tiny(num_head_channels=64, attention_resolutions=[4]),
    ],
    ids=["mult123-res1", "32px-4-levels-res3", "no-two-cond-fixed-var", "new-order-2-heads", "head-channels"],
)
def test_other_official_configs_round_trip(config):
    torch.manual_seed(0)
    ours = PIDMUNet(**pidm_hparams_from_config(config))
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.1)
    state_dict = export_official_pidm(ours, config["resnet_two_cond"])
    for key, shape in official_unused_shapes(ours, config["resnet_two_cond"]).items():
        state_dict[key] = torch.randn(shape)  # never read: the outputs below must not change
    tdbs, ups = _expected_official_layout(config)
    assert {k.removesuffix(".to_q.weight") for k in state_dict if k.endswith("to_q.weight")} == tdbs
    up_blocks = {k.removesuffix(".in_layers.0.weight") for k in state_dict if k.startswith("output_blocks")}
    assert {b for b in up_blocks if b.endswith(".1")} == ups
    assert any("cond_emb_layers" in k for k in state_dict) == config["resnet_two_cond"]

    loaded = load_official_pidm(state_dict, config)
    size = config["image_size"]
    y_t, source = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
    pose, t = torch.rand(2, config["in_channels"] - 3, size, size), torch.tensor([3, 700])
    with torch.no_grad():
        output = loaded(y_t, t, pose, source=source)
        assert torch.equal(output, ours.eval()(y_t, t, pose, source=source))
    assert output.shape == (2, config["out_channels"], size, size)


def test_missing_unexpected_and_misshapen_keys_are_named(official):
    config, reference = official["config"], official["state_dict"]
    for dropped in ("middle_block.1.to_kv.weight", "input_blocks.5.1.qkv.bias", "encoder.time_embed.0.weight"):
        with pytest.raises(ValueError, match=f"missing keys: {dropped}"):
            load_official_pidm({k: v for k, v in reference.items() if k != dropped}, config)
    with pytest.raises(ValueError, match="unexpected keys: input_blocks.5.1.extra"):
        load_official_pidm({**reference, "input_blocks.5.1.extra": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match=r"'out.2.weight' has shape \(6, 32, 1, 1\)"):
        load_official_pidm({**reference, "out.2.weight": torch.zeros(6, 32, 1, 1)}, config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(num_heads=2), "only 1 head is well defined"),
        (dict(resblock_updown=False), "'resblock_updown'=False is not supported"),
        (dict(num_input_res_blocks=3), "'num_input_res_blocks'=3 is not supported"),
        (dict(out_channels=4), "out_channels=4"),
        (dict(model_channels=None), None),
    ],
)
def test_unsupported_configs_are_rejected(overrides, message):
    config = _tiny(**overrides)
    if message is None:
        del config["model_channels"]
        message = "missing the field 'model_channels'"
    with pytest.raises(ValueError, match=message):
        pidm_hparams_from_config(config)


def test_fixture_guided_output(model, official):
    io = official["io"]
    variants = {
        "full": {"pose": io["pose"], "source": io["source"]},
        "pose": {"pose": io["pose"], "source": torch.zeros_like(io["source"])},
    }
    denoise = guided_denoiser(model, variants, style_only(float(io["guidance_scale"])))
    with torch.no_grad():
        assert max_abs(denoise(io["y_t"], io["t"]), io["output_guided"]) <= 1e-4


def test_fixture_training_losses(model, official):
    io, diffusion = official["io"], official["diffusion"]
    schedule = DiffusionSchedule.create("linear", 1000)
    with torch.no_grad():
        losses = training_losses(
            schedule,
            lambda x_t, t: model(x_t, t, io["pose"], source=io["source"]),
            diffusion["x0"],
            diffusion["t"],
            diffusion["noise"],
        )
    for key, reference in (("mse", "loss_mse"), ("vb", "loss_vb"), ("loss", "loss")):
        assert max_abs(losses[key], diffusion[reference]) <= 5e-4


@pytest.mark.slow
def test_fixture_fast_ddim_with_cached_texture(model, official):
    io, diffusion = official["io"], official["diffusion"]
    schedule = DiffusionSchedule.create("linear", 1000).respace("ddim10")
    assert torch.equal(schedule.timesteps, diffusion["ddim_timesteps"])
    encoder_calls = []
    hook = model.texture_encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    try:
        with torch.no_grad():
            cond, null = model.encode(io["source"]), model.encode(torch.zeros_like(io["source"]))
            denoise = guided_denoiser(
                model,
                {"full": {"pose": io["pose"], "texture": cond}, "pose": {"pose": io["pose"], "texture": null}},
                style_only(2.0),
            )
            sample = ddim(denoise, diffusion["ddim_x_T"], schedule, clip_x0=False)
    finally:
        hook.remove()
    assert len(encoder_calls) == 2
    assert max_abs(sample, diffusion["ddim_sample"]) <= 2e-3

"""PIDMLitModule: condition-dropout rates, one batched network call per guided step, the guidance formulas."""

import math

import pytest
import torch

from lightning_modules.base import SamplerSettings
from lightning_modules.diffusion import guided_denoiser
from lightning_modules.metrics import EvaluationConfig, EvaluationMetrics
from lightning_modules.nets.pidm_unet import PIDMUNetConfig
from lightning_modules.pidm import PIDMLitModule, PoseStyleGuidance, condition_keep_masks, pose_preview

SIZE = 16
DRAWS = 20_000


TINY_NET = PIDMUNetConfig(image_size=SIZE, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(8,), embed_channels=16)


def tiny_module(**overrides) -> PIDMLitModule:
    torch.manual_seed(0)
    options = {"pose_channels": 20, "network": TINY_NET, "num_timesteps": 100, "sampling": SamplerSettings(steps=5)}
    module = PIDMLitModule(**{**options, **overrides}).eval()
    # Random weights everywhere (the zero-initialised output layers would hide every condition).
    for parameter in module.net.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return module


def person_batch(batch_size: int = 2, pose_channels: int = 20) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "source": torch.rand(batch_size, 3, SIZE, SIZE, generator=generator) * 2 - 1,
        "target": torch.rand(batch_size, 3, SIZE, SIZE, generator=generator) * 2 - 1,
        "target_pose": torch.rand(batch_size, pose_channels, SIZE, SIZE, generator=generator),
    }


EXPECTED_RATES = {  # (pose kept, style kept) -> rate, for eta
    "independent": lambda eta: {
        (1, 1): (1 - eta) ** 2, (1, 0): eta * (1 - eta), (0, 1): eta * (1 - eta), (0, 0): eta**2,
    },  # fmt: skip
    "joint": lambda eta: {(1, 1): 1 - eta, (1, 0): 0.0, (0, 1): 0.0, (0, 0): eta},
    "style_only": lambda eta: {(1, 1): 1 - eta, (1, 0): eta, (0, 1): 0.0, (0, 0): 0.0},
}


@pytest.mark.parametrize("mode", sorted(EXPECTED_RATES))
@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_dropout_modes_hit_their_rates(mode, eta):
    generator = torch.Generator().manual_seed(3)
    keep_pose, keep_style = condition_keep_masks(DRAWS, eta, mode, torch.device("cpu"), generator)
    for (pose_kept, style_kept), rate in EXPECTED_RATES[mode](eta).items():
        measured = ((keep_pose == pose_kept) & (keep_style == style_kept)).float().mean().item()
        standard_error = math.sqrt(max(rate * (1 - rate), 1e-12) / DRAWS)
        assert abs(measured - rate) <= 4 * standard_error, (mode, pose_kept, style_kept, measured, rate)


def test_training_inputs_drop_to_the_null_pose_and_the_null_image():
    module = tiny_module(condition_drop_prob=1.0, condition_dropout="independent")
    batch = person_batch()
    module.train()
    target, kwargs = module.training_inputs(batch)
    assert torch.equal(target, batch["target"])
    assert not kwargs["pose"].any() and not kwargs["source"].any()
    module.eval()  # no dropout outside training
    _, kwargs = module.training_inputs(batch)
    assert torch.equal(kwargs["pose"], batch["target_pose"]) and torch.equal(kwargs["source"], batch["source"])
    module.train()
    module.condition_drop_prob = 0.0
    _, kwargs = module.training_inputs(batch)
    assert torch.equal(kwargs["source"], batch["source"])


def test_training_step_backpropagates_into_both_networks():
    module = tiny_module()
    module.train()
    x0, kwargs = module.training_inputs(person_batch())
    module._losses(x0, kwargs, torch.tensor([10, 90]))["loss"].mean().backward()
    for name in ("texture_encoder.input_conv.weight", "input_conv.weight", "middle.cross_attn.to_kv.weight"):
        assert module.net.get_parameter(name).grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("form", "weights", "variants"),
    [("disentangled", {"w_pose": 2.0, "w_style": 2.0}, 3), ("nested", {"w_pose": 1.5, "w_style": 2.0}, 3),
     ("nested", {"w_pose": 2.0, "w_style": 2.0}, 2), ("style_only", {"scale": 2.0}, 2)],
)
def test_guided_sampling_calls_the_network_once_per_step(form, weights, variants):
    # nested with w_pose == w_style gives the image-only variant weight 0, so it is not evaluated.
    module = tiny_module(guidance=PoseStyleGuidance(form, **weights))
    net_calls, encoder_calls = [], []
    module.net.register_forward_hook(lambda mod, args, out: net_calls.append(args[0].shape[0]))
    module.net.texture_encoder.register_forward_hook(lambda mod, args, out: encoder_calls.append(args[0].shape[0]))
    batch = person_batch(batch_size=3)
    out = module.generate_batch(batch, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, SIZE, SIZE) and out.abs().max() <= 1
    assert net_calls == [3 * variants] * 5
    assert sorted(encoder_calls) == [1, 3]  # the batch once, the null image once


def test_unguided_sampling_skips_the_null_image():
    module = tiny_module(guidance=PoseStyleGuidance("style_only", scale=1.0))
    encoder_calls = []
    module.net.texture_encoder.register_forward_hook(lambda mod, args, out: encoder_calls.append(args[0].shape[0]))
    module.generate_batch(person_batch(), sampling=SamplerSettings(steps=3))
    assert encoder_calls == [2]


def _separate(module, x, t, pose, source, use_pose: bool, use_style: bool) -> torch.Tensor:
    pose = pose if use_pose else torch.zeros_like(pose)
    return module.net(x, t, pose=pose, source=source if use_style else torch.zeros_like(source))


@pytest.mark.parametrize("form", ["disentangled", "style_only", "nested"])
def test_guidance_combinations_match_separate_calls(form):
    w_pose, w_style, scale = 1.7, 2.5, 3.0
    weights = {"scale": scale} if form == "style_only" else {"w_pose": w_pose, "w_style": w_style}
    module = tiny_module(guidance=PoseStyleGuidance(form, **weights))
    batch = person_batch()
    pose, source = batch["target_pose"], batch["source"]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([7, 60])
    guidance = module.guidance.rule()
    with torch.no_grad():
        guided = guided_denoiser(module.net, module.conditioned_denoiser_inputs(source, pose, guidance), guidance)(x, t)
        eps = {(p, s): _separate(module, x, t, pose, source, p, s) for p in (0, 1) for s in (0, 1)}
    if form == "disentangled":  # all channels combined
        expected = eps[0, 0] + w_pose * (eps[1, 0] - eps[0, 0]) + w_style * (eps[0, 1] - eps[0, 0])
    elif form == "style_only":
        expected = eps[1, 0] + scale * (eps[1, 1] - eps[1, 0])
    else:  # nested: ε only, the variance channels from the full condition
        mixed = eps[0, 0] + w_style * (eps[0, 1] - eps[0, 0]) + w_pose * (eps[1, 1] - eps[0, 1])
        expected = torch.cat([mixed[:, :3], eps[1, 1][:, 3:]], dim=1)
    assert not torch.allclose(eps[1, 0], eps[0, 1], atol=1e-3)  # the conditions matter in this model
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-4)


def test_unknown_options_and_weights_of_another_form_are_rejected():
    with pytest.raises(TypeError, match="guidance_scale"):
        tiny_module(guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance form"):
        PoseStyleGuidance("cfg")
    with pytest.raises(ValueError, match=r"'style_only' is weighted by scale; w_pose=3.0 does not apply"):
        tiny_module(guidance={"form": "style_only", "w_pose": 3.0})
    with pytest.raises(ValueError, match=r"'disentangled' is weighted by w_pose and w_style; scale=3.0 does not"):
        PoseStyleGuidance("disentangled", scale=3.0)
    with pytest.raises(ValueError, match="condition_dropout"):
        tiny_module(condition_dropout="both")
    with pytest.raises(ValueError, match="pose_channels"):
        PIDMLitModule(pose_channels=None)


def test_guidance_overrides_keep_configured_weights_only_for_the_configured_form():
    guidance = PoseStyleGuidance("style_only", scale=3.0)
    assert dict(guidance.rule().weights) == {"full": 3.0, "pose": -2.0}
    assert dict(guidance.override(scale=1.5).rule().weights) == {"full": 1.5, "pose": -0.5}
    # Another form starts from its own defaults (2) and the given weights; the configured scale does not follow it.
    other_form = guidance.override("disentangled", w_pose=1.0)
    assert dict(other_form.rule().weights) == {"none": -2.0, "pose": 1.0, "style": 2.0}
    with pytest.raises(ValueError, match="scale=2.5 does not apply"):
        guidance.override("nested", scale=2.5)


def test_image_log_columns_and_pose_previews():
    module = tiny_module()
    batch = person_batch()
    generated = torch.zeros(2, 3, SIZE, SIZE)
    columns = module.image_log_columns(batch, generated)
    assert [c.shape for c in columns] == [(2, 3, SIZE, SIZE)] * 4
    torch.testing.assert_close(columns[1], batch["target_pose"][:, :3] * 2 - 1)
    heatmaps = torch.zeros(1, 18, 4, 4)
    heatmaps[0, 5, 1, 2] = 1.0
    preview = pose_preview(heatmaps)
    assert preview.shape == (1, 3, 4, 4) and preview[0, :, 1, 2].eq(1).all() and preview[0, :, 0, 0].eq(-1).all()


def test_predict_step_samples_source_target_pose_batches():
    module = tiny_module(pose_channels=18)
    batch = person_batch(pose_channels=18)
    del batch["target"]
    first = module.predict_step(batch, 0)
    assert first.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(module.predict_step(batch, 0), first)  # seeded per batch


def test_appearance_metric_needs_part_labelled_targets():
    metrics = EvaluationMetrics(EvaluationConfig.from_dict({"fid": None, "appearance": {}}))
    with pytest.raises(ValueError, match="evaluation.appearance needs body-part labels.*PersonsDataModule"):
        tiny_module().evaluate_test_batch(person_batch(), metrics, outputs=None)

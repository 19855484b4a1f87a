"""The loss terms and guided reverse steps against the official SDM and PIDM numerics."""

import torch

from lightning_modules.diffusion import (
    DiffusionSchedule,
    classifier_free,
    guided_denoiser,
    p_mean_variance,
    q_sample,
    style_only,
    training_losses,
)

SCHEDULE = DiffusionSchedule.create("linear", 1000)


def max_abs(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual.double() - expected.double()).abs().max().item()


def assert_guided_step_matches(pred, diffusion: dict) -> None:
    assert max_abs(pred.mean, diffusion["guided_mean"]) <= 1e-4
    assert max_abs(pred.log_variance, diffusion["guided_log_variance"]) <= 1e-4
    assert max_abs(pred.pred_x0, diffusion["guided_pred_xstart"]) <= 2e-3


def variant_model(outputs: dict[str, torch.Tensor], keyword: str, calls: list):
    """A fake network recognising each batch chunk's variant by its condition (all-zero = null)."""

    def model(x, t, **kwargs):
        calls.append((x, t, kwargs))
        condition = kwargs[keyword]
        condition = condition[0] if isinstance(condition, list) else condition
        batch = outputs["cond"].shape[0]
        chunks = [
            outputs["null"] if chunk.abs().sum() == 0 else outputs["cond"] for chunk in condition.split(batch)
        ]
        return torch.cat(chunks)

    return model


def test_sdm_x_t_is_q_sample(sdm_io):
    x_t = q_sample(SCHEDULE, sdm_io["x0"], sdm_io["t"], sdm_io["noise"])
    assert max_abs(x_t, sdm_io["x_t"]) <= 5e-4


def test_sdm_training_losses(sdm_io, sdm_diffusion):
    seen = []

    def denoise(x_t, t):
        seen.append((x_t, t))
        return sdm_io["output_cond"]

    losses = training_losses(SCHEDULE, denoise, sdm_io["x0"], sdm_io["t"], sdm_io["noise"])
    assert torch.equal(seen[0][1], sdm_io["t"])
    for key, reference in (("mse", "loss_mse"), ("vb", "loss_vb"), ("loss", "loss")):
        assert losses[key].shape == (2,)
        assert max_abs(losses[key], sdm_diffusion[reference]) <= 5e-4, key


def test_sdm_guided_step(sdm_io, sdm_diffusion):
    calls = []
    outputs = {"cond": sdm_io["output_cond"], "null": sdm_io["output_null"]}
    y = sdm_io["y"]
    denoise = guided_denoiser(
        variant_model(outputs, "y", calls),
        {"cond": {"y": y}, "null": {"y": torch.zeros_like(y)}},
        classifier_free(float(sdm_diffusion["guided_s"])),
    )
    x_t, t = sdm_io["x_t"], sdm_io["t"]
    pred = p_mean_variance(SCHEDULE, denoise(x_t, SCHEDULE.timesteps[t]), x_t, t, clip_x0=True)
    assert len(calls) == 1 and calls[0][0].shape[0] == 2 * x_t.shape[0]
    assert_guided_step_matches(pred, sdm_diffusion)


def test_pidm_guided_step_from_guided_output(pidm_io, pidm_diffusion):
    x_t, t = pidm_io["y_t"], pidm_io["t"]
    pred = p_mean_variance(SCHEDULE, pidm_io["output_guided"], x_t, t, clip_x0=True)
    assert_guided_step_matches(pred, pidm_diffusion)


def test_pidm_style_only_guidance_reproduces_official(pidm_io, pidm_diffusion):
    calls = []
    features = list(pidm_io["encoder_features"])
    outputs = {"cond": pidm_io["output_cond"], "null": pidm_io["output_null"]}
    denoise = guided_denoiser(
        variant_model(outputs, "texture", calls),
        {
            "full": {"pose": pidm_io["pose"], "texture": features},
            "pose": {"pose": pidm_io["pose"], "texture": [torch.zeros_like(f) for f in features]},
        },
        style_only(float(pidm_io["guidance_scale"])),
    )
    x_t, t = pidm_io["y_t"], pidm_io["t"]
    guided = denoise(x_t, t)
    assert len(calls) == 1
    assert [f.shape[0] for f in calls[0][2]["texture"]] == [2 * f.shape[0] for f in features]
    assert max_abs(guided, pidm_io["output_guided"]) <= 1e-4
    assert_guided_step_matches(p_mean_variance(SCHEDULE, guided, x_t, t, clip_x0=True), pidm_diffusion)

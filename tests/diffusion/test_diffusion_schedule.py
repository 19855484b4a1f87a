import math

import pytest
import torch

from lightning_modules.diffusion import DiffusionSchedule, beta_schedule, extract, space_timesteps

SCHEDULE_KEYS = ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped")
RESPACINGS = {"ddim10": "ddim10", "25": "25", "10,5": "10_5"}


@pytest.mark.parametrize("fixture_name", ["sdm_diffusion", "pidm_diffusion"])
@pytest.mark.parametrize("key", SCHEDULE_KEYS)
def test_schedule_tables_match_official(request, fixture_name, key):
    expected = request.getfixturevalue(fixture_name)[key]
    actual = getattr(DiffusionSchedule.create("linear", 1000), key)
    assert actual.dtype == torch.float64
    assert actual.shape == expected.shape
    nonzero = expected != 0
    assert torch.equal(actual[~nonzero], expected[~nonzero])
    rel = ((actual[nonzero] - expected[nonzero]).abs() / expected[nonzero].abs()).max().item()
    assert rel <= 1e-10, f"{key}: relative error {rel:.3g}"


@pytest.mark.parametrize("spec", sorted(RESPACINGS))
def test_respacing_matches_official(sdm_diffusion, spec):
    respaced = DiffusionSchedule.create().respace(spec)
    key = RESPACINGS[spec]
    assert torch.equal(respaced.timesteps, sdm_diffusion[f"respaced_{key}_timesteps"])
    expected = sdm_diffusion[f"respaced_{key}_betas"]
    assert ((respaced.betas - expected).abs() / expected).max().item() <= 1e-10
    assert respaced.num_steps == expected.numel()


def test_pidm_ddim_timesteps_are_ddim10(pidm_diffusion):
    assert space_timesteps(1000, "ddim10") == pidm_diffusion["ddim_timesteps"].tolist()


def test_respacing_full_count_is_identity():
    schedule = DiffusionSchedule.create()
    respaced = schedule.respace("1000")
    assert torch.equal(respaced.timesteps, torch.arange(1000))
    torch.testing.assert_close(respaced.betas, schedule.betas, rtol=1e-12, atol=0)


def test_respacing_composes_and_preserves_alphas_cumprod():
    schedule = DiffusionSchedule.create()
    twice = schedule.respace("100").respace("ddim10")
    once_kept = torch.tensor(space_timesteps(1000, "100"))
    assert torch.equal(twice.timesteps, once_kept[torch.tensor(space_timesteps(100, "ddim10"))])
    torch.testing.assert_close(twice.alphas_cumprod, schedule.alphas_cumprod[twice.timesteps], rtol=1e-12, atol=0)


def test_space_timesteps_sections_round_half_even():
    # Strides 499.5 and 4.5: Python's round() goes to the even neighbour (500, 4).
    assert space_timesteps(1000, "3")[:3] == [0, 500, 999]
    assert space_timesteps(20, "3,2") == [0, 4, 9, 10, 19]


@pytest.mark.parametrize("spec", ["ddim3000", "ddimx", "1001", "600,600", "0", "abc", "", "10,-1"])
def test_impossible_respacing_raises_naming_spec(spec):
    with pytest.raises(ValueError, match="respacing spec"):
        space_timesteps(1000, spec)


def test_linear_schedule_scales_with_num_timesteps():
    betas = beta_schedule("linear", 250)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(4e-4) and betas[-1].item() == pytest.approx(0.08)


def test_cosine_schedule_follows_alpha_bar():
    schedule = DiffusionSchedule.create("cosine", 100)
    assert schedule.betas.max().item() <= 0.999
    alpha_bar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert schedule.alphas_cumprod[49].item() == pytest.approx(alpha_bar(0.5) / alpha_bar(0.0), rel=1e-9)


def test_unknown_schedule_and_bad_betas_raise():
    with pytest.raises(ValueError, match="unknown beta schedule 'quadratic'"):
        beta_schedule("quadratic")
    with pytest.raises(ValueError, match="betas"):
        DiffusionSchedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="strictly increasing"):
        DiffusionSchedule(torch.tensor([0.1, 0.2]), torch.tensor([3, 1]))


def test_schedule_is_immutable_and_to_is_cached():
    schedule = DiffusionSchedule.create(num_timesteps=100)
    with pytest.raises(AttributeError):
        schedule.betas = torch.ones(100)
    meta = schedule.to("meta")
    assert meta is schedule.to("meta")
    assert meta.alphas_cumprod.device.type == "meta" and schedule.alphas_cumprod.device.type == "cpu"
    assert schedule.to("cpu") is schedule


@pytest.mark.parametrize(
    ("like_dtype", "expected_dtype"),
    [(torch.float64, torch.float64), (torch.float32, torch.float32), (torch.float16, torch.float32),
     (torch.bfloat16, torch.float32)],
)
def test_extract_gathers_casts_and_broadcasts_never_below_float32(like_dtype, expected_dtype):
    table = torch.arange(10, dtype=torch.float64) / 3
    like = torch.zeros(2, 3, 4, 4, dtype=like_dtype)
    values = extract(table, torch.tensor([1, 7]), like)
    assert values.shape == (2, 1, 1, 1) and values.dtype == expected_dtype
    assert values.flatten().tolist() == torch.tensor([1 / 3, 7 / 3], dtype=torch.float64).to(expected_dtype).tolist()

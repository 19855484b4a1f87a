import math

import pytest
import torch

from lightning_modules.diffusion import SAMPLERS, DiffusionSchedule, SamplerStep, ddim, ddpm, dpmpp_2m

FULL = DiffusionSchedule.create("linear", 1000)


def eps_oracle(x0: torch.Tensor, learned: bool = True):
    """denoise(x, original t) returning the exact noise that takes x0 to x (plus v = 0 when learned)."""

    def denoise(x, timesteps):
        alpha_bar = FULL.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1) if learned else eps

    return denoise


def gaussian_data_oracle(std: float):
    """The exact ε predictor E[ε | x_t] for data x0 ~ N(0, std²)."""

    def denoise(x, timesteps):
        alpha_bar = FULL.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
        return (1 - alpha_bar).sqrt() * x / (alpha_bar * std**2 + 1 - alpha_bar)

    return denoise


def gaussian_ode_state(x_T: torch.Tensor, schedule: DiffusionSchedule, std: float, index: int) -> torch.Tensor:
    """Exact probability-flow ODE solution for data x0 ~ N(0, std²), from the last step to step ``index``."""
    at, last = schedule.alphas_cumprod[index].item(), schedule.alphas_cumprod[-1].item()
    return x_T * math.sqrt(at * std**2 + 1 - at) / math.sqrt(last * std**2 + 1 - last)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "ddpm"])
def test_perfect_noise_oracle_recovers_x0(name):
    x0 = torch.rand(2, 3, 8, 8) * 1.8 - 0.9
    generator = torch.Generator().manual_seed(0)
    sample = SAMPLERS[name](eps_oracle(x0), torch.randn(2, 3, 8, 8), FULL.respace("20"), generator=generator)
    atol = 1e-2 if name == "ddpm" else 1e-5
    torch.testing.assert_close(sample, x0, atol=atol, rtol=0)


@pytest.mark.parametrize(("name", "order"), [("ddim", 1), ("dpmpp_2m", 2)])
def test_deterministic_samplers_converge_to_the_gaussian_ode_at_their_order(name, order):
    # Measured at t = 500, away from the t → 0 end where the log-SNR steps of a stride-respacing grow fast (and
    # where DPM-Solver++ takes its last update at first order).
    std = 0.5
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    errors = []
    for steps in (100, 200):
        schedule = FULL.respace(f"ddim{steps}")
        middle = steps // 2
        assert schedule.timesteps[middle] == 500
        states = {}
        SAMPLERS[name](gaussian_data_oracle(std), x_T, schedule, clip_x0=False, variance="fixed_small",
                       callback=lambda step: states.setdefault(step.t, step.x))  # fmt: skip
        exact = gaussian_ode_state(x_T, schedule, std, index=middle)
        errors.append(((states[middle + 1] - exact).abs().max() / exact.abs().max()).item())
    assert errors[0] < 1e-3
    # Halving the step size divides the error by about 2 ** order.
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.1)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpmpp_2m_takes_first_order_steps_first_and_into_index_zero(eta):
    # Over three steps the only second-order candidate is the update into index 0, which is first order
    # ("lower order final"), so the solver equals DDIM with the same eta (and noise draws); over four the middle
    # update is second order.
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    denoise = gaussian_data_oracle(0.5)
    for steps, same in ((3, True), (4, False)):
        schedule = FULL.respace(str(steps))
        solver, reference = (sampler(denoise, x_T, schedule, variance="fixed_small", eta=eta,
                                     generator=torch.Generator().manual_seed(7)) for sampler in (dpmpp_2m, ddim))
        assert torch.allclose(solver, reference, atol=1e-5) is same


def exact_reverse_oracle(std: float, schedule: DiffusionSchedule):
    """ε̂ and the v that makes p(x_{t-1} | x_t) the exact reverse conditional for data x0 ~ N(0, std²)."""
    eps_of = gaussian_data_oracle(std)

    def denoise(x, timesteps):
        i = torch.searchsorted(schedule.timesteps, timesteps)
        table = lambda name: getattr(schedule, name)[i].view(-1, 1, 1, 1)  # noqa: E731
        alpha_bar = table("alphas_cumprod")
        x0_variance = std**2 * (1 - alpha_bar) / (alpha_bar * std**2 + 1 - alpha_bar)
        log_variance = torch.log(table("posterior_variance") + table("posterior_mean_coef1") ** 2 * x0_variance)
        low, high = table("posterior_log_variance_clipped"), table("log_betas")
        v = 2 * (log_variance - low) / (high - low) - 1
        return torch.cat([eps_of(x, timesteps), v.float().expand_as(x)], dim=1)

    return denoise


@pytest.mark.slow
def test_ddpm_with_exact_learned_variance_samples_the_data_distribution():
    std, schedule = 0.5, FULL.respace("50")
    generator = torch.Generator().manual_seed(3)
    x_T = torch.randn(8, 3, 32, 32, generator=generator)
    sample = ddpm(exact_reverse_oracle(std, schedule), x_T, schedule, clip_x0=False, generator=generator)
    assert sample.mean().abs().item() < 0.02
    assert sample.std().item() == pytest.approx(std, rel=0.03)


@pytest.mark.parametrize("steps", [25, 50])
def test_dpmpp_2m_sde_samples_the_data_distribution(steps):
    # The SDE variant (eta 1) with the exact ε of data x0 ~ N(0, std²): the samples have the data's spread, and
    # they are not the ODE's (which maps x_T deterministically).
    std, schedule = 0.5, FULL.respace(str(steps))
    generator = torch.Generator().manual_seed(3)
    x_T = torch.randn(8, 3, 32, 32, generator=generator)
    sample = dpmpp_2m(gaussian_data_oracle(std), x_T, schedule, clip_x0=False, variance="fixed_small", eta=1.0,
                      generator=generator)
    assert sample.mean().abs().item() < 0.02
    assert sample.std().item() == pytest.approx(std, rel=0.03)
    ode = dpmpp_2m(gaussian_data_oracle(std), x_T, schedule, clip_x0=False, variance="fixed_small")
    assert torch.corrcoef(torch.stack([sample.flatten(), ode.flatten()]))[0, 1] < 0.5


def test_ddim_with_eta_one_equals_ddpm_with_posterior_variance():
    schedule, x_T = FULL.respace("20"), torch.randn(2, 3, 8, 8)
    denoise = gaussian_data_oracle(0.7)
    runs = [
        sampler(denoise, x_T, schedule, variance="fixed_small", generator=torch.Generator().manual_seed(4), **kwargs)
        for sampler, kwargs in ((ddim, {"eta": 1.0}), (ddpm, {}))
    ]
    torch.testing.assert_close(runs[0], runs[1], atol=1e-4, rtol=0)


def test_sampling_is_reproducible_with_a_generator():
    schedule, x_T = FULL.respace("10"), torch.randn(1, 3, 4, 4)
    denoise = gaussian_data_oracle(0.5)
    runs = [
        ddpm(denoise, x_T, schedule, variance="fixed_large", generator=torch.Generator().manual_seed(seed))
        for seed in (5, 5, 6)
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.allclose(runs[0], runs[2])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_sees_every_step_and_can_replace_x(name):
    schedule, x0 = FULL.respace("ddim5"), torch.rand(1, 3, 4, 4) - 0.5
    seen: list[SamplerStep] = []

    def callback(step: SamplerStep):
        seen.append(step)
        return torch.zeros_like(step.x) if step.t == 0 else None

    sample = SAMPLERS[name](eps_oracle(x0), torch.randn(1, 3, 4, 4), schedule, callback=callback)
    assert [(s.step, s.t) for s in seen] == [(0, 4), (1, 3), (2, 2), (3, 1), (4, 0)]
    torch.testing.assert_close(seen[-2].pred_x0, x0, atol=1e-5, rtol=0)
    assert sample.abs().max() == 0


def test_network_receives_original_timesteps():
    schedule, received = FULL.respace("ddim4"), []

    def denoise(x, t):
        received.append(t.tolist())
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    ddim(denoise, torch.randn(2, 3, 4, 4), schedule)
    assert received == [[750, 750], [500, 500], [250, 250], [0, 0]]


def test_eta_is_rejected_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="eta"):
        ddpm(eps_oracle(torch.zeros(1, 3, 2, 2)), torch.randn(1, 3, 2, 2), FULL.respace("5"), eta=0.5)
    for sampler in (ddim, dpmpp_2m):
        with pytest.raises(ValueError, match="eta must be non-negative"):
            sampler(eps_oracle(torch.zeros(1, 3, 2, 2)), torch.randn(1, 3, 2, 2), FULL.respace("5"), eta=-0.5)

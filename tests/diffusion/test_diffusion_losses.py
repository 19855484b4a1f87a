import pytest
import torch

from lightning_modules.diffusion import (
    DiffusionSchedule,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    min_snr_weight,
    normal_kl,
    training_losses,
)


def test_kl_of_identical_gaussians_is_zero_and_positive_otherwise():
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(normal_kl(mean, logvar, mean, logvar), torch.zeros(4, 3), atol=1e-6)
    assert (normal_kl(mean, logvar, mean + 0.5, logvar - 0.3) > 0).all()


def test_kl_matches_closed_form_for_unit_gaussians():
    zero = torch.zeros(1)
    assert normal_kl(zero, zero, zero + 2.0, zero).item() == pytest.approx(2.0)


def test_approx_cdf_is_close_to_exact_normal_cdf():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert (approx_standard_normal_cdf(x) - torch.special.ndtr(x)).abs().max().item() < 1e-3


def test_discretized_likelihood_sums_to_one_over_the_256_bins():
    centers = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in ((0.3, -2.0), (-0.95, -4.0), (0.0, 0.0)):
        log_probs = discretized_gaussian_log_likelihood(
            centers, torch.full_like(centers, mean), torch.full_like(centers, log_scale)
        )
        assert log_probs.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        discretized_gaussian_log_likelihood(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))


def test_vb_trains_only_the_variance_channels():
    schedule = DiffusionSchedule.create("linear", 100)
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    output = torch.randn(2, 6, 4, 4, requires_grad=True)
    losses = training_losses(schedule, lambda x, t: output, x0, torch.tensor([0, 57]), vlb_weight=0.5)
    assert set(losses) == {"loss", "mse", "vb"}
    torch.testing.assert_close(losses["loss"], losses["mse"] + 0.5 * losses["vb"])
    losses["vb"].sum().backward()
    assert output.grad[:, :3].abs().max() == 0 and output.grad[:, 3:].abs().max() > 0


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_fixed_variance_loss_is_mse_only(variance):
    schedule = DiffusionSchedule.create("linear", 100)
    x0, noise = torch.zeros(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    losses = training_losses(
        schedule, lambda x, t: torch.zeros_like(x), x0, torch.tensor([3, 99]), noise, variance=variance
    )
    assert set(losses) == {"loss", "mse"}
    torch.testing.assert_close(losses["mse"], noise.pow(2).mean(dim=(1, 2, 3)))


def test_learned_range_rejects_wrong_channel_count():
    schedule = DiffusionSchedule.create("linear", 100)
    with pytest.raises(ValueError, match="3 channels; variance='learned_range'"):
        training_losses(schedule, lambda x, t: x, torch.zeros(1, 3, 4, 4), torch.tensor([5]))


def test_min_snr_weight_caps_only_the_low_noise_steps():
    schedule = DiffusionSchedule.create("linear", 1000)
    t = torch.arange(1000)
    weight = min_snr_weight(schedule, t, gamma=5.0)
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    torch.testing.assert_close(weight[snr <= 5], torch.ones(int((snr <= 5).sum()), dtype=weight.dtype))
    torch.testing.assert_close(weight[snr > 5], 5 / snr[snr > 5])
    assert weight[0] < 1e-3 and (weight.diff() >= 0).all()  # the cleanest steps weigh least
    with pytest.raises(ValueError, match="positive"):
        min_snr_weight(schedule, t, gamma=0.0)


def test_min_snr_weighting_scales_the_mse_term_of_the_loss_only():
    schedule = DiffusionSchedule.create("linear", 100)
    x0, noise, t = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 4, 4), torch.tensor([1, 80])
    output = torch.randn(2, 6, 4, 4)
    plain = training_losses(schedule, lambda x, s: output, x0, t, noise)
    weighted = training_losses(schedule, lambda x, s: output, x0, t, noise, min_snr_gamma=5.0)
    torch.testing.assert_close(weighted["mse"], plain["mse"])  # reported unweighted
    torch.testing.assert_close(weighted["vb"], plain["vb"])
    weight = min_snr_weight(schedule, t, 5.0).float()
    assert weight[0] < 0.1 and weight[1] == 1.0
    torch.testing.assert_close(weighted["loss"], weight * plain["mse"] + plain["vb"])

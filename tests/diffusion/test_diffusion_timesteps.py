import pytest
import torch

from lightning_modules.diffusion import LossSecondMomentSampler, UniformTimestepSampler


def warm_up(sampler: LossSecondMomentSampler) -> None:
    steps = torch.arange(sampler.num_timesteps)
    for _ in range(sampler.history_per_term):
        sampler.update(steps, (steps + 1).double())  # loss grows with t


def test_uniform_sampler_returns_unit_weights_and_valid_steps():
    t, weights = UniformTimestepSampler(50).sample(256, "cpu", torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() < 50
    assert weights.dtype == torch.float32 and (weights == 1).all()


def test_sampling_is_reproducible_with_a_generator():
    sampler = UniformTimestepSampler(1000)
    draws = [sampler.sample(8, "cpu", torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.equal(draws[0], draws[1])


def test_loss_aware_sampler_is_uniform_until_warm_then_follows_the_loss():
    sampler = LossSecondMomentSampler(20, history_per_term=3, uniform_prob=0.01)
    sampler.update(torch.tensor([0, 1]), torch.tensor([5.0, 6.0]))
    assert not sampler.warmed_up and (sampler.sample(16, "cpu")[1] == 1).all()
    warm_up(sampler)
    assert sampler.warmed_up
    probs = sampler.weights() / sampler.weights().sum()
    expected = (torch.arange(20) + 1.0).double() / 210 * 0.99 + 0.01 / 20
    torch.testing.assert_close(probs, expected)
    t, weights = sampler.sample(4096, "cpu", torch.Generator().manual_seed(0))
    assert (t >= 10).float().mean() > 0.6  # high-loss steps are drawn more often
    torch.testing.assert_close(weights, (1 / (20 * expected[t])).float())


def test_history_keeps_only_the_most_recent_losses():
    sampler = LossSecondMomentSampler(2, history_per_term=2)
    sampler.update(torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0]))
    assert sampler.state_dict()["history"][0].tolist() == [2.0, 3.0]


def test_state_dict_round_trip_resumes_exactly():
    sampler = LossSecondMomentSampler(30, history_per_term=2)
    warm_up(sampler)
    restored = LossSecondMomentSampler(30, history_per_term=2)
    restored.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(restored.weights(), sampler.weights())
    draws = [s.sample(16, "cpu", torch.Generator().manual_seed(3)) for s in (sampler, restored)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_load_state_dict_rejects_a_different_size():
    with pytest.raises(ValueError, match="'history' has shape"):
        LossSecondMomentSampler(10).load_state_dict(LossSecondMomentSampler(20).state_dict())

"""Training-time samplers of diffusion step indices, with importance weights that keep the loss unbiased."""

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class TimestepSampler(ABC):
    """Draws step indices t with probability p(t) and returns the importance weights 1 / (N·p(t))."""

    def __init__(self, num_timesteps: int) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
        self.num_timesteps = num_timesteps

    @abstractmethod
    def weights(self) -> Tensor:
        """Unnormalised float64 sampling weights of every step, shape (num_timesteps,)."""

    def sample(
        self, batch_size: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``batch_size`` step indices.

        Args:
            batch_size: Number of indices.
            device: Device of the returned tensors.
            generator: Optional random generator; drawing happens on its device.

        Returns:
            ``(t, weights)``: int64 indices and float32 importance weights, both of shape (batch_size,).
        """
        probs = self.weights()
        probs = probs / probs.sum()
        draw_device = generator.device if generator is not None else probs.device
        t = torch.multinomial(probs.to(draw_device), batch_size, replacement=True, generator=generator)
        t = t.to(device)
        weights = 1.0 / (self.num_timesteps * probs.to(device)[t])
        return t, weights.float()


class UniformTimestepSampler(TimestepSampler):
    """t ~ U{0..N−1}; every importance weight is 1.

    Args:
        num_timesteps: Number of steps N of the training schedule.
    """

    def weights(self) -> Tensor:
        return torch.ones(self.num_timesteps, dtype=torch.float64)


class LossSecondMomentSampler(TimestepSampler):
    """Importance sampling p(t) ∝ √E[L_t²] over the last losses seen at each step (iDDPM's loss-aware sampler).

    Until every step has ``history_per_term`` recorded losses it samples uniformly. Afterwards the
    second-moment weights are mixed with a uniform distribution of mass ``uniform_prob``.

    In distributed training every rank must call :meth:`update` with the steps and losses of **all** ranks (the
    caller all-gathers them, in rank order), so that every rank keeps an identical history and draws from the same
    distribution. :meth:`state_dict` and :meth:`load_state_dict` let a resumed run continue exactly.

    Args:
        num_timesteps: Number of steps N of the training schedule.
        history_per_term: Number of most recent losses remembered per step.
        uniform_prob: Probability mass mixed in uniformly once warmed up.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if history_per_term < 1:
            raise ValueError(f"history_per_term must be positive, got {history_per_term}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must lie in [0, 1], got {uniform_prob}")
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self._history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64)
        self._counts = torch.zeros(num_timesteps, dtype=torch.int64)

    @property
    def warmed_up(self) -> bool:
        """Whether every step has a full loss history."""
        return bool((self._counts == self.history_per_term).all())

    def weights(self) -> Tensor:
        if not self.warmed_up:
            return torch.ones(self.num_timesteps, dtype=torch.float64)
        weights = self._history.pow(2).mean(dim=1).sqrt()
        weights = weights / weights.sum()
        return weights * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record per-sample losses (detached) at their step indices, gathered from all ranks.

        Args:
            t: Step indices (B_total,).
            losses: The matching per-sample losses (B_total,).
        """
        if t.shape != losses.shape or t.ndim != 1:
            raise ValueError(f"t {tuple(t.shape)} and losses {tuple(losses.shape)} must be matching 1-D tensors")
        if t.numel() and not 0 <= int(t.min()) <= int(t.max()) < self.num_timesteps:
            raise ValueError(f"step indices must lie in [0, {self.num_timesteps}), got {t.min()}..{t.max()}")
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            if self._counts[step] == self.history_per_term:
                self._history[step] = torch.roll(self._history[step], -1)
                self._history[step, -1] = loss
            else:
                self._history[step, self._counts[step]] = loss
                self._counts[step] += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The loss history and per-step counts."""
        return {"history": self._history.clone(), "counts": self._counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state saved by :meth:`state_dict` of a sampler with the same sizes."""
        expected = {"history": tuple(self._history.shape), "counts": tuple(self._counts.shape)}
        for key, shape in expected.items():
            if key not in state:
                raise KeyError(f"LossSecondMomentSampler state is missing {key!r}")
            if tuple(state[key].shape) != shape:
                raise ValueError(
                    f"LossSecondMomentSampler state {key!r} has shape {tuple(state[key].shape)}, expected {shape}"
                )
        self._history = state["history"].detach().to("cpu", torch.float64).clone()
        self._counts = state["counts"].detach().to("cpu", torch.int64).clone()

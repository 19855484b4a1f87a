"""Noise schedules, timestep respacing and the immutable table of per-step diffusion coefficients."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

BETA_SCHEDULES = ("linear", "cosine")


def beta_schedule(name: str, num_timesteps: int = 1000) -> Tensor:
    """Return the float64 betas of a named schedule.

    Args:
        name: ``"linear"`` (DDPM: 1e-4 to 0.02 for T = 1000, both ends scaled by 1000 / T) or ``"cosine"``
            (iDDPM, offset s = 0.008, betas capped at 0.999).
        num_timesteps: Number of diffusion steps T.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
    if name == "linear":
        scale = 1000 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "cosine":

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
            for i in range(num_timesteps)
        ]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {name!r}; expected one of {BETA_SCHEDULES}")


def space_timesteps(num_timesteps: int, spec: str) -> list[int]:
    """Pick the steps kept by an official guided-diffusion respacing spec, sorted ascending.

    Args:
        num_timesteps: Number of steps of the schedule being respaced.
        spec: ``"ddimN"`` keeps ``range(0, num_timesteps, k)`` for the smallest stride k giving N steps.
            ``"a,b,..."`` (or a single ``"N"``) splits the steps into equal sections, the remainder going to the
            first sections, and takes ``count`` evenly spaced steps in each (a float stride accumulated and
            rounded half-to-even, as the official code does).

    Raises:
        ValueError: The spec is malformed or asks for more steps than a section or the schedule has.
    """
    spec = spec.strip()
    if spec.startswith("ddim"):
        try:
            count = int(spec[len("ddim") :])
        except ValueError:
            raise ValueError(f"respacing spec {spec!r}: expected 'ddimN' with an integer N") from None
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        raise ValueError(
            f"respacing spec {spec!r}: no integer stride gives exactly {count} of {num_timesteps} steps"
        )
    try:
        counts = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError(
            f"respacing spec {spec!r}: expected 'ddimN' or comma-separated integers such as '250' or '10,15,20'"
        ) from None
    if len(counts) > num_timesteps:
        raise ValueError(f"respacing spec {spec!r}: {len(counts)} sections but only {num_timesteps} steps")
    size_per_section, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for section, count in enumerate(counts):
        size = size_per_section + (1 if section < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(
                f"respacing spec {spec!r}: section {section} has {size} steps, cannot take {count} (need 1..{size})"
            )
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return kept


def extract(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Gather ``table[t]`` and shape it to broadcast against ``like``, on its device.

    The values come in ``like``'s dtype, but never below float32: a coefficient rounded to bfloat16 would already
    break the math (√ᾱ_t, the posterior coefficients and log β̃_t differ from their neighbours by less than its
    precision).

    Args:
        table: A 1-D (float64) schedule table.
        t: Integer step indices of shape (B,).
        like: The tensor the result will multiply, of shape (B, ...).
    """
    values = table.to(like.device)[t.to(like.device)].to(torch.promote_types(like.dtype, torch.float32))
    return values.reshape(t.shape[0], *([1] * (like.ndim - 1)))


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """Immutable per-step coefficients of a discrete Gaussian diffusion.

    Step index ``i`` (0..num_steps-1) is what the math indexes; ``timesteps[i]`` is the original timestep the
    network receives (equal to ``i`` unless the schedule was respaced). All tables are float64 and 1-D;
    ``fixed_large_log_variance`` is log β_t with β̃_1 at step 0, the "fixed large" variance of DDPM.

    Args:
        betas: Noise variances β_i, each in (0, 1].
        timesteps: Original timestep of each step (strictly increasing int64); defaults to ``arange(len(betas))``.
    """

    betas: Tensor
    timesteps: Tensor | None = None
    alphas_cumprod: Tensor = field(init=False, repr=False)
    alphas_cumprod_prev: Tensor = field(init=False, repr=False)
    sqrt_alphas_cumprod: Tensor = field(init=False, repr=False)
    sqrt_one_minus_alphas_cumprod: Tensor = field(init=False, repr=False)
    sqrt_recip_alphas_cumprod: Tensor = field(init=False, repr=False)
    sqrt_recipm1_alphas_cumprod: Tensor = field(init=False, repr=False)
    posterior_variance: Tensor = field(init=False, repr=False)
    posterior_log_variance_clipped: Tensor = field(init=False, repr=False)
    posterior_mean_coef1: Tensor = field(init=False, repr=False)
    posterior_mean_coef2: Tensor = field(init=False, repr=False)
    log_betas: Tensor = field(init=False, repr=False)
    fixed_large_log_variance: Tensor = field(init=False, repr=False)
    _on_device: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().clone()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must all lie in (0, 1]")
        if self.timesteps is None:
            timesteps = torch.arange(betas.numel(), dtype=torch.int64, device=betas.device)
        else:
            timesteps = torch.as_tensor(self.timesteps, dtype=torch.int64, device=betas.device).clone()
        if timesteps.shape != betas.shape:
            raise ValueError(f"timesteps shape {tuple(timesteps.shape)} differs from betas {tuple(betas.shape)}")
        if timesteps.numel() > 1 and not bool((timesteps[1:] > timesteps[:-1]).all()):
            raise ValueError("timesteps must be strictly increasing")

        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃_0 = 0, so its log is replaced by the next step's value (by β_0 for a one-step schedule).
        first_nonzero = posterior_variance[1:2] if betas.numel() > 1 else betas[:1]
        tables = {
            "betas": betas,
            "timesteps": timesteps,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": torch.cat([first_nonzero, posterior_variance[1:]]).log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
            "log_betas": betas.log(),
            "fixed_large_log_variance": torch.cat([first_nonzero, betas[1:]]).log(),
        }
        for name, value in tables.items():
            object.__setattr__(self, name, value)

    @classmethod
    def create(cls, name: str = "linear", num_timesteps: int = 1000) -> DiffusionSchedule:
        """Build the full schedule of a named beta schedule (see :func:`beta_schedule`)."""
        return cls(beta_schedule(name, num_timesteps))

    @property
    def num_steps(self) -> int:
        """Number of steps of this (possibly respaced) schedule."""
        return self.betas.numel()

    def respace(self, spec: str) -> DiffusionSchedule:
        """Keep the steps chosen by ``spec`` (see :func:`space_timesteps`), preserving ᾱ at every kept step.

        The new betas are β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} with ᾱ_{τ_{−1}} = 1. Respacing a respaced schedule
        composes: the spec indexes this schedule's steps and ``timesteps`` keeps pointing at the original ones.
        """
        kept = torch.tensor(space_timesteps(self.num_steps, spec), dtype=torch.int64, device=self.betas.device)
        alphas_cumprod = self.alphas_cumprod[kept]
        previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        return DiffusionSchedule(1.0 - alphas_cumprod / previous, self.timesteps[kept])

    def truncated(self, num_steps: int) -> DiffusionSchedule:
        """The first ``num_steps`` steps (the least noisy ones), with every coefficient unchanged: a sampler walking
        it starts at step ``num_steps - 1`` (SDEdit-style partial sampling from a noised image)."""
        if not 1 <= num_steps <= self.num_steps:
            raise ValueError(f"num_steps must lie in [1, {self.num_steps}], got {num_steps}")
        return self if num_steps == self.num_steps else DiffusionSchedule(self.betas[:num_steps],
                                                                          self.timesteps[:num_steps])

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        """Return this schedule with every table on ``device`` (cached, so repeated calls are free)."""
        device = torch.device(device)
        if device == self.betas.device:
            return self
        if device not in self._on_device:
            moved = copy.copy(self)
            for name in self.__dataclass_fields__:
                value = getattr(self, name)
                if isinstance(value, Tensor):
                    object.__setattr__(moved, name, value.to(device))
            object.__setattr__(moved, "_on_device", {})
            self._on_device[device] = moved
        return self._on_device[device]

"""Timed measurements of one network: a training step, guided sampling, forward FLOPs, baseline parity.

Every function builds its own copy of the network (so options such as channels_last or torch.compile never leak
between measurements), synchronises the device only around the timed region and returns plain numbers.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from experiments.benchmark_baseline import naive_copy, sequential_guided_denoiser
from experiments.benchmark_workloads import Workload
from lightning_modules.base import respacing_spec
from lightning_modules.diffusion import SAMPLERS, DiffusionSchedule, SamplerStep, guided_denoiser, training_losses


@dataclass(frozen=True)
class Variant:
    """How the network runs in one measurement.

    Attributes:
        name: Row label.
        precision: ``"fp32"`` or ``"bf16"`` (autocast around forward and loss, weights stay fp32).
        compile: Wrap the network in ``torch.compile``.
        channels_last: Network weights and image inputs in channels_last memory format.
        checkpointing: Activation checkpointing of every block (recompute in backward).
        naive: Run the original code's way: einsum attention and sequential guidance passes.
    """

    name: str
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    checkpointing: bool = False
    naive: bool = False

    @property
    def attention(self) -> str:
        return "einsum" if self.naive else "SDPA"


@dataclass(frozen=True)
class Timing:
    """Result of one timed measurement.

    Attributes:
        images_per_s: Throughput over the timed region.
        warmup_s: Wall-clock time of the untimed warm-up (includes compilation).
        peak_memory_gib: Peak allocated device memory (CUDA only).
        timed_steps: Sampler steps actually run (fewer than requested when extrapolated).
    """

    images_per_s: float
    warmup_s: float
    peak_memory_gib: float | None = None
    timed_steps: int | None = None


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepared_network(workload: Workload, variant: Variant, device: torch.device) -> nn.Module:
    """A fresh copy of the workload's network on ``device``, set up as ``variant`` says."""
    net = naive_copy(workload.net) if variant.naive else copy.deepcopy(workload.net)
    net = net.to(device)
    if variant.channels_last:
        net = net.to(memory_format=torch.channels_last)
    for module in net.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = variant.checkpointing
    return torch.compile(net) if variant.compile else net


def _as_layout(tensors: Mapping[str, Any], channels_last: bool) -> dict[str, Any]:
    if not channels_last:
        return dict(tensors)
    return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in tensors.items()}


def _wall_seconds(run: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Wall-clock seconds of ``repeats`` calls of ``run``, the device synchronised only before and after."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    return time.perf_counter() - start


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measure_training(
    workload: Workload,
    variant: Variant,
    *,
    batch: int,
    size: tuple[int, int],
    device: torch.device,
    warmup: int,
    steps: int,
    seed: int = 0,
) -> Timing:
    """Images/s of forward + hybrid loss + backward + AdamW step (median of ``steps`` timed steps, same batch)."""
    _reset_peak_memory(device)
    model = prepared_network(workload, variant, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), **workload.module.optimizer_options)
    generator = torch.Generator(device).manual_seed(seed)
    schedule = workload.module.schedule.to(device)
    x0 = torch.randn(batch, workload.image_channels, *size, generator=generator, device=device)
    conditions = workload.conditions(batch, size, generator)
    inputs = _as_layout({"x0": x0, **conditions}, variant.channels_last)
    x0 = inputs.pop("x0")
    t = torch.randint(0, schedule.num_steps, (batch,), generator=generator, device=device)
    noise = torch.randn(x0.shape, generator=generator, device=device)

    def step() -> None:
        with autocast(device, variant.precision):
            losses = training_losses(
                schedule,
                lambda x_t, timesteps: model(x_t, timesteps, **inputs),
                x0,
                t,
                noise,
                variance=workload.module.variance,
                vlb_weight=workload.module.vlb_weight,
            )
        losses["loss"].mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup_s = _wall_seconds(step, warmup, device)
    # The median step time resists interference from other processes better than the mean.
    seconds = statistics.median(_wall_seconds(step, 1, device) for _ in range(steps))
    return Timing(batch / seconds, warmup_s, _peak_memory_gib(device))


def measure_sampling(
    model: nn.Module,
    workload: Workload,
    variant: Variant,
    *,
    sampler: str,
    steps: int,
    batch: int,
    size: tuple[int, int],
    device: torch.device,
    guidance_scale: float,
    max_timed_steps: int,
    probe_steps: int,
    seed: int = 0,
) -> Timing:
    """Images/s of guided sampling with ``steps`` steps of ``sampler`` over the network's training schedule.

    ``model`` is :func:`prepared_network` for ``variant`` (built once and reused across samplers, so compilation
    happens once). Guidance runs in one batched call per step, or in sequential calls for a naive variant. The
    condition variants (and PIDM's texture features) are built inside the timed run, once, as sampling does.
    The run takes ``steps`` steps, or ``probe_steps`` of the same sampler (same work per step) when ``steps``
    exceeds ``max_timed_steps``; its time is estimated as the first step (including the setup) plus the median
    of the other step times for each remaining step, which resists interference from other processes. The
    warm-up is a 2-step run.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    timed_steps = steps if steps <= max_timed_steps else probe_steps
    if timed_steps < 2:
        raise ValueError(f"a timed sampling run needs at least 2 steps, got {timed_steps} (see probe_steps)")
    schedule = workload.module.schedule

    def respaced(count: int) -> DiffusionSchedule:
        spec = respacing_spec(sampler, count, schedule.num_steps)
        return schedule if spec is None else schedule.respace(spec)

    _reset_peak_memory(device)
    generator = torch.Generator(device).manual_seed(seed)
    data = _as_layout(workload.data_batch(batch, size, generator), variant.channels_last)
    x_T = torch.randn(batch, workload.image_channels, *size, generator=generator, device=device)
    guidance = workload.guidance(guidance_scale)
    wrap = sequential_guided_denoiser if variant.naive else guided_denoiser
    clock: list[float] = []

    def float_output(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        return model(x, t, **kwargs).float()

    def tick(_: SamplerStep) -> None:
        synchronize(device)
        clock.append(time.perf_counter())

    def sample(run_schedule: DiffusionSchedule) -> None:
        clock.clear()
        tick(None)
        with torch.no_grad(), autocast(device, variant.precision):
            variants, rule, _ = workload.module.guided_conditions(data, guidance, model)
            denoise = wrap(float_output, variants, rule)
            SAMPLERS[sampler](
                denoise, x_T, run_schedule, variance=workload.module.variance, generator=generator, callback=tick
            )

    warmup_s = _wall_seconds(lambda: sample(respaced(2)), 1, device)
    sample(respaced(timed_steps))
    intervals = [end - start for start, end in zip(clock, clock[1:])]
    seconds = intervals[0] + statistics.median(intervals[1:]) * (steps - 1)
    return Timing(batch / seconds, warmup_s, _peak_memory_gib(device), timed_steps)


def forward_flops(workload: Workload, size: tuple[int, int], device: torch.device) -> tuple[int, int]:
    """FLOPs of one image's forward pass: (training forward, one guidance variant's sampling forward).

    Counted on the einsum baseline (its attention is explicit matmuls, which the counter sees on every device).
    For PIDM the training forward includes the texture encoder; sampling reuses cached texture features.
    """
    model = naive_copy(workload.net).to(device).eval()
    generator = torch.Generator(device).manual_seed(0)
    data = workload.data_batch(1, size, generator)
    conditions = workload.module.training_inputs(data)[1]
    x = torch.randn(1, workload.image_channels, *size, generator=generator, device=device)
    t = torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad():
        variants, _, _ = workload.module.guided_conditions(data, workload.guidance(2.0), model)
        counts = []
        for kwargs in (conditions, next(iter(variants.values()))):
            with FlopCounterMode(display=False) as counter:
                model(x, t, **kwargs)
            counts.append(counter.get_total_flops())
    return counts[0], counts[1]


def baseline_max_abs_diff(workload: Workload, size: tuple[int, int], device: torch.device, batch: int = 2) -> float:
    """Largest |output difference| between the einsum baseline and the SDPA network (fp32, same weights/inputs)."""
    generator = torch.Generator(device).manual_seed(0)
    conditions = workload.conditions(batch, size, generator)
    x = torch.randn(batch, workload.image_channels, *size, generator=generator, device=device)
    t = torch.randint(0, workload.module.schedule.num_steps, (batch,), generator=generator, device=device)
    outputs = []
    for variant in (Variant("SDPA"), Variant("einsum", naive=True)):
        model = prepared_network(workload, variant, device).eval()
        with torch.no_grad():
            outputs.append(model(x, t, **conditions))
    return (outputs[0] - outputs[1]).abs().max().item()

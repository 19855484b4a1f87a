r"""Training and sampling speed of an experiment's network, side by side with a naive baseline of the same model.

    python -m experiments.benchmark --config configs/sdm/ade20k.yaml [--config more.yaml ...] \
        [--model_size auto|config|small] [--image_size N] [--batch_size N] [--device auto|cpu|cuda] \
        [--train_steps N] [--sample_steps ddpm:1000,ddim:50,dpmpp_2m:25] [--compile auto|on|off] [--out table.md]

The experiment configs are read as ``experiments.fit`` reads them (several ``--config`` merge in order; dotted
overrides such as ``--model.init_args.network.model_channels 64`` and ``--print_config`` work alike), and the
network is built from the resulting ``model`` section exactly as ``fit`` builds it. Measured:
training images/s and peak memory (fp32 vs bf16 autocast, torch.compile on/off, channels_last, activation
checkpointing), guided sampling images/s per sampler and step count, forward FLOPs per image and, on a GPU of
known peak, model-FLOP utilisation. The naive baseline (the original code's way: fp32, eager, einsum attention,
sequential guidance passes, 1000-step DDPM) runs in the same process, so every speed-up is a measured ratio.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning.cli import LightningArgumentParser

from experiments.benchmark_measure import (
    Timing,
    Variant,
    baseline_max_abs_diff,
    forward_flops,
    measure_sampling,
    measure_training,
    prepared_network,
)
from experiments.benchmark_workloads import (
    SMALL_BATCH_SIZE,
    SMALL_NETWORK,
    Workload,
    network_overrides,
    randomize_zero_parameters,
)
from experiments.cli import SHARED_CALLBACKS, CondiffCLI
from experiments.errors import CommandError, run_main
from lightning_modules.base import DiffusionLitModule
from lightning_modules.diffusion import SAMPLERS

# Dense bf16 tensor-core peak per GPU (FLOP/s), matched against the device name.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
BASELINE_SAMPLER = ("ddpm", 1000)


@dataclass
class Settings:
    """What to measure.

    Attributes:
        batch: Images per training step and per sampling run.
        size: Input (height, width).
        device: Where everything runs.
        precisions: Measured precisions, ``"fp32"`` and/or ``"bf16"``; the last one also gets the
            channels_last, checkpointing and (sampling) compile rows.
        compile_skip_reason: Why torch.compile rows are skipped (printed in the notes), or None to measure them.
        warmup_steps: Untimed training steps per variant.
        train_steps: Timed training steps per variant (their median is reported).
        sample_steps: (sampler, steps) pairs of the optimised sampling rows.
        guidance_scale: Guidance scale (> 1, so that guidance runs).
        max_timed_steps: Larger step counts are extrapolated from a ``probe_steps`` run.
        probe_steps: Steps actually run for an extrapolated row.
        parts: ``"train"`` and/or ``"sample"``.
        seed: Seed of the random batches and sampler noise.
    """

    batch: int
    size: tuple[int, int]
    device: torch.device
    precisions: tuple[str, ...] = ("fp32", "bf16")
    compile_skip_reason: str | None = None
    warmup_steps: int = 2
    train_steps: int = 3
    sample_steps: tuple[tuple[str, int], ...] = (("ddpm", 1000), ("ddim", 50), ("dpmpp_2m", 25))
    guidance_scale: float = 2.0
    max_timed_steps: int = 100
    probe_steps: int = 10
    parts: tuple[str, ...] = ("train", "sample")
    seed: int = 0


@dataclass
class Report:
    """Header lines, the two tables (rows keyed by column title) and notes; :meth:`markdown` renders them."""

    title: str
    header: list[str] = field(default_factory=list)
    training: list[dict[str, str]] = field(default_factory=list)
    sampling: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", *(f"- {line}" for line in self.header), ""]
        for name, rows in (("Training", self.training), ("Guided sampling", self.sampling)):
            if rows:
                lines += [f"**{name}**", "", *markdown_table(rows), ""]
        if self.notes:
            lines += ["Notes:", "", *(f"- {note}" for note in self.notes), ""]
        return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, str]]) -> list[str]:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "CPU")
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.exists() else []


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def compile_skip_reason(mode: str, device: torch.device) -> str | None:
    """Why torch.compile rows are not measured, or None when they are."""
    if mode == "off":
        return "torch.compile rows skipped: --compile off"
    if device.type == "cpu":
        if mode == "auto":
            return ("torch.compile rows skipped on CPU (--compile auto): Inductor's C++ build of this UNet took over "
                    "8 minutes on the 2-core development machine; pass --compile on to measure it")
        if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++")):
            return "torch.compile rows skipped: no C++ compiler (c++, g++, clang++) on PATH for Inductor's CPU backend"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile rows skipped: Triton is not installed, Inductor cannot generate GPU kernels"
    return None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _mfu(images_per_s: float, flops_per_image: float, peak: float | None) -> str:
    return "—" if peak is None else f"{100 * images_per_s * flops_per_image / peak:.1f} %"


def training_variants(settings: Settings) -> list[Variant]:
    best = settings.precisions[-1]
    variants = [Variant("naive baseline", naive=True)]
    variants += [Variant(p, p) for p in settings.precisions]
    variants += [
        Variant(f"{best} + channels_last", best, channels_last=True),
        Variant(f"{best} + activation checkpointing", best, checkpointing=True),
    ]
    if settings.compile_skip_reason is None:
        variants += [Variant(f"{p} + compile", p, compile=True) for p in settings.precisions]
    return variants


def sampling_variants(settings: Settings) -> list[Variant]:
    best = settings.precisions[-1]
    variants = [Variant(p, p) for p in settings.precisions]
    if settings.compile_skip_reason is None:
        variants.append(Variant(f"{best} + compile", best, compile=True))
    return variants


def benchmark(workload: Workload, settings: Settings, title: str, header: Sequence[str] = ()) -> Report:
    """Measure ``workload`` as ``settings`` say; progress and rows print as they finish."""
    device, size = settings.device, settings.size
    peak = peak_flops(device)
    train_flops, sample_flops = forward_flops(workload, size, device)
    diff = baseline_max_abs_diff(workload, size, device)
    measured = [
        f"device: {device_name(device)}; torch {torch.__version__}",
        f"images {size[0]}×{size[1]}, batch {settings.batch}; guidance scale {settings.guidance_scale}",
        f"forward FLOPs per image (FlopCounterMode): training {train_flops / 1e9:.3g} GFLOP, "
        f"sampling (one guidance variant) {sample_flops / 1e9:.3g} GFLOP",
        f"einsum baseline vs SDPA network, fp32, same weights and inputs: max |Δ| = {diff:.2e}",
    ]
    print("\n".join(measured), flush=True)
    report = Report(title, header=[*header, *measured])
    if peak is None:
        where = "" if device.type == "cuda" else " (MFU is measured on GPUs only)"
        report.notes.append(f"MFU omitted: no peak-FLOPs entry for this device{where}")
    else:
        report.notes.append(f"MFU = achieved model FLOP/s (forward ×3 for training) / {peak / 1e12:.0f} TFLOP/s "
                            "dense bf16 peak, for every precision")
    if device.type != "cuda":
        report.notes.append("peak memory is reported on CUDA only (CPU has no allocator statistics)")
    if settings.compile_skip_reason:
        report.notes.append(settings.compile_skip_reason)
        print(settings.compile_skip_reason, flush=True)
    if "train" in settings.parts:
        report.training = training_table(workload, settings, train_flops, peak)
        report.notes.append(f"training: {settings.warmup_steps} warm-up steps, then the median of "
                            f"{settings.train_steps} timed steps of forward + hybrid loss + backward + AdamW on one "
                            "fixed random batch")
    if "sample" in settings.parts:
        report.sampling = sampling_table(workload, settings, sample_flops, peak)
        report.notes.append(
            "sampling: one run per row after a 2-step warm-up; time = first step (incl. building the guidance "
            "variants and PIDM texture features) + median step time × remaining steps; 'extrapolated' rows ran only "
            "the stated number of steps of the same sampler (same work per step)"
        )
    return report


def training_table(workload: Workload, settings: Settings, flops: float, peak: float | None) -> list[dict[str, str]]:
    """One row per :func:`training_variants` entry; the first (naive) row is the speed-up reference."""
    rows, baseline = [], None
    for variant in training_variants(settings):
        timing = measure_training(
            workload, variant, batch=settings.batch, size=settings.size, device=settings.device,
            warmup=settings.warmup_steps, steps=settings.train_steps, seed=settings.seed,
        )  # fmt: skip
        baseline = baseline or timing
        rows.append({
            "variant": variant.name,
            "precision": variant.precision,
            "attention": variant.attention,
            "compile": "yes" if variant.compile else "no",
            "images/s": _fmt(timing.images_per_s),
            "× naive": f"{timing.images_per_s / baseline.images_per_s:.2f}",
            "peak GiB": _fmt(timing.peak_memory_gib),
            "MFU": _mfu(timing.images_per_s, 3 * flops, peak),
            "warm-up s": f"{timing.warmup_s:.1f}",
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def sampling_table(workload: Workload, settings: Settings, flops: float, peak: float | None) -> list[dict[str, str]]:
    """The naive DDPM-1000 row (the speed-up reference), then every sampler for each :func:`sampling_variants`."""
    naive = Variant("naive baseline", naive=True)
    plan = [(naive, [BASELINE_SAMPLER])] + [(v, list(settings.sample_steps)) for v in sampling_variants(settings)]
    rows, baseline = [], None
    for variant, samplers in plan:
        model = prepared_network(workload, variant, settings.device).eval()
        for sampler, steps in samplers:
            timing = measure_sampling(
                model, workload, variant, sampler=sampler, steps=steps, batch=settings.batch, size=settings.size,
                device=settings.device, guidance_scale=settings.guidance_scale,
                max_timed_steps=settings.max_timed_steps, probe_steps=settings.probe_steps, seed=settings.seed,
            )  # fmt: skip
            baseline = baseline or timing
            rows.append(_sampling_row(workload, settings, variant, sampler, steps, timing, baseline, flops, peak))
            print(rows[-1], flush=True)
        del model
    return rows


def _sampling_row(
    workload: Workload,
    settings: Settings,
    variant: Variant,
    sampler: str,
    steps: int,
    timing: Timing,
    baseline: Timing,
    flops: float,
    peak: float | None,
) -> dict[str, str]:
    passes = len(workload.guidance(settings.guidance_scale).rule().active_variants)
    nfe = steps * passes
    return {
        "variant": variant.name,
        "sampler": f"{sampler}-{steps}",
        "guidance": f"{passes} sequential calls" if variant.naive else f"1 batched call ({passes}×)",
        "precision": variant.precision,
        "attention": variant.attention,
        "NFE/image": str(nfe),
        "images/s": _fmt(timing.images_per_s),
        "s/image": _fmt(1 / timing.images_per_s),
        "× naive": f"{timing.images_per_s / baseline.images_per_s:.1f}",
        "MFU": _mfu(timing.images_per_s, nfe * flops, peak),
        "timing": "measured" if timing.timed_steps == steps else f"extrapolated from {timing.timed_steps} steps",
    }


def parse_sample_steps(text: str) -> tuple[tuple[str, int], ...]:
    """``"ddim:50,dpmpp_2m:25"`` → ``(("ddim", 50), ("dpmpp_2m", 25))``."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        sampler, _, steps = item.partition(":")
        if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise ValueError(
                f"--sample_steps item {item!r} is not SAMPLER:STEPS with SAMPLER in {sorted(SAMPLERS)} (e.g. ddim:50)"
            )
        pairs.append((sampler, int(steps)))
    return tuple(pairs)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: no CUDA device is available")
    return torch.device(name)


@dataclass
class BenchmarkOptions:
    """What the benchmark measures, besides the experiment configs.

    Args:
        model_size: ``config``: the config's architecture (the paper's in configs/); ``small``: a 32-channel
            3-level version for CPU runs; ``auto``: config on CUDA, small on CPU.
        image_size: Input size (default: the network's ``image_size``).
        batch_size: Images per step (default: the data section's ``batch_size``; 2 for the small architecture).
        device: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``.
        warmup_steps: Untimed training steps per variant.
        train_steps: Timed training steps per variant (their median is reported).
        sample_steps: Optimised samplers and step counts, ``SAMPLER:STEPS,...``.
        max_timed_steps: Step counts above this are extrapolated from a ``probe_steps`` run.
        probe_steps: Steps actually run for an extrapolated row.
        precisions: Measured precisions.
        compile: torch.compile rows (``auto``: on CUDA only).
        guidance_scale: Strength of the family's guidance (SDM classifier-free, PIDM official style-only); > 1.
        parts: What to measure.
        seed: Seed of the random batches and sampler noise.
        out: Also write the markdown report here.
    """

    model_size: Literal["auto", "config", "small"] = "auto"
    image_size: int | None = None
    batch_size: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    warmup_steps: int = 2
    train_steps: int = 3
    sample_steps: str = "ddpm:1000,ddim:50,dpmpp_2m:25"
    max_timed_steps: int = 100
    probe_steps: int = 10
    precisions: list[Literal["fp32", "bf16"]] = field(default_factory=lambda: ["fp32", "bf16"])
    compile: Literal["auto", "on", "off"] = "auto"
    guidance_scale: float = 2.0
    parts: list[Literal["train", "sample"]] = field(default_factory=lambda: ["train", "sample"])
    seed: int = 0
    out: Path | None = None


class BenchmarkCLI(CondiffCLI):
    """The experiment configs as ``experiments.fit`` reads them, plus :class:`BenchmarkOptions` at the top level;
    the small architecture replaces the config's network before the model is built."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(BenchmarkOptions, nested_key=None, as_group=True)

    def before_instantiate_classes(self) -> None:
        if model_size(self.config) == "small":
            for key, value in network_overrides(self.config.model.class_path, SMALL_NETWORK).items():
                self.config.model.init_args.network[key] = value


def model_size(options: Any) -> str:
    """``config`` or ``small``: what ``model_size`` means on this machine."""
    if options.model_size != "auto":
        return options.model_size
    return "config" if resolve_device(options.device).type == "cuda" else "small"


def main(argv: Sequence[str] | None = None) -> Report:
    """Entry point; ``argv`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cli = BenchmarkCLI(model_class=None, datamodule_class=None, subclass_mode_model=True, subclass_mode_data=True,
                       save_config_callback=None, run=False, args=argv,
                       parser_kwargs={"default_config_files": [str(SHARED_CALLBACKS)], "allow_abbrev": False})
    options = cli.config
    device = resolve_device(options.device)
    try:
        sample_steps = parse_sample_steps(options.sample_steps)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if not isinstance(cli.model, DiffusionLitModule):
        raise CommandError(f"the benchmark measures diffusion models; the config builds a {type(cli.model).__name__}")
    workload = Workload(cli.model.eval())  # no condition dropout in the inputs it builds
    torch.manual_seed(options.seed)
    randomize_zero_parameters(workload.net, torch.Generator().manual_seed(options.seed))
    image_size = options.image_size or workload.net.config.image_size
    small = model_size(options) == "small"
    batch = options.batch_size or (SMALL_BATCH_SIZE if small else cli.datamodule.batch_size)
    precisions = tuple(options.precisions)
    if not precisions:
        raise CommandError("--precisions must name fp32, bf16 or both")
    if device.type == "cuda" and "bf16" in precisions and not torch.cuda.is_bf16_supported():
        raise CommandError("--precisions includes bf16, which this GPU does not support; pass --precisions [fp32]")
    settings = Settings(
        batch=batch,
        size=(image_size, image_size),
        device=device,
        precisions=precisions,
        compile_skip_reason=compile_skip_reason(options.compile, device),
        warmup_steps=options.warmup_steps,
        train_steps=options.train_steps,
        sample_steps=sample_steps,
        guidance_scale=options.guidance_scale,
        max_timed_steps=options.max_timed_steps,
        probe_steps=options.probe_steps,
        parts=tuple(options.parts),
        seed=options.seed,
    )
    parameters = sum(p.numel() for p in workload.net.parameters())
    configs = ", ".join(str(path) for path in options.get("config") or [])
    small_network = network_overrides(options.model.class_path, SMALL_NETWORK)
    size_note = f"small architecture {small_network}" if small else "the config's architecture"
    header = [
        f"command: `python -m experiments.benchmark {shlex.join(argv)}`",
        f"network: {type(workload.net).__name__} from {configs}, {size_note}, "
        f"{parameters / 1e6:.2f} M parameters",
    ]
    print("\n".join(header), flush=True)
    report = benchmark(workload, settings, f"{workload.family} benchmark on {device_name(device)}", header)
    text = report.markdown()
    print("\n" + text)
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    run_main(main)

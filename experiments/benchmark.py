"""Training and sampling speed of an experiment's network, side by side with a naive baseline of the same model.

    python -m experiments.benchmark --config configs/sdm/ade20k.yaml [--model-size auto|config|small]
        [--image-size N] [--batch-size N] [--device auto|cpu|cuda] [--train-steps N]
        [--sample-steps ddpm:1000,ddim:50,dpmpp_2m:25] [--compile auto|on|off] [--out table.md]

The network is built from the config's ``model`` section exactly as ``experiments.fit`` builds it. Measured:
training images/s and peak memory (fp32 vs bf16 autocast, torch.compile on/off, channels_last, activation
checkpointing), guided sampling images/s per sampler and step count, forward FLOPs per image and, on a GPU of
known peak, model-FLOP utilisation. The naive baseline (the original code's way: fp32, eager, einsum attention,
sequential guidance passes, 1000-step DDPM) runs in the same process, so every speed-up is a measured ratio.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
    load_lit_module,
    network_overrides,
    randomize_zero_parameters,
    read_config,
)
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
            raise argparse.ArgumentTypeError(
                f"--sample-steps item {item!r} is not SAMPLER:STEPS with SAMPLER in {sorted(SAMPLERS)} (e.g. ddim:50)"
            )
        pairs.append((sampler, int(steps)))
    return tuple(pairs)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (model and data in class_path form)")
    parser.add_argument("--model-size", choices=("auto", "config", "small"), default="auto",
                        help="'config': the config's architecture (the paper's in configs/); 'small': a 32-channel "
                             "3-level version for CPU runs; 'auto': config on CUDA, small on CPU")
    parser.add_argument("--image-size", type=int, help="input size (default: the model's image_size)")
    parser.add_argument("--batch-size", type=int,
                        help=f"batch size (default: the data section's batch_size; {SMALL_BATCH_SIZE} for small)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps per variant")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per variant")
    parser.add_argument("--sample-steps", type=parse_sample_steps, default="ddpm:1000,ddim:50,dpmpp_2m:25",
                        help="optimised samplers and step counts, SAMPLER:STEPS,...")
    parser.add_argument("--max-timed-steps", type=int, default=100,
                        help="step counts above this are extrapolated from a --probe-steps run")
    parser.add_argument("--probe-steps", type=int, default=10)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated subset of fp32,bf16")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile rows ('auto': on CUDA only)")
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--parts", default="train,sample", help="comma-separated subset of train,sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Report:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = resolve_device(args.device)
    model_size = args.model_size if args.model_size != "auto" else ("config" if device.type == "cuda" else "small")
    sections = read_config(args.config)
    overrides = {}
    if model_size == "small":
        overrides = network_overrides(sections["model"]["class_path"], SMALL_NETWORK)
    workload = Workload(load_lit_module(args.config, overrides))
    torch.manual_seed(args.seed)
    randomize_zero_parameters(workload.net, torch.Generator().manual_seed(args.seed))
    image_size = args.image_size or workload.module.net.config.image_size
    config_batch = (sections["data"].get("init_args") or {}).get("batch_size", 4)
    batch = args.batch_size or (SMALL_BATCH_SIZE if model_size == "small" else config_batch)
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        raise SystemExit(f"--precisions must be a subset of fp32,bf16, got {args.precisions!r}")
    if device.type == "cuda" and "bf16" in precisions and not torch.cuda.is_bf16_supported():
        raise SystemExit("--precisions includes bf16, which this GPU does not support; pass --precisions fp32")
    parts = tuple(p.strip() for p in args.parts.split(","))
    if set(parts) - {"train", "sample"}:
        raise SystemExit(f"--parts must be a subset of train,sample, got {args.parts!r}")
    settings = Settings(
        batch=batch,
        size=(image_size, image_size),
        device=device,
        precisions=precisions,
        compile_skip_reason=compile_skip_reason(args.compile, device),
        warmup_steps=args.warmup_steps,
        train_steps=args.train_steps,
        sample_steps=args.sample_steps,
        guidance_scale=args.guidance_scale,
        max_timed_steps=args.max_timed_steps,
        probe_steps=args.probe_steps,
        parts=parts,
        seed=args.seed,
    )
    parameters = sum(p.numel() for p in workload.net.parameters())
    size_note = f"small architecture {overrides}" if overrides else "the config's architecture"
    header = [
        f"command: `python -m experiments.benchmark {shlex.join(argv)}`",
        f"network: {type(workload.net).__name__} from {args.config}, {size_note}, {parameters / 1e6:.2f} M parameters",
    ]
    print("\n".join(header), flush=True)
    report = benchmark(workload, settings, f"{workload.family} benchmark on {device_name(device)}", header)
    text = report.markdown()
    print("\n" + text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()

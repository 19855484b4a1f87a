r"""Animate a person: one PIDM frame per pose of a sequence, written as PNGs, an animated GIF and an MP4.

    python -m experiments.animate --ckpt_path runs/pidm_persons/version_0/checkpoints/last.ckpt \
        --source person.jpg --poses dance/ --out animation/ [--noise shared] [--smooth 1.5]
    # several photos of the subject: each frame takes the photo whose pose is nearest its own
    python -m experiments.animate --ckpt_path last.ckpt --source front.jpg --source back.jpg \
        --source_poses front.txt --source_poses back.txt --poses dance/ --out animation/

``--poses`` is a pose sequence: a folder of per-frame OpenPose JSON files (BODY_25 or COCO-18; ``--pose_frame_size
H W`` when the files do not give the canvas size), a folder of GFLA txt files, or one PATN CSV (docs/pidm.md, "Pose
sequences"). Joints below ``--min_confidence`` are missing; missing joints are filled from the neighbouring frames
(gaps up to ``--max_gap`` frames; longer ones are left out of the rendering) and ``--smooth`` (frames, a Gaussian
sigma) removes keypoint jitter.

A model trained with a pose window (``pose_window`` K, docs/pidm.md) gets each frame's K poses centred on it.

Noise: with ``--noise shared`` (default) every frame starts from the same initial noise and gets the same noise at
every sampler step, so that what changes between frames is the pose, not the draw; ``--noise independent`` samples
each frame as ``experiments.predict`` would. The sampler (``--sampler``, ``--steps``, ``--eta``, ``--seed``) and the
guidance (``--guidance.form``, ``--guidance.w_pose``, ``--guidance.w_style``, ``--guidance.scale``) default to the
checkpoint's, as in predict. Outputs: ``<out>/frame_0000.png ...``, ``<out>/animation.gif`` and
``<out>/animation.mp4`` (MPEG-4 Part 2, see datamodules/video_files.py); existing files are never overwritten without
``--overwrite true``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from datamodules.image_files import write_png
from datamodules.keypoints import MISSING, load_keypoints_txt, transform_keypoints
from datamodules.pose_sequences import PoseSequence, fill_missing, load_pose_sequence, natural_key, smooth
from datamodules.seeds import derived_seed
from datamodules.video import FRAME_SUFFIXES
from datamodules.video_files import write_gif, write_mp4
from experiments.checkpoint_checks import require_checkpoint_file
from experiments.errors import CommandError, parse_dataclass_options, run_main
from experiments.predict import (
    GuidanceOverride,
    check_counts,
    check_free,
    check_sampler_options,
    device_for,
    report_outputs,
    sampler_settings,
)
from experiments.predict_pidm import DEFAULT_HEATMAP_SIGMA, guidance_override, read_image, render_for_model
from lightning_modules.base import SamplerName, SamplerSettings
from lightning_modules.checkpoint_loading import load_diffusion_module
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.metrics.ssim import cropped_ssim
from lightning_modules.metrics.temporal import flicker, mean_frame_difference, pixel_flicker
from lightning_modules.pidm import PIDMLitModule


@dataclass
class AnimateOptions:
    """What to animate and how (see the module docstring for examples).

    Args:
        ckpt_path: A PIDM checkpoint written by ``experiments.fit`` or ``experiments.import_official``.
        source: The person's photo; repeat the option for several photos of the same person.
        poses: The pose sequence: a folder of OpenPose JSON or GFLA txt files, or one PATN CSV.
        out: Output folder.
        source_poses: With several sources: each source's pose file (GFLA txt), in the order of ``--source``.
        noise: ``shared`` (the same initial and per-step noise for every frame) or ``independent``.
        sampler: ``ddpm``, ``ddim`` or ``dpmpp_2m`` (default: the checkpoint's).
        steps: Denoising steps (default: the checkpoint's).
        eta: Stochasticity of ``ddim`` and ``dpmpp_2m`` (default: the checkpoint's).
        seed: Noise seed (default: the checkpoint's).
        guidance: Guidance settings replacing the checkpoint's.
        batch_size: Frames sampled together.
        fps: Frames per second of the GIF and the MP4.
        pose_frame_size: ``[H, W]`` of the video the OpenPose JSON coordinates refer to, when the files do not say.
        min_confidence: OpenPose joints with a lower confidence are missing.
        max_gap: Fill a joint missing for at most this many consecutive frames from its neighbours (default: every
            gap); longer gaps stay missing and are left out of the rendering.
        smooth: Temporal Gaussian smoothing of the keypoints, sigma in frames (0: none).
        size: Image size ``[H, W]`` (default: the model's square ``image_size``).
        heatmap_sigma: Models with 18-channel heatmap poses: Gaussian sigma in pixels (default 6).
        accelerator: ``auto`` (a GPU when there is one), ``cpu`` or ``gpu``.
        overwrite: Replace existing output files.
        real: A folder of the real frames of the same poses (one per pose, in name order): the frames are scored
            against them (per-frame SSIM, flicker and pixel flicker, docs/evaluation.md) into ``<out>/metrics.json``.
        ssim_window: SSIM window for ``real`` (odd; at most the image side).
    """

    ckpt_path: Path
    source: list[Path]
    poses: Path
    out: Path
    source_poses: list[Path] | None = None
    noise: Literal["shared", "independent"] = "shared"
    sampler: SamplerName | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int | None = None
    guidance: GuidanceOverride = field(default_factory=GuidanceOverride)
    batch_size: int = 8
    fps: float = 10.0
    pose_frame_size: tuple[int, int] | None = None
    min_confidence: float = 0.1
    max_gap: int | None = None
    smooth: float = 0.0
    size: tuple[int, int] | None = None
    heatmap_sigma: float | None = None
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    overwrite: bool = False
    real: Path | None = None
    ssim_window: int = 7


def parse_options(argv: Sequence[str] | None = None) -> AnimateOptions:
    """The options of a command line (``argv``; default ``sys.argv[1:]``)."""
    return parse_dataclass_options(AnimateOptions, "python -m experiments.animate", __doc__,
                                   repeatable(sys.argv[1:] if argv is None else list(argv)))


REPEATABLE = ("--source", "--source_poses")


def repeatable(argv: list[str]) -> list[str]:
    """``argv`` with each ``--source X`` as jsonargparse's appending ``--source+ X``, so the option repeats."""
    return [f"{arg}+" if arg in REPEATABLE else arg.replace("=", "+=", 1) if arg.split("=")[0] in REPEATABLE
            else arg for arg in argv]


def check_options(options: AnimateOptions) -> None:
    """Everything that can be checked before the checkpoint is loaded; raises :class:`CommandError`."""
    check_counts(options, ["batch_size"])
    check_sampler_options(options)
    if options.fps <= 0 or options.smooth < 0 or (options.max_gap is not None and options.max_gap < 0):
        raise CommandError(f"--fps must be positive, --smooth and --max_gap non-negative, got {options.fps}, "
                           f"{options.smooth} and {options.max_gap}")
    require_checkpoint_file(options.ckpt_path)
    inputs = [*options.source, options.poses, *(options.source_poses or []), *([options.real] if options.real else [])]
    for path in inputs:
        if not path.exists():
            raise CommandError(f"{path} does not exist (--source, --poses, --source_poses or --real)")
    if len(options.source) > 1 and len(options.source_poses or []) != len(options.source):
        raise CommandError(f"{len(options.source)} --source photos need as many --source_poses (one pose file each) "
                           "to pick the photo nearest each frame's pose")


def pose_sequence(options: AnimateOptions, size: tuple[int, int]) -> PoseSequence:
    """The ``--poses`` sequence, filled, smoothed and in pixel coordinates of ``size``."""
    sequence = load_pose_sequence(options.poses, options.pose_frame_size, options.min_confidence)
    return smooth(fill_missing(sequence, options.max_gap), options.smooth).resized(size)


def nearest_source(frame: np.ndarray, source_keypoints: Sequence[np.ndarray]) -> int:
    """Index of the source pose closest to ``frame`` (mean distance over the joints visible in both; a source
    sharing no joint with the frame is never nearest unless none does)."""
    distances = []
    for keypoints in source_keypoints:
        both = (frame[:, 0] != MISSING) & (keypoints[:, 0] != MISSING)
        distances.append(np.linalg.norm(frame[both] - keypoints[both], axis=1).mean() if both.any() else np.inf)
    return int(np.argmin(distances)) if np.isfinite(min(distances)) else 0


def pose_windows(poses: Tensor, window: int) -> Tensor:
    """(T, P, H, W) rendered poses as (T, window * P, H, W): each frame's ``window`` poses centred on it, the first
    and last pose repeated beyond the ends of the sequence."""
    half = window // 2
    index = (torch.arange(len(poses))[:, None] + torch.arange(-half, half + 1)[None, :]).clamp(0, len(poses) - 1)
    return poses[index].flatten(1, 2)


def read_real_frames(folder: Path, count: int, size: tuple[int, int]) -> Tensor:
    """The ``count`` real frames of ``folder`` (images in name order) as uint8 (T, 3, H, W) at ``size``."""
    paths = sorted((path for path in folder.iterdir() if path.suffix.lower() in FRAME_SUFFIXES),
                   key=lambda path: natural_key(path.name))
    if len(paths) != count:
        raise CommandError(f"--real {folder} holds {len(paths)} frames, the pose sequence has {count}")
    return to_uint8(torch.cat([read_image(path, size) for path in paths]))


def score_against_real(generated: Tensor, real: Tensor, ssim_window: int) -> dict[str, float]:
    """Per-frame SSIM (mean) and the flicker measures of uint8 ``generated`` frames against the ``real`` ones."""
    unit = [frames.double() / 255 for frames in (generated, real)]
    return {
        "ssim": cropped_ssim(*unit, window=ssim_window).mean().item(),
        "mean_frame_difference": mean_frame_difference(generated),
        "real_mean_frame_difference": mean_frame_difference(real),
        "flicker": flicker(generated, real),
        "pixel_flicker": pixel_flicker(generated, real),
    }


class FrameProgress:
    """A progress bar over frames that moves with every denoising step; :meth:`step` is a sampler callback."""

    def __init__(self, num_frames: int, steps: int) -> None:
        self.bar = tqdm(total=num_frames, desc="frames", unit="frame",
                        bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]")
        self.steps = steps
        self.batch_frames = 0

    def step(self, _: Any) -> None:
        self.bar.update(self.batch_frames / self.steps)  # returns None: the sampler keeps its state

    def close(self) -> None:
        self.bar.n = self.bar.total
        self.bar.close()


def sample_frames(
    model: PIDMLitModule,
    sources: Tensor,
    poses: Tensor,
    *,
    sampling: SamplerSettings,
    guidance: Any,
    noise: str,
    batch_size: int,
    device: torch.device,
    progress: FrameProgress | None = None,
) -> Tensor:
    """Frames (T, C, H, W) in [-1, 1] of ``sources`` (T, C, H, W) in ``poses`` (T, P, H, W), ``batch_size`` at a time.

    With ``noise="shared"`` each batch re-seeds one generator with ``sampling.seed``, draws a single initial noise
    and a single noise per sampler step, and gives them to every frame: all frames, in every batch, get the same
    noise whatever the batch size. With ``"independent"`` each frame has its own, from (seed, batch index).
    """
    frames = []
    shape = (1, model.image_channels, *poses.shape[2:])
    for index, start in enumerate(range(0, len(poses), batch_size)):
        count = len(poses[start : start + batch_size])
        shared = noise == "shared"
        generator = torch.Generator(device).manual_seed(sampling.seed if shared else derived_seed(sampling.seed, index))
        x_T = torch.randn(shape, generator=generator, device=device).expand(count, -1, -1, -1) if shared else None
        if progress is not None:
            progress.batch_frames = count
        frames.append(model.generate(
            sources[start : start + count].to(device), poses[start : start + count].to(device), sampling=sampling,
            guidance=guidance, generator=generator, callback=None if progress is None else progress.step, x_T=x_T,
            shared_noise=shared,
        ).cpu())  # fmt: skip
    return torch.cat(frames)


def run(options: AnimateOptions) -> list[Path]:
    """Check the options, load the checkpoint, sample every frame and write them; returns the written files."""
    check_options(options)
    model = load_diffusion_module(options.ckpt_path)
    if not isinstance(model, PIDMLitModule):
        raise CommandError(f"{options.ckpt_path} holds a {type(model).__name__}; animate needs a PIDM (pose-guided "
                           "persons) checkpoint, not an SDM (semantic layouts) one")
    sampling = sampler_settings(model, options)
    guidance = guidance_override(model, options.guidance)
    size = tuple(options.size) if options.size else (model.net.config.image_size, model.net.config.image_size)
    sequence = pose_sequence(options, size)
    count = len(sequence)
    frame_paths = [options.out / f"frame_{index:04d}.png" for index in range(count)]
    videos = [options.out / "animation.gif", options.out / "animation.mp4"]
    report = options.out / "metrics.json"
    check_free([*frame_paths, *videos, *([report] if options.real else [])], options.overwrite)
    real = None if options.real is None else read_real_frames(options.real, count, size)

    sigma = DEFAULT_HEATMAP_SIGMA if options.heatmap_sigma is None else options.heatmap_sigma
    rendered = torch.cat([render_for_model(keypoints, size, model.pose_channels // model.pose_window, sigma)
                          for keypoints in sequence.keypoints])
    poses = pose_windows(rendered, model.pose_window)
    photos = torch.cat([read_image(path, size) for path in options.source])
    if len(options.source) == 1:
        choice = [0] * count
    else:
        source_keypoints = [transform_keypoints(load_keypoints_txt(path), size) for path in options.source_poses]
        choice = [nearest_source(frame, source_keypoints) for frame in sequence.keypoints]
    device = device_for(options.accelerator)
    model = model.to(device).eval()
    progress = FrameProgress(count, sampling.steps)
    frames = sample_frames(model, photos[choice], poses, sampling=sampling, guidance=guidance, noise=options.noise,
                           batch_size=options.batch_size, device=device, progress=progress)
    progress.close()
    frames = to_uint8(frames)
    if count > 1:
        print(f"mean frame difference {mean_frame_difference(frames):.2f} (0-255; lower is steadier for the same "
              "poses)")
    pixels = [frame.permute(1, 2, 0).numpy() for frame in frames]
    for path, frame in zip(frame_paths, pixels):
        write_png(path, frame)
    written = [*frame_paths, write_gif(videos[0], pixels, options.fps), write_mp4(videos[1], pixels, options.fps)]
    if real is not None:
        scores = score_against_real(frames, real, options.ssim_window)
        print(", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
        report.write_text(json.dumps({"scores": scores, "frames": count, "noise": options.noise,
                                      "sampler": asdict(sampling), "real": str(options.real)}, indent=2) + "\n")
        written.append(report)
    report_outputs(written, options.out)
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Entry point; ``argv`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    return run(parse_options(argv))


if __name__ == "__main__":
    run_main(main)

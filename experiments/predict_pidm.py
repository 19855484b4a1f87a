"""The PIDM modes of ``experiments.predict`` (examples and options there): pose transfer, appearance control and
style interpolation.

Images are resized (PIL bicubic, stretched as in training) to ``--size`` (default: the model's square
``image_size``). Pose txt files are rendered with the encoding that matches the model's pose channels (20: official
skeleton + limb distances, 18: Gaussian heatmaps with ``--heatmap_sigma``). Guidance follows the checkpoint unless
``--guidance.*`` overrides it: its weights carry over while the form stays the checkpoint's; a weight the chosen form
does not take is an error (``style_only``: ``scale``; ``disentangled``/``nested``: ``w_pose``, ``w_style``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules.image_files import read_rgb
from datamodules.keypoints import load_keypoints_txt, transform_keypoints
from datamodules.pose_rendering import POSE_CHANNELS, render_pose
from experiments.errors import CommandError
from experiments.predict import (
    DenoisingProgress,
    GuidanceOverride,
    PredictOptions,
    check_free,
    device_for,
    read_mask,
    save_images,
)
from lightning_modules.base import SamplerSettings
from lightning_modules.editing import appearance_control, interpolate_styles
from lightning_modules.metrics.image_conversion import png_rounded
from lightning_modules.pidm import PIDMLitModule, PoseStyleGuidance

POSE_SUFFIXES = (".txt", ".pt", ".npy")
DEFAULT_HEATMAP_SIGMA = 6.0
DEFAULT_NUM_MIXES = 5


def read_image(path: Path, size: tuple[int, int]) -> Tensor:
    """An image file as (1, 3, H, W) in [-1, 1], stretched to ``size`` with PIL bicubic."""
    image = read_rgb(path)
    if image.shape[:2] != size:
        image = np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC))
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0).unsqueeze(0)


def guidance_override(model: PIDMLitModule, override: GuidanceOverride) -> PoseStyleGuidance:
    """The checkpoint's guidance with the ``--guidance.*`` options given replacing it."""
    try:
        return model.guidance.override(override.form, override.w_pose, override.w_style, override.scale)
    except ValueError as error:
        raise CommandError(f"--guidance: {error}") from None


def render_for_model(keypoints: np.ndarray, size: tuple[int, int], pose_channels: int, sigma: float) -> Tensor:
    """Image-frame keypoints (18, 2) rendered as (1, P, H, W) with the encoding of the model's ``pose_channels``."""
    encoding = {channels: name for name, channels in POSE_CHANNELS.items()}.get(pose_channels)
    if encoding is None:
        raise ValueError(f"the model takes {pose_channels} pose channels; no keypoint encoding renders that many")
    return render_pose(keypoints, size[0], size[1], encoding, sigma).unsqueeze(0)


def read_pose(path: Path, size: tuple[int, int], pose_channels: int, sigma: float) -> Tensor:
    """A pose file as (1, P, H, W): txt keypoints rendered for the model, or a saved tensor checked against it."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return render_for_model(transform_keypoints(load_keypoints_txt(path), size), size, pose_channels, sigma)
    if suffix in (".pt", ".npy"):
        if not path.is_file():
            raise FileNotFoundError(f"pose file not found: {path}")
        loaded = torch.load(path, map_location="cpu", weights_only=True) if suffix == ".pt" else np.load(path)
        pose = torch.as_tensor(np.asarray(loaded) if suffix == ".npy" else loaded).float()
    else:
        raise ValueError(f"{path}: pose files must be {', '.join(POSE_SUFFIXES)}")
    if pose.ndim == 4 and pose.shape[0] == 1:
        pose = pose[0]
    if tuple(pose.shape) != (pose_channels, *size):
        raise ValueError(f"{path}: pose of shape {tuple(pose.shape)}, the model needs ({pose_channels}, {size[0]}, "
                         f"{size[1]})")
    return pose.unsqueeze(0)


def _pose_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--poses {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in POSE_SUFFIXES)
    if not files:
        raise ValueError(f"--poses {path} holds no {', '.join(POSE_SUFFIXES)} files")
    return files


def _require(options: PredictOptions, *names: str) -> None:
    missing = [f"--{name}" for name in names if getattr(options, name) is None]
    if missing:
        mode = f"--edit {options.edit}" if options.edit else "pose transfer"
        raise CommandError(f"{mode} needs {', '.join(missing)}")


def _reject_for_mode(options: PredictOptions, *names: str) -> None:
    given = [f"--{name}" for name in names if getattr(options, name) is not None]
    if given:
        mode = f"--edit {options.edit}" if options.edit else "pose transfer"
        raise CommandError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {mode}")


def _sample_names(stem: str, num_samples: int) -> list[str]:
    return [stem] if num_samples == 1 else [f"{stem}_s{k}" for k in range(num_samples)]


def predict_pidm(model: PIDMLitModule, options: PredictOptions, sampling: SamplerSettings) -> list[Path]:
    """Run the PIDM mode the options select with ``sampling`` (sampler, steps, eta, seed); returns the files."""
    _require(options, "source")
    if options.edit != "interpolate":
        _reject_for_mode(options, "source2", "pose", "num_mixes")
    if options.edit is not None:
        _reject_for_mode(options, "poses", "refiner")
    if options.edit != "appearance":
        _reject_for_mode(options, "reference", "reference_pose", "mask")
    if model.pose_channels == POSE_CHANNELS["official20"]:
        _reject_for_mode(options, "heatmap_sigma")
    guidance = guidance_override(model, options.guidance)
    device = device_for(options.accelerator)
    model = model.to(device).eval()
    size = tuple(options.size) if options.size else (model.net.config.image_size, model.net.config.image_size)
    generator = torch.Generator(device).manual_seed(sampling.seed)
    source = read_image(options.source, size)
    sigma = DEFAULT_HEATMAP_SIGMA if options.heatmap_sigma is None else options.heatmap_sigma

    def pose(path: Path) -> Tensor:  # a still pose fills the model's whole pose window
        return read_pose(path, size, model.pose_channels // model.pose_window, sigma).repeat(1, model.pose_window, 1, 1)

    if options.edit == "appearance":
        _require(options, "reference", "reference_pose", "mask")
        stem = f"{options.reference.stem}_appearance_{options.source.stem}"
        paths = [options.out / f"{name}.png" for name in _sample_names(stem, options.num_samples)]
        check_free(paths, options.overwrite)
        reference, reference_pose = read_image(options.reference, size), pose(options.reference_pose)
        mask = torch.from_numpy(read_mask(options.mask, size)).float()
        progress = DenoisingProgress(sampling.steps * len(paths))
        out = torch.cat([
            appearance_control(model, source, reference, reference_pose, mask, sampling=sampling, guidance=guidance,
                               generator=generator, callback=progress.step)
            for _ in paths
        ])  # fmt: skip
        progress.close()
        return save_images(out, paths)
    if options.edit == "interpolate":
        _require(options, "source2", "pose")
        if options.num_samples != 1:
            raise CommandError("--edit interpolate makes one sequence; its length is --num_mixes, not --num_samples")
        if options.sampler is None and options.eta is None and (sampling.sampler, sampling.eta) != ("ddim", 0.0):
            print(f"style interpolation samples with deterministic DDIM ({sampling.steps} steps) instead of the "
                  f"checkpoint's {sampling.sampler} (eta {sampling.eta})", file=sys.stderr)
            sampling = sampling.overridden("ddim", eta=0.0)
        if sampling.sampler != "ddim" or sampling.eta != 0.0:
            raise CommandError(f"--edit interpolate needs deterministic DDIM (--sampler ddim --eta 0), got "
                               f"{sampling.sampler} with eta {sampling.eta}")
        num_mixes = DEFAULT_NUM_MIXES if options.num_mixes is None else options.num_mixes
        paths = [options.out / f"{options.source.stem}_{options.source2.stem}_mix{k}.png" for k in range(num_mixes)]
        check_free(paths, options.overwrite)
        progress = DenoisingProgress(sampling.steps)
        out = interpolate_styles(
            model, source, read_image(options.source2, size), pose(options.pose), num_mixes,
            sampling=sampling, guidance=guidance, generator=generator, callback=progress.step,
        )  # fmt: skip
        progress.close()
        return save_images(out, paths)
    _require(options, "poses")
    refiner = None
    if options.refiner is not None:
        from experiments.refining import load_chained_refiner  # imports this module's options

        refiner = load_chained_refiner(options.refiner, model, options.refiner_sampling, options.refiner_guidance,
                                       options.refiner_strength)
        refiner.module.to(device)
    pose_files = _pose_files(options.poses)
    files = [path for path in pose_files for _ in range(options.num_samples)]
    names = [name for path in pose_files
             for name in _sample_names(f"{options.source.stem}_to_{path.stem}", options.num_samples)]
    paths = [options.out / f"{name}.png" for name in names]
    coarse_paths = [] if refiner is None else [options.out / "coarse" / f"{name}.png" for name in names]
    check_free(paths + coarse_paths, options.overwrite)
    chunks = [files[start : start + options.batch_size] for start in range(0, len(files), options.batch_size)]
    steps_per_chunk = sampling.steps + (0 if refiner is None else refiner.sampling.steps)
    progress = DenoisingProgress(steps_per_chunk * len(chunks))
    outputs, coarse = [], []
    for chunk in chunks:
        poses = torch.cat([pose(p) for p in chunk])
        sources = source.expand(len(chunk), -1, -1, -1)
        images = model.generate(sources, poses, sampling=sampling, guidance=guidance, generator=generator,
                                callback=progress.step)
        if refiner is not None:
            coarse.append(images)
            images = refiner.module.refine(sources, poses, png_rounded(images),
                                           sampling=refiner.sampling, guidance=refiner.guidance,
                                           generator=generator, callback=progress.step)
        outputs.append(images)
    progress.close()
    if refiner is not None:
        save_images(torch.cat(coarse), coarse_paths)
    return save_images(torch.cat(outputs), paths) + coarse_paths

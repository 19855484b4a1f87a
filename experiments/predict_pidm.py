"""The PIDM modes of ``experiments.predict``: pose transfer, appearance control and style interpolation.

    # one image per pose file (GFLA txt keypoints, or a saved (P, H, W) .pt/.npy pose tensor)
    python -m experiments.predict --ckpt_path last.ckpt --source person.jpg --poses poses/ --out generated/
    # regenerate the mask=1 region of a reference person in the source's style (mask: white = regenerate)
    python -m experiments.predict --ckpt_path last.ckpt --edit appearance --source style.jpg --reference ref.jpg \
        --reference_pose ref.txt --mask upper.png --out edited/
    # k images morphing from one source's appearance to another's in one pose (DDIM)
    python -m experiments.predict --ckpt_path last.ckpt --edit interpolate --source a.jpg --source2 b.jpg \
        --pose pose.txt --num_mixes 5 --out mixes/

Images are resized (PIL bicubic, stretched as in training) to ``--size`` (default: the model's square
``image_size``). Pose txt files hold 18 ``x y`` rows in the GFLA/NTED frame (256 high, the 176-wide image at x = 40,
-1 = missing) and are rendered with the encoding that matches the model's pose channels (20: official skeleton +
limb distances, 18: Gaussian heatmaps with ``--heatmap_sigma``). Guidance follows the checkpoint unless
``--guidance``, ``--w_pose``, ``--w_style`` or ``--scale`` override it: its weights carry over while the form stays
the checkpoint's; a weight the chosen form does not take is an error (``style_only``: ``--scale``;
``disentangled``/``nested``: ``--w_pose``, ``--w_style``). ``--num_samples K`` writes K samples per pose
(``<source>_to_<pose>_s<k>.png``) or per appearance edit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules.image_files import read_rgb, write_png
from datamodules.keypoints import load_keypoints_txt, transform_keypoints
from datamodules.pose_rendering import POSE_CHANNELS, render_pose
from lightning_modules.base import SamplerSettings
from lightning_modules.editing import appearance_control, interpolate_styles
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.pidm import PIDMLitModule

POSE_SUFFIXES = (".txt", ".pt", ".npy")
EDITS = ("appearance", "interpolate")
# Options of the PIDM modes; given for an SDM checkpoint they are an error.
PIDM_OPTIONS = ("source", "poses", "edit", "reference", "reference_pose", "mask", "source2", "pose", "num_mixes",
                "size", "heatmap_sigma", "guidance", "w_pose", "w_style", "scale")
DEFAULT_HEATMAP_SIGMA = 6.0
DEFAULT_NUM_MIXES = 5


def add_pidm_arguments(parser: argparse.ArgumentParser) -> None:
    """The PIDM options of ``experiments.predict`` (any of ``--source``/``--edit`` selects the PIDM mode)."""
    group = parser.add_argument_group("PIDM (pose-guided persons)")
    group.add_argument("--source", type=Path, help="source (style) person image")
    group.add_argument("--poses", type=Path, help="pose-transfer mode: a pose file or a folder of them")
    group.add_argument("--edit", choices=EDITS, help="editing mode instead of pose transfer")
    group.add_argument("--reference", type=Path, help="appearance: reference person image")
    group.add_argument("--reference_pose", type=Path, help="appearance: the reference's pose file")
    group.add_argument("--mask", type=Path, help="appearance: mask PNG, white (>= 128) = regenerate")
    group.add_argument("--source2", type=Path, help="interpolate: second source image")
    group.add_argument("--pose", type=Path, help="interpolate: target pose file")
    group.add_argument("--num_mixes", type=int,
                       help=f"interpolate: images from source to source2 (default {DEFAULT_NUM_MIXES})")
    group.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (default: model's)")
    group.add_argument("--heatmap_sigma", type=float,
                       help=f"sigma of heatmap poses (18 channels; default {DEFAULT_HEATMAP_SIGMA})")
    group.add_argument("--guidance", choices=("disentangled", "style_only", "nested"), help="override guidance")
    group.add_argument("--w_pose", type=float, help="override the pose guidance weight")
    group.add_argument("--w_style", type=float, help="override the style guidance weight")
    group.add_argument("--scale", type=float, help="override the style_only guidance scale")


def read_image(path: Path, size: tuple[int, int]) -> Tensor:
    """An image file as (1, 3, H, W) in [-1, 1], stretched to ``size`` with PIL bicubic."""
    image = read_rgb(path)
    if image.shape[:2] != size:
        image = np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC))
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0).unsqueeze(0)


def read_mask(path: Path, size: tuple[int, int]) -> Tensor:
    """A mask image as (1, 1, H, W) with 1 where it is white (>= 128), resized with nearest neighbours."""
    try:
        with Image.open(path) as image:
            mask = np.array(image.convert("L").resize((size[1], size[0]), Image.NEAREST))
    except FileNotFoundError:
        raise FileNotFoundError(f"mask not found: {path}") from None
    return torch.from_numpy(mask >= 128).float()[None, None]


def read_pose(path: Path, size: tuple[int, int], pose_channels: int, sigma: float) -> Tensor:
    """A pose file as (1, P, H, W): txt keypoints rendered for the model, or a saved tensor checked against it."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        encoding = {channels: name for name, channels in POSE_CHANNELS.items()}.get(pose_channels)
        if encoding is None:
            raise ValueError(f"the model takes {pose_channels} pose channels; no keypoint encoding renders that many")
        keypoints = transform_keypoints(load_keypoints_txt(path), size)
        pose = render_pose(keypoints, size[0], size[1], encoding, sigma)
    elif suffix in (".pt", ".npy"):
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


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name}" for name in names if getattr(args, name) is None]
    if missing:
        mode = f"--edit {args.edit}" if args.edit else "pose transfer"
        raise SystemExit(f"{mode} needs {', '.join(missing)}")


def _check_free(paths: list[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise SystemExit(f"{len(existing)} outputs exist already (e.g. {existing[0]}); pass --overwrite to replace")


def _save(images: Tensor, paths: list[Path]) -> list[Path]:
    for pixels, path in zip(to_uint8(images), paths, strict=True):
        write_png(path, pixels)
    return paths


def _reject_for_mode(args: argparse.Namespace, *names: str) -> None:
    given = [f"--{name}" for name in names if getattr(args, name) is not None]
    if given:
        mode = f"--edit {args.edit}" if args.edit else "pose transfer"
        raise SystemExit(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {mode}")


def _sample_names(stem: str, num_samples: int) -> list[str]:
    return [stem] if num_samples == 1 else [f"{stem}_s{k}" for k in range(num_samples)]


def predict_pidm(model: PIDMLitModule, args: argparse.Namespace, sampling: SamplerSettings) -> list[Path]:
    """Run the PIDM mode the arguments select with ``sampling`` (sampler, steps, eta, seed); returns the files."""
    _require(args, "source")
    if args.guidance_scale is not None:
        raise SystemExit("PIDM checkpoints take --guidance with --w_pose/--w_style (disentangled, nested) or --scale "
                         "(style_only), not --guidance_scale")
    if args.edit != "interpolate":
        _reject_for_mode(args, "source2", "pose", "num_mixes")
    if args.edit is not None:
        _reject_for_mode(args, "poses")
    if args.edit != "appearance":
        _reject_for_mode(args, "reference", "reference_pose", "mask")
    if model.pose_channels == POSE_CHANNELS["official20"]:
        _reject_for_mode(args, "heatmap_sigma")
    try:
        guidance = model.guidance.override(args.guidance, args.w_pose, args.w_style, args.scale)
    except ValueError as error:
        raise SystemExit(f"--guidance/--w_pose/--w_style/--scale: {error}") from None
    device = torch.device("cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    size = tuple(args.size) if args.size else (model.net.config.image_size, model.net.config.image_size)
    generator = torch.Generator(device).manual_seed(sampling.seed)
    source = read_image(args.source, size)
    sigma = DEFAULT_HEATMAP_SIGMA if args.heatmap_sigma is None else args.heatmap_sigma

    def pose(path: Path) -> Tensor:
        return read_pose(path, size, model.pose_channels, sigma)

    if args.edit == "appearance":
        _require(args, "reference", "reference_pose", "mask")
        stem = f"{args.reference.stem}_appearance_{args.source.stem}"
        paths = [args.out / f"{name}.png" for name in _sample_names(stem, args.num_samples)]
        _check_free(paths, args.overwrite)
        reference, reference_pose = read_image(args.reference, size), pose(args.reference_pose)
        mask = read_mask(args.mask, size)
        out = torch.cat([
            appearance_control(model, source, reference, reference_pose, mask, sampling=sampling, guidance=guidance,
                               generator=generator)
            for _ in paths
        ])  # fmt: skip
        return _save(out, paths)
    if args.edit == "interpolate":
        _require(args, "source2", "pose")
        if args.num_samples != 1:
            raise SystemExit("--edit interpolate makes one sequence; its length is --num_mixes, not --num_samples")
        num_mixes = DEFAULT_NUM_MIXES if args.num_mixes is None else args.num_mixes
        paths = [args.out / f"{args.source.stem}_{args.source2.stem}_mix{k}.png" for k in range(num_mixes)]
        _check_free(paths, args.overwrite)
        out = interpolate_styles(
            model, source, read_image(args.source2, size), pose(args.pose), num_mixes,
            sampling=sampling, guidance=guidance, generator=generator,
        )  # fmt: skip
        return _save(out, paths)
    _require(args, "poses")
    pose_files = _pose_files(args.poses)
    files = [path for path in pose_files for _ in range(args.num_samples)]
    paths = [args.out / f"{name}.png" for path in pose_files
             for name in _sample_names(f"{args.source.stem}_to_{path.stem}", args.num_samples)]
    _check_free(paths, args.overwrite)
    outputs = []
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        poses = torch.cat([pose(p) for p in chunk])
        outputs.append(
            model.generate(source.expand(len(chunk), -1, -1, -1), poses, sampling=sampling, guidance=guidance,
                           generator=generator)
        )  # fmt: skip
    return _save(torch.cat(outputs), paths)

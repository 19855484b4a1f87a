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
``--guidance``, ``--w_pose``, ``--w_style`` or ``--scale`` override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import save_image

from datamodules.keypoints import load_keypoints_txt, transform_keypoints
from datamodules.person_base import read_rgb
from datamodules.pose_rendering import POSE_CHANNELS, render_pose
from lightning_modules.base import SamplingOptions
from lightning_modules.editing import appearance_control, interpolate_styles
from lightning_modules.pidm import PIDMLitModule

POSE_SUFFIXES = (".txt", ".pt", ".npy")
EDITS = ("appearance", "interpolate")


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
    group.add_argument("--num_mixes", type=int, default=5, help="interpolate: images from source to source2")
    group.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (default: model's)")
    group.add_argument("--heatmap_sigma", type=float, default=6.0, help="sigma of heatmap poses (18 channels)")
    group.add_argument("--guidance", choices=("disentangled", "style_only", "nested"), help="override guidance")
    group.add_argument("--w_pose", type=float, help="override the pose guidance weight")
    group.add_argument("--w_style", type=float, help="override the style guidance weight")
    group.add_argument("--scale", type=float, help="override the style_only guidance scale")


def wants_pidm(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a PIDM mode."""
    return args.source is not None or args.edit is not None


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
    for image, path in zip(images, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image.float().cpu().add(1).div(2), path)
    return paths


def predict_pidm(model: PIDMLitModule, args: argparse.Namespace) -> list[Path]:
    """Run the PIDM mode the arguments select; returns the written files."""
    _require(args, "source")
    device = torch.device("cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    size = tuple(args.size) if args.size else (model.hparams.image_size, model.hparams.image_size)
    options = SamplingOptions(args.sampler, args.steps, args.guidance_scale, args.eta, args.seed)
    guidance = model.resolve_guidance(args.guidance, args.w_pose, args.w_style, args.scale)
    generator = torch.Generator(device).manual_seed(args.seed)
    source = read_image(args.source, size)

    def pose(path: Path) -> Tensor:
        return read_pose(path, size, model.pose_channels, args.heatmap_sigma)

    if args.edit == "appearance":
        _require(args, "reference", "reference_pose", "mask")
        paths = [args.out / f"{args.reference.stem}_appearance_{args.source.stem}.png"]
        _check_free(paths, args.overwrite)
        out = appearance_control(
            model, source, read_image(args.reference, size), pose(args.reference_pose), read_mask(args.mask, size),
            options=options, guidance=guidance, generator=generator,
        )  # fmt: skip
        return _save(out, paths)
    if args.edit == "interpolate":
        _require(args, "source2", "pose")
        paths = [args.out / f"{args.source.stem}_{args.source2.stem}_mix{k}.png" for k in range(args.num_mixes)]
        _check_free(paths, args.overwrite)
        out = interpolate_styles(
            model, source, read_image(args.source2, size), pose(args.pose), args.num_mixes,
            options=options, guidance=guidance, generator=generator,
        )  # fmt: skip
        return _save(out, paths)
    _require(args, "poses")
    files = _pose_files(args.poses)
    paths = [args.out / f"{args.source.stem}_to_{p.stem}.png" for p in files]
    _check_free(paths, args.overwrite)
    outputs = []
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        poses = torch.cat([pose(p) for p in chunk])
        outputs.append(
            model.generate(source.expand(len(chunk), -1, -1, -1), poses, options=options, guidance=guidance,
                           generator=generator)
        )  # fmt: skip
    return _save(torch.cat(outputs), paths)

"""The PIDM page's work without the browser: example persons and poses, pose transfer, appearance control, style
interpolation and animation of a pose sequence."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor

from datamodules.image_files import read_rgb
from datamodules.keypoints import load_keypoints_txt, transform_keypoints
from datamodules.pose_sequences import fill_missing, load_pose_sequence
from datamodules.video_files import write_gif
from experiments.animate import pose_windows, sample_frames
from experiments.demo.jobs import DemoInputError, ProgressReport, SamplingJobs
from experiments.demo.pose_editing import builtin_person
from experiments.demo.run_config import sampler_settings, stretched_rgb
from experiments.predict_pidm import DEFAULT_HEATMAP_SIGMA, render_for_model
from lightning_modules.editing import appearance_control, interpolate_styles
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.pidm import PIDMLitModule, PoseStyleGuidance

GUIDANCE_FORMS = ("style_only", "disentangled", "nested")


@dataclass(frozen=True)
class PersonExample:
    """A person photo (uint8 RGB at the model's size) with its keypoints there, and where it came from."""

    name: str
    image: np.ndarray
    keypoints: np.ndarray


def _unit(image: np.ndarray) -> Tensor:
    return torch.as_tensor(image).permute(2, 0, 1).float().div(127.5).sub(1.0)[None]


class PIDMDemo:
    """A PIDM checkpoint as the page uses it.

    Args:
        model: The model (in eval mode).
        datamodule: The run's DataModule (not set up), for the image size, pose encoding and test persons.
        device: Where sampling runs.
        num_examples: Test persons offered from the dataset, when its files are reachable.
    """

    def __init__(self, model: PIDMLitModule, datamodule: pl.LightningDataModule | None, device: torch.device,
                 num_examples: int = 8) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.jobs = SamplingJobs()
        square = model.net.config.image_size
        self.size = tuple(int(v) for v in getattr(datamodule, "image_size", (square, square)))
        self.sigma = float(getattr(datamodule, "heatmap_sigma", DEFAULT_HEATMAP_SIGMA))
        self.examples, self.examples_note = self._examples(datamodule, num_examples)

    def _examples(self, datamodule: pl.LightningDataModule | None, count: int) -> tuple[list[PersonExample], str]:
        image, keypoints = builtin_person(self.size)
        builtin = [PersonExample("built-in person", image, keypoints)]
        if datamodule is None or not hasattr(datamodule, "read_pairs"):
            return builtin, "a built-in person (no person dataset in the run config)"
        try:
            examples = []
            for pair in datamodule.read_pairs("test")[:count]:
                photo = read_rgb(pair.target.image_path)
                points = pair.target.keypoints(photo.shape[:2], self.size, None, (0, 0))
                examples.append(PersonExample(pair.target.name, stretched_rgb(photo, self.size, pair.target.name),
                                              points))
        except (OSError, ValueError) as error:
            return builtin, f"a built-in person: the dataset's test pairs are not readable here ({error})"
        if not examples:
            return builtin, "a built-in person: the dataset has no test pairs"
        return examples, f"{len(examples)} persons of the dataset's test pairs"

    def pose(self, keypoints: np.ndarray) -> Tensor:
        """Keypoints (18, 2) at the model's size rendered as (1, P, H, W), repeated over the model's pose window."""
        if not (np.asarray(keypoints) != -1).all(axis=1).any():
            raise DemoInputError("the target pose has no joints: place some on the skeleton or pick a pose")
        one = render_for_model(np.asarray(keypoints, dtype=np.float64), self.size,
                               self.model.pose_channels // self.model.pose_window, self.sigma)
        return one.repeat(1, self.model.pose_window, 1, 1)

    def keypoints_from_file(self, path: Path) -> np.ndarray:
        """A GFLA/NTED txt pose file (256-frame) as keypoints at the model's size."""
        try:
            return transform_keypoints(load_keypoints_txt(path), self.size)
        except (OSError, ValueError) as error:
            raise DemoInputError(f"pose file {Path(path).name}: {error}") from None

    def guidance(self, form: str | None, scale: float | None, w_pose: float | None,
                 w_style: float | None) -> PoseStyleGuidance:
        """The checkpoint's guidance with the page's choices; weights the form does not take are ignored there."""
        form = form or self.model.guidance.form
        if form not in GUIDANCE_FORMS:
            raise DemoInputError(f"guidance rule {form!r} is not one of {', '.join(GUIDANCE_FORMS)}")
        weights = {"scale": scale} if form == "style_only" else {"w_pose": w_pose, "w_style": w_style}
        try:
            return self.model.guidance.override(form, **weights)
        except ValueError as error:
            raise DemoInputError(f"guidance: {error}") from None

    def _images(self, images: Tensor) -> list[np.ndarray]:
        return [pixels.permute(1, 2, 0).cpu().numpy() for pixels in to_uint8(images)]

    def transfer(self, source: np.ndarray, keypoints: np.ndarray, *, guidance: PoseStyleGuidance | None = None,
                 sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                 num_samples: int = 1, report: ProgressReport | None = None) -> list[np.ndarray]:
        """``num_samples`` images of the source person (any size, stretched) in the pose ``keypoints``."""
        if num_samples < 1:
            raise DemoInputError(f"number of samples must be at least 1, got {num_samples}")
        sampling = sampler_settings(self.model, sampler, steps, seed)
        source_tensor = _unit(stretched_rgb(source, self.size, "source image")).expand(num_samples, -1, -1, -1)
        pose = self.pose(keypoints).expand(num_samples, -1, -1, -1)
        generator = torch.Generator(self.device).manual_seed(sampling.seed)
        images = self.jobs.run(sampling.steps, lambda callback: self.model.generate(
            source_tensor.to(self.device), pose.to(self.device), sampling=sampling, guidance=guidance,
            generator=generator, callback=callback), report)
        return self._images(images)

    def appearance(self, source: np.ndarray, reference: np.ndarray, reference_keypoints: np.ndarray,
                   mask: np.ndarray, *, guidance: PoseStyleGuidance | None = None, sampler: str | None = None,
                   steps: int | None = None, seed: int | None = None,
                   report: ProgressReport | None = None) -> np.ndarray:
        """The reference person with the masked region (bool, any size) regenerated in the source's style."""
        if not np.asarray(mask).any():
            raise DemoInputError("paint the region of the reference to restyle (e.g. the shirt) first")
        sampling = sampler_settings(self.model, sampler, steps, seed)
        region = np.array(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(
            (self.size[1], self.size[0]), Image.NEAREST)) >= 128
        generator = torch.Generator(self.device).manual_seed(sampling.seed)
        images = self.jobs.run(sampling.steps, lambda callback: appearance_control(
            self.model, _unit(stretched_rgb(source, self.size, "source image")),
            _unit(stretched_rgb(reference, self.size, "reference image")), self.pose(reference_keypoints),
            torch.as_tensor(region, dtype=torch.float32), sampling=sampling, guidance=guidance, generator=generator,
            callback=callback), report)
        return self._images(images)[0]

    def interpolate(self, source: np.ndarray, source2: np.ndarray, keypoints: np.ndarray, num_mixes: int, *,
                    guidance: PoseStyleGuidance | None = None, steps: int | None = None, seed: int | None = None,
                    report: ProgressReport | None = None) -> list[np.ndarray]:
        """``num_mixes`` images from the first source's style to the second's, in one pose (deterministic DDIM)."""
        if num_mixes < 2:
            raise DemoInputError(f"an interpolation needs at least 2 images, got {num_mixes}")
        sampling = replace(sampler_settings(self.model, "ddim", steps, seed), eta=0.0)
        generator = torch.Generator(self.device).manual_seed(sampling.seed)
        images = self.jobs.run(sampling.steps, lambda callback: interpolate_styles(
            self.model, _unit(stretched_rgb(source, self.size, "source image")),
            _unit(stretched_rgb(source2, self.size, "second source image")), self.pose(keypoints), num_mixes,
            sampling=sampling, guidance=guidance, generator=generator, callback=callback), report)
        return self._images(images)

    def animate(self, source: np.ndarray, pose_files: list[Path], out: Path | None = None, *, fps: float = 8.0,
                frame_size: tuple[int, int] | None = None, guidance: PoseStyleGuidance | None = None,
                sampler: str | None = None, steps: int | None = None,
                seed: int | None = None, batch_size: int = 8, report: ProgressReport | None = None) -> Path:
        """A looping GIF of the source person following a pose sequence (OpenPose JSON or GFLA txt files, one per
        frame, in name order), with the noise shared by all frames; returns the GIF's path. ``frame_size`` is the
        video's (H, W) for OpenPose JSON files that do not store it."""
        if not pose_files:
            raise DemoInputError("upload the pose sequence: one OpenPose JSON or GFLA txt file per frame")
        with tempfile.TemporaryDirectory() as folder:
            for path in pose_files:
                Path(folder, Path(path).name).write_bytes(Path(path).read_bytes())
            try:
                sequence = fill_missing(load_pose_sequence(folder, frame_size)).resized(self.size)
            except (OSError, ValueError) as error:
                raise DemoInputError(f"pose sequence: {error}") from None
        sampling = sampler_settings(self.model, sampler, steps, seed)
        rendered = torch.cat([render_for_model(points, self.size, self.model.pose_channels // self.model.pose_window,
                                               self.sigma) for points in sequence.keypoints])
        poses = pose_windows(rendered, self.model.pose_window)
        sources = _unit(stretched_rgb(source, self.size, "source image")).expand(len(poses), -1, -1, -1)
        batches = -(-len(poses) // batch_size)
        frames = self.jobs.run(sampling.steps * batches, lambda callback: sample_frames(
            self.model, sources, poses, sampling=sampling, guidance=guidance, noise="shared", batch_size=batch_size,
            device=self.device, progress=_BatchCallback(callback)), report)
        out = Path(tempfile.mkdtemp(prefix="condiff_demo_")) / "animation.gif" if out is None else out
        return write_gif(out, [frame.permute(1, 2, 0).numpy() for frame in to_uint8(frames)], fps)


class _BatchCallback:
    """``sample_frames``' progress interface around a sampler callback."""

    def __init__(self, callback) -> None:
        self.step = callback
        self.batch_frames = 0

"""The SDM page's work without the browser: label-map examples, sampling and region inpainting."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from datamodules.palettes import bit_interleaved_palette
from datamodules.semantic_files import read_index_map
from datamodules.shapes import ShapesDataModule
from experiments.demo.jobs import DemoInputError, ProgressReport, SamplingJobs
from experiments.demo.label_maps import LabelCodec, builtin_layout
from experiments.demo.run_config import sampler_settings
from lightning_modules.editing import inpaint
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.sdm import ClassifierFreeGuidance, SDMLitModule


@dataclass(frozen=True)
class LayoutExample:
    """A label map to start from: class ids (H, W), the instance ids beside it (or None) and where it came from."""

    name: str
    classes: np.ndarray
    instance: np.ndarray | None = None


def _resized_ids(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if values.shape == size:
        return values
    return cv2.resize(values.astype(np.int32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT).astype(
        np.int64)


class SDMDemo:
    """An SDM checkpoint as the page uses it.

    Args:
        model: The model (in eval mode).
        datamodule: The run's DataModule (not set up), for class names, palette, label decoding and test maps.
        device: Where sampling runs.
        num_examples: Test label maps offered from the dataset, when its files are reachable.
    """

    def __init__(self, model: SDMLitModule, datamodule: pl.LightningDataModule | None, device: torch.device,
                 num_examples: int = 8) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.jobs = SamplingJobs()
        self.codec = self._codec(datamodule)
        self.examples, self.examples_note = self._examples(datamodule, num_examples)

    def _codec(self, datamodule: pl.LightningDataModule | None) -> LabelCodec:
        model = self.model
        size = (model.net.config.image_size,) * 2
        names = tuple(f"class {k}" for k in range(model.num_classes))
        palette = bit_interleaved_palette(model.num_classes)
        lut = None if model.raw_label_lut is None else model.raw_label_lut.numpy().astype(np.int64)
        if datamodule is not None:
            size = tuple(getattr(datamodule, "image_size", size))
            names = getattr(datamodule, "class_names", None) or names
            if getattr(datamodule, "num_classes", None) == model.num_classes:
                palette = datamodule.palette
            if lut is None and hasattr(datamodule, "raw_label_lut"):
                lut = datamodule.raw_label_lut().numpy().astype(np.int64)
        return LabelCodec(model.num_classes, (int(size[0]), int(size[1])), np.asarray(palette, dtype=np.uint8),
                          tuple(names), lut)

    def _examples(self, datamodule: pl.LightningDataModule | None, count: int) -> tuple[list[LayoutExample], str]:
        shapes = isinstance(datamodule, ShapesDataModule)
        builtin = [LayoutExample("built-in example", builtin_layout(self.codec, shapes))]
        if datamodule is None or not hasattr(datamodule, "find_samples"):
            return builtin, "built-in example layout (no dataset in the run config)"
        split = datamodule.splits["test"]
        try:
            samples = datamodule.find_samples(split)[:count]
            examples = []
            for sample in samples:
                raw = _resized_ids(read_index_map(sample.label), self.codec.size)
                instance = None if sample.instance is None else _resized_ids(read_index_map(sample.instance),
                                                                             self.codec.size)
                examples.append(LayoutExample(sample.label.name, self.codec.to_classes(raw, str(sample.label)),
                                              instance))
        except (OSError, ValueError) as error:
            return builtin, f"built-in example layout: the dataset's {split} split is not readable here ({error})"
        if not examples:
            return builtin, f"built-in example layout: the dataset's {split} split is empty"
        return examples, f"{len(examples)} label maps of the dataset's {split} split"

    def condition(self, classes: np.ndarray, instance: np.ndarray | None, num_samples: int) -> dict[str, Tensor]:
        """The batch of ``num_samples`` copies of a map; without an instance map, a model with instance edges takes
        the class map as one (edges along every class boundary)."""
        label = torch.as_tensor(classes, dtype=torch.long)[None].expand(num_samples, -1, -1)
        batch = {"label": label.to(self.device)}
        if self.model.instance_edges:
            ids = classes if instance is None else instance
            if ids.shape != classes.shape:
                raise DemoInputError(f"the instance map is {ids.shape[0]}x{ids.shape[1]}, the label map "
                                     f"{classes.shape[0]}x{classes.shape[1]}")
            batch["instance"] = torch.as_tensor(ids, dtype=torch.long)[None].expand(num_samples, -1, -1).to(
                self.device)
        return batch

    def generate(self, classes: np.ndarray, instance: np.ndarray | None = None, *, sampler: str | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, num_samples: int = 1,
                 seed: int | None = None, reference: np.ndarray | None = None, mask: np.ndarray | None = None,
                 report: ProgressReport | None = None) -> list[np.ndarray]:
        """``num_samples`` uint8 RGB images (H, W, 3) for class ids (H, W).

        With ``reference`` (uint8 RGB at the map's size) and ``mask`` (bool, True = regenerate) only the masked
        region is generated and the rest of the reference kept.
        """
        if num_samples < 1:
            raise DemoInputError(f"number of samples must be at least 1, got {num_samples}")
        if classes.shape != self.codec.size:
            raise DemoInputError(f"the label map is {classes.shape[0]}x{classes.shape[1]}; this model takes "
                                 f"{self.codec.size[0]}x{self.codec.size[1]}")
        sampling = sampler_settings(self.model, sampler, steps, seed)
        guidance = self.model.guidance if guidance_scale is None else ClassifierFreeGuidance(float(guidance_scale))
        batch = self.condition(classes, instance, num_samples)
        generator = torch.Generator(self.device).manual_seed(sampling.seed)

        def work(callback):
            if reference is None:
                return self.model.generate_batch(batch, sampling=sampling, guidance=guidance, generator=generator,
                                                 callback=callback)
            if mask is None or not mask.any():
                raise DemoInputError("paint the region to regenerate on the result first")
            image = torch.as_tensor(reference).permute(2, 0, 1).float().div(127.5).sub(1.0)
            region = torch.as_tensor(mask, dtype=torch.float32)[None]
            return inpaint(self.model, batch, image[None].expand(num_samples, -1, -1, -1),
                           region[None].expand(num_samples, -1, -1, -1).to(self.device), sampling=sampling,
                           guidance=guidance, generator=generator, callback=callback)

        images = self.jobs.run(sampling.steps, work, report)
        return [pixels.permute(1, 2, 0).cpu().numpy() for pixels in to_uint8(images)]

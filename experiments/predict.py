r"""Generate images with a trained (or imported) checkpoint: ``python -m experiments.predict --ckpt_path X.ckpt ...``.

SDM checkpoints (semantic layouts)::

    python -m experiments.predict --ckpt_path runs/sdm_shapes/version_0/checkpoints/last.ckpt \
        --labels my_labels/ [--instances my_instances/] --out generated/ [--num_samples 4 --seed 0]
    # edit a photo: regenerate only where the mask is white, under a new or edited label map
    python -m experiments.predict --ckpt_path last.ckpt --labels edited_label.png --image photo.png \
        --mask region.png --out edited/      # or --mask_labels [3,5]: where the label map holds these raw ids

PIDM checkpoints (pose-guided persons)::

    python -m experiments.predict --ckpt_path last.ckpt --source person.jpg --poses poses/ --out generated/
    python -m experiments.predict --ckpt_path last.ckpt --edit appearance --source style.jpg --reference ref.jpg \
        --reference_pose ref.txt --mask upper.png --out edited/
    python -m experiments.predict --ckpt_path last.ckpt --edit interpolate --source a.jpg --source2 b.jpg \
        --pose pose.txt --num_mixes 5 --out mixes/

The sampler (``--sampler``, ``--steps``, ``--eta``, ``--seed``) and the guidance (``--guidance.scale``; PIDM also
``--guidance.form``, ``--guidance.w_pose``, ``--guidance.w_style``) default to the checkpoint's own settings, those it
was trained and fine-tuned with (an imported official checkpoint samples as the official code). Options are the
checkpoint family's; one of the other family is an error, never ignored. ``--config options.yaml`` reads the options
from a file, ``--print_config`` prints them. Existing outputs are never overwritten without ``--overwrite true``.

Label PNGs hold the raw ids of the dataset's annotation files (e.g. ADE20K/shapes: 1..K with 0 = "other"); the
dataset's remap, stored in checkpoints written by ``experiments.fit``, turns them into class ids (``--data_config``
names another run config; older checkpoints read the run's ``config.yaml``). Outputs: ``<out>/<label stem>_s<k>.png``
(SDM), ``<out>/<source>_to_<pose>.png`` (PIDM; ``_s<k>`` with several samples). The pose files PIDM reads are described
under ``--poses`` (and in docs/pidm.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from datamodules.image_files import read_rgb, write_png
from datamodules.seeds import derived_seed
from datamodules.semantic_files import IMAGE_SUFFIXES, read_index_map
from experiments.checkpoint_checks import require_checkpoint_file
from experiments.errors import CommandError, parse_dataclass_options, run_main
from lightning_modules.base import DiffusionLitModule, SamplerName, SamplerSettings
from lightning_modules.checkpoint_loading import load_diffusion_module
from lightning_modules.editing import inpaint
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.pidm import PIDMLitModule
from lightning_modules.sdm import ClassifierFreeGuidance, SDMLitModule

LabelRemap = Callable[[np.ndarray], np.ndarray]
# Options of each family's modes (an option of the other family is an error).
SDM_OPTIONS = ("labels", "instances", "data_config", "image", "mask_labels")
PIDM_OPTIONS = ("source", "poses", "edit", "reference", "reference_pose", "source2", "pose", "num_mixes", "size",
                "heatmap_sigma", "refiner", "refiner_strength")
PIDM_GUIDANCE = ("form", "w_pose", "w_style")


@dataclass
class GuidanceOverride:
    """Guidance settings replacing the checkpoint's; unset ones keep the checkpoint's.

    Args:
        scale: SDM: the classifier-free scale s (1: unguided). PIDM: the ``style_only`` scale.
        form: PIDM: ``disentangled``, ``style_only`` or ``nested`` (another form than the checkpoint's starts from
            weights 2 and the weights given).
        w_pose: PIDM: pose weight of ``disentangled`` and ``nested``.
        w_style: PIDM: style weight of ``disentangled`` and ``nested``.
    """

    scale: float | None = None
    form: Literal["disentangled", "style_only", "nested"] | None = None
    w_pose: float | None = None
    w_style: float | None = None


@dataclass
class SamplingOverride:
    """Sampler settings replacing a checkpoint's; unset ones keep the checkpoint's.

    Args:
        sampler: ``ddpm``, ``ddim`` or ``dpmpp_2m``.
        steps: Denoising steps.
        eta: Stochasticity of ``ddim`` and ``dpmpp_2m`` (0: deterministic).
        seed: Noise seed.
    """

    sampler: SamplerName | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int | None = None


@dataclass
class PredictOptions:
    """What to generate and how (see the module docstring for examples).

    Args:
        ckpt_path: Checkpoint written by ``experiments.fit`` or ``experiments.import_official``.
        out: Output folder.
        sampler: ``ddpm``, ``ddim`` or ``dpmpp_2m`` (default: the checkpoint's).
        steps: Denoising steps (default: the checkpoint's).
        eta: Stochasticity of ``ddim`` and ``dpmpp_2m`` (default: the checkpoint's).
        seed: Noise seed (default: the checkpoint's); each batch's noise comes from (seed, batch index).
        guidance: Guidance settings replacing the checkpoint's.
        num_samples: Samples per label map (SDM), per pose (PIDM pose transfer) or per appearance edit.
        batch_size: Images sampled together.
        accelerator: ``auto`` (a GPU when there is one), ``cpu`` or ``gpu``.
        overwrite: Replace existing output files.
        labels: SDM: a label-map PNG or a folder of them (raw dataset ids).
        instances: SDM: folder of instance-map PNGs named like the label maps (exactly when the model uses
            instance edges).
        data_config: SDM: a run config whose ``data`` section defines the label remap (default: the checkpoint's).
        image: SDM editing: the photo to edit (used for every label map) or a folder of photos named like them.
        mask: Editing mask PNG (or, SDM, a folder named like the label maps): white (>= 128) is regenerated, the
            rest kept. SDM editing and PIDM ``--edit appearance``.
        mask_labels: SDM editing, instead of ``mask``: regenerate where the label map holds these raw ids.
        source: PIDM: the source (style) person image.
        poses: PIDM pose transfer: a pose file or a folder of them. ``.txt``: 18 rows ``x y`` (OpenPose COCO-18
            order: nose, neck, r/l shoulder, elbow, wrist, hip, knee, ankle, eyes, ears) in the GFLA/NTED frame, 256
            high with the 176-wide image starting at x = 40, -1 for a missing joint; rendered with the model's pose
            encoding. ``.pt``/``.npy``: a ready (P, H, W) pose tensor in [0, 1].
        edit: PIDM editing mode instead of pose transfer: ``appearance`` or ``interpolate``.
        reference: PIDM ``--edit appearance``: the reference person image.
        reference_pose: PIDM ``--edit appearance``: the reference's pose file.
        source2: PIDM ``--edit interpolate``: the second source image.
        pose: PIDM ``--edit interpolate``: the target pose file.
        num_mixes: PIDM ``--edit interpolate``: images from source to source2 (default 5).
        size: PIDM: image size ``[H, W]`` (default: the model's square ``image_size``).
        heatmap_sigma: PIDM with 18-channel heatmap poses: Gaussian sigma in pixels (default 6).
        refiner: PIDM pose transfer: a refiner checkpoint (``lightning_modules.refiner``) that refines every
            generated image; the first stage's images are written to ``<out>/coarse/``.
        refiner_sampling: The refiner's sampler settings (default: its checkpoint's).
        refiner_guidance: The refiner's guidance (``w_pose``: the coarse image; default: its checkpoint's).
        refiner_strength: Where the refiner's sampling starts (1: noise; below 1: the noised coarse image; default:
            its checkpoint's).
    """

    ckpt_path: Path
    out: Path
    sampler: SamplerName | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int | None = None
    guidance: GuidanceOverride = field(default_factory=GuidanceOverride)
    num_samples: int = 1
    batch_size: int = 8
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    overwrite: bool = False
    labels: Path | None = None
    instances: Path | None = None
    data_config: Path | None = None
    image: Path | None = None
    mask: Path | None = None
    mask_labels: list[int] | None = None
    source: Path | None = None
    poses: Path | None = None
    edit: Literal["appearance", "interpolate"] | None = None
    reference: Path | None = None
    reference_pose: Path | None = None
    source2: Path | None = None
    pose: Path | None = None
    num_mixes: int | None = None
    size: tuple[int, int] | None = None
    heatmap_sigma: float | None = None
    refiner: Path | None = None
    refiner_sampling: SamplingOverride = field(default_factory=SamplingOverride)
    refiner_guidance: GuidanceOverride = field(default_factory=GuidanceOverride)
    refiner_strength: float | None = None


def parse_options(argv: Sequence[str] | None = None) -> PredictOptions:
    """The options of a command line (``argv``; default ``sys.argv[1:]``)."""
    return parse_dataclass_options(PredictOptions, "python -m experiments.predict", __doc__, argv)


def check_counts(options: Any, names: Sequence[str]) -> None:
    """Stop when one of the counting options ``names`` of ``options`` is given below 1."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise CommandError(f"--{name} must be at least 1, got {value}")


def check_sampler_options(options: Any) -> None:
    """``--steps`` and ``--eta`` of predict-like ``options``, before any checkpoint is loaded."""
    check_counts(options, ["steps"])
    if options.eta is not None and (options.eta < 0 or (options.eta > 0 and options.sampler == "ddpm")):
        raise CommandError(f"--eta {options.eta}: a non-negative eta applies to the ddim and dpmpp_2m samplers only")


def check_refiner_options(refiner: Path | str | None, sampling: SamplingOverride, guidance: GuidanceOverride,
                          strength: float | None) -> None:
    """Stop when the refiner's sampler, guidance or strength is set without a ``--refiner``."""
    if refiner is None and (sampling != SamplingOverride() or guidance != GuidanceOverride() or strength is not None):
        raise CommandError("--refiner_sampling/--refiner_guidance/--refiner_strength set the refiner's sampling: give "
                           "--refiner too")


def check_options(options: PredictOptions) -> None:
    """Everything that can be checked before the checkpoint is loaded; raises :class:`CommandError`."""
    check_counts(options, ["num_samples", "batch_size", "num_mixes"])
    check_sampler_options(options)
    check_refiner_options(options.refiner, options.refiner_sampling, options.refiner_guidance, options.refiner_strength)
    require_checkpoint_file(options.ckpt_path)
    for name in ("labels", "instances", "data_config", "image", "mask", "source", "poses", "reference",
                 "reference_pose", "source2", "pose", "refiner"):
        path = getattr(options, name)
        if path is not None and not path.exists():
            raise CommandError(f"--{name} {path} does not exist")


def reject_options(
    options: PredictOptions, names: Sequence[str], model: DiffusionLitModule, guidance_names: Sequence[str] = ()
) -> None:
    """Stop when an option (or guidance option) of the other model family was given."""
    given = [f"--{name}" for name in names if getattr(options, name) is not None]
    given += [f"--guidance.{name}" for name in guidance_names if getattr(options.guidance, name) is not None]
    if given:
        family = "PIDM (pose-guided persons)" if isinstance(model, SDMLitModule) else "SDM (semantic layouts)"
        raise CommandError(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of {family} "
                         f"models, but {options.ckpt_path} holds a {type(model).__name__}")


def sampler_settings(model: DiffusionLitModule, options: PredictOptions) -> SamplerSettings:
    """The checkpoint's sampler settings, with those given on the command line replacing them."""
    try:
        return model.sampling.overridden(options.sampler, options.steps, options.eta, options.seed)
    except ValueError as error:
        raise CommandError(f"--sampler/--steps/--eta: {error}") from None


def check_free(paths: Sequence[Path], overwrite: bool) -> None:
    """Stop when an output exists already and overwriting was not asked for."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise CommandError(f"{len(existing)} outputs exist already (e.g. {existing[0]}); pass --overwrite true to "
                         "replace them")


def save_images(images: Tensor, paths: Sequence[Path]) -> list[Path]:
    """Write images (N, 3, H, W) in [-1, 1] as the PNGs ``paths`` (rounded as the metrics score them)."""
    for pixels, path in zip(to_uint8(images), paths, strict=True):
        write_png(path, pixels)
    return list(paths)


def report_outputs(paths: Sequence[Path], out: Path) -> None:
    """Print what was written, and where."""
    shown = ", ".join(p.name for p in paths[:6]) + (f", ... ({len(paths)} in total)" if len(paths) > 6 else "")
    print(f"wrote {len(paths)} file{'s' if len(paths) != 1 else ''} to {out}: {shown}")


class DenoisingProgress:
    """A progress bar over every denoising step of the command; :meth:`step` is a sampler callback."""

    def __init__(self, total_steps: int) -> None:
        self.bar = tqdm(total=total_steps, desc="denoising steps", unit="step")

    def step(self, _: Any) -> None:
        self.bar.update(1)  # returns None: the sampler keeps its state

    def close(self) -> None:
        self.bar.close()


def read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask image as a boolean (H, W) array, True where it is white (>= 128), resized nearest to ``size``."""
    with Image.open(path) as image:
        grey = image.convert("L")
        if size is not None:
            grey = grey.resize((size[1], size[0]), Image.NEAREST)
        return np.array(grey) >= 128


def device_for(accelerator: str) -> torch.device:
    """The device of ``--accelerator``."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise CommandError("--accelerator gpu: no CUDA device is available")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


# --- SDM ------------------------------------------------------------------------------------------------------------


def load_label_lut(config_path: Path) -> Tensor | None:
    """The raw-value-to-class table of the DataModule in a run config's ``data`` section (None: no label maps)."""
    config = yaml.safe_load(config_path.read_text())
    if not isinstance(config, dict) or "data" not in config:
        raise CommandError(f"{config_path} has no 'data' section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    datamodule = parser.instantiate(parser.parse_object({"data": config["data"]})).data
    return datamodule.raw_label_lut() if hasattr(datamodule, "raw_label_lut") else None


def label_remap(model: SDMLitModule, ckpt_path: Path, data_config: Path | None) -> LabelRemap | None:
    """How label PNG values become class ids: ``--data_config``, else the checkpoint's table, else the run's
    ``config.yaml``; None (values are class ids) when none of them says, which is printed."""
    if data_config is not None:
        lut = load_label_lut(data_config)
    elif model.raw_label_lut is not None:
        lut = model.raw_label_lut
    else:
        run_config = ckpt_path.resolve().parent.parent / "config.yaml"
        lut = load_label_lut(run_config) if run_config.is_file() else None
    if lut is None:
        print(f"{ckpt_path} stores no label decoding and no run config.yaml is next to it: the PNG values are "
              f"used as class ids 0..{model.num_classes - 1} (give --data_config RUN/config.yaml for raw dataset ids)")
        return None
    table = lut.numpy().astype(np.int64)
    return lambda raw: table[raw]


def matching_file(path: Path, stem: str, suffixes: Sequence[str], option: str) -> Path:
    """``path`` itself when it is a file, else the file named ``stem`` (with one of ``suffixes``) inside it."""
    if path.is_file():
        return path
    for suffix in suffixes:
        if (path / f"{stem}{suffix}").is_file():
            return path / f"{stem}{suffix}"
    raise CommandError(f"--{option} {path} has no file named {stem} with a suffix in {list(suffixes)}")


class LabelMapFolder(Dataset):
    """Label maps (with optional instance maps, and the photo and mask of an edit), each served ``num_samples``
    times, as batches of :meth:`SDMLitModule.generate_batch`.

    Args:
        labels: Label PNG files, in output order.
        num_classes: Valid class ids are ``0..num_classes-1`` after ``remap``.
        remap: The dataset's raw-id to class-id mapping, or ``None`` when files hold class ids.
        num_samples: Samples generated per label map.
        instances: Folder with the matching instance maps, or ``None``.
        image: Photo (or folder of photos named like the label maps) to edit, or ``None``.
        mask: Mask PNG (or folder of them), white = regenerate; with ``image`` and without ``mask_labels``.
        mask_labels: Raw label ids whose pixels are regenerated; with ``image`` and without ``mask``.
    """

    def __init__(
        self,
        labels: Sequence[Path],
        num_classes: int,
        remap: LabelRemap | None,
        num_samples: int,
        instances: Path | None = None,
        image: Path | None = None,
        mask: Path | None = None,
        mask_labels: Sequence[int] | None = None,
    ) -> None:
        self.labels = list(labels)
        self.num_classes = num_classes
        self.remap = remap
        self.num_samples = num_samples
        self.instances = instances
        self.image = image
        self.mask = mask
        self.mask_labels = mask_labels
        self.size = read_index_map(self.labels[0]).shape

    def __len__(self) -> int:
        return len(self.labels) * self.num_samples

    def _read(self, path: Path) -> np.ndarray:
        values = read_index_map(path)
        if values.shape != self.size:
            raise CommandError(f"{path} has size {values.shape}, but {self.labels[0]} has {self.size}; all maps of one "
                             "run must share a size")
        return values

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.labels[index // self.num_samples]
        raw = self._read(path)
        label = raw if self.remap is None else self.remap(raw)
        invalid = (label < 0) | (label >= self.num_classes)
        if invalid.any():
            values = np.unique(raw[invalid])
            meaning = "class ids" if self.remap is None else "raw ids that are no class of the training data"
            raise CommandError(f"label map {path} has {meaning} {values[:10].tolist()}"
                             f"{' ...' if len(values) > 10 else ''}; valid classes are 0..{self.num_classes - 1}")
        item = {"label": torch.from_numpy(label), "name": f"{path.stem}_s{index % self.num_samples}"}
        if self.instances is not None:
            item["instance"] = torch.from_numpy(self._read(matching_file(self.instances, path.stem, [".png"],
                                                                         "instances")))
        if self.image is not None:
            item["reference"], item["mask"] = self._edit(path, raw)
        return item

    def _edit(self, path: Path, raw: np.ndarray) -> tuple[Tensor, Tensor]:
        image_path = matching_file(self.image, path.stem, IMAGE_SUFFIXES, "image")
        image = read_rgb(image_path)
        if image.shape[:2] != self.size:
            raise CommandError(f"photo {image_path} has size {image.shape[:2]}, but label map {path} has {self.size}")
        if self.mask_labels is not None:
            mask = np.isin(raw, self.mask_labels)
        else:
            mask_path = matching_file(self.mask, path.stem, [".png"], "mask")
            mask = read_mask(mask_path)
            if mask.shape != self.size:
                raise CommandError(f"mask {mask_path} has size {mask.shape}, but label map {path} has {self.size}")
        reference = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return reference, torch.from_numpy(mask).float()[None]


def label_files(path: Path) -> list[Path]:
    """The label PNGs of ``--labels``: the file, or the folder's ``*.png`` in name order."""
    files = [path] if path.is_file() else sorted(path.glob("*.png"))
    if not files:
        raise CommandError(f"--labels {path} holds no .png label maps")
    return files


def predict_sdm(model: SDMLitModule, options: PredictOptions, sampling: SamplerSettings) -> list[Path]:
    """Sample every label map ``num_samples`` times (editing the photos when ``--image`` is given)."""
    if options.labels is None:
        raise CommandError("--labels (a label PNG or a folder of them) is required for an SDM checkpoint")
    if model.instance_edges != (options.instances is not None):
        raise CommandError("this model uses instance edges: pass --instances DIR" if model.instance_edges else
                         f"--instances: {options.ckpt_path} has no instance-edge channel, so it takes no instance maps")
    editing = options.image is not None
    if editing and (options.mask is None) == (options.mask_labels is None):
        raise CommandError("--image edits a photo: give exactly one of --mask (white = regenerate) and --mask_labels")
    if not editing and (options.mask is not None or options.mask_labels is not None):
        raise CommandError("--mask/--mask_labels select the region of --image to regenerate; --image is missing")
    labels = label_files(options.labels)
    dataset = LabelMapFolder(labels, model.num_classes, label_remap(model, options.ckpt_path, options.data_config),
                             options.num_samples, options.instances, options.image, options.mask, options.mask_labels)
    paths = [options.out / f"{path.stem}_s{k}.png" for path in labels for k in range(options.num_samples)]
    check_free(paths, options.overwrite)
    guidance = model.guidance if options.guidance.scale is None else ClassifierFreeGuidance(options.guidance.scale)
    device = device_for(options.accelerator)
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=options.batch_size)
    progress = DenoisingProgress(sampling.steps * len(loader))
    written = []
    for index, batch in enumerate(loader):
        generator = torch.Generator(device).manual_seed(derived_seed(sampling.seed, index))
        if editing:
            images = inpaint(model, batch, batch["reference"], batch["mask"], sampling=sampling, guidance=guidance,
                             generator=generator, callback=progress.step)
        else:
            images = model.generate_batch(batch, sampling=sampling, guidance=guidance, generator=generator,
                                          callback=progress.step)
        written += save_images(images, [options.out / f"{name}.png" for name in batch["name"]])
    progress.close()
    return written


# --- entry point ----------------------------------------------------------------------------------------------------


def run(options: PredictOptions) -> list[Path]:
    """Check the options, load the checkpoint and run its family's mode; returns the written files."""
    from experiments.predict_pidm import predict_pidm  # the PIDM modes import this module's helpers

    check_options(options)
    model = load_diffusion_module(options.ckpt_path)
    sampling = sampler_settings(model, options)
    if isinstance(model, PIDMLitModule):
        reject_options(options, SDM_OPTIONS, model)
        written = predict_pidm(model, options, sampling)
    elif isinstance(model, SDMLitModule):
        reject_options(options, PIDM_OPTIONS, model, PIDM_GUIDANCE)
        written = predict_sdm(model, options, sampling)
    else:
        raise CommandError(f"{options.ckpt_path} holds a {type(model).__name__}, which predict does not sample")
    report_outputs(written, options.out)
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Entry point; ``argv`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    return run(parse_options(argv))


if __name__ == "__main__":
    run_main(main)

"""Generate images for your own label maps with a trained (or imported) SDM checkpoint.

PIDM checkpoints take ``--source IMG --poses DIR`` or ``--edit appearance|interpolate ...`` instead of
``--labels`` (see ``experiments/predict_pidm.py``).

    python -m experiments.predict --ckpt_path runs/sdm_shapes/version_0/checkpoints/last.ckpt \
        --labels my_labels/ [--instances my_instances/] --out generated/ \
        [--sampler ddim --steps 50 --guidance_scale 1.5 --num_samples 1 --seed 0 --batch_size 8]

Sampler, steps, eta and guidance scale default to the checkpoint's own sampling settings (those it was trained and
fine-tuned with; an imported official checkpoint samples as the official code); the options given replace them.
Label PNGs hold the **raw ids as stored in the dataset's annotation files** (e.g. ADE20K/shapes: 1..K with 0 =
"other"); the dataset's own remap turns them into class ids. That remap is stored in checkpoints written by
``experiments.fit``; ``--data_config`` (a run config whose ``data`` section names the dataset) replaces it, and for
older checkpoints the run's ``config.yaml`` next to the ``checkpoints/`` folder is read. Without any of these (e.g.
an imported official checkpoint) the PNG values must already be class ids ``0..num_classes-1``, which the command
says. Instance maps (same file names) are needed exactly when the model uses instance edges.
Outputs are ``<out>/<label stem>_s<k>.png`` for sample k; existing files are never overwritten without
``--overwrite``. Noise is seeded per batch from ``--seed`` and the batch index. An option that does not apply to
the checkpoint's model family is an error, never ignored.
"""

import argparse
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from datamodules.image_files import write_png
from datamodules.semantic_files import read_index_map
from experiments.predict_pidm import PIDM_OPTIONS, add_pidm_arguments, predict_pidm
from lightning_modules.base import DiffusionLitModule, SamplerSettings
from lightning_modules.checkpoint_loading import load_diffusion_module
from lightning_modules.diffusion import SAMPLERS
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.pidm import PIDMLitModule
from lightning_modules.sdm import ClassifierFreeGuidance, SDMLitModule

LabelRemap = Callable[[np.ndarray], np.ndarray]
SDM_OPTIONS = ("labels", "instances", "data_config")  # and --guidance_scale (predict_pidm says what PIDM takes)


class LabelMapFolder(Dataset):
    """Label maps (and optional instance maps with the same file names), each served ``num_samples`` times.

    Args:
        labels: Label PNG files, in output order.
        instance_dir: Folder with the matching instance maps, or ``None``.
        num_classes: Valid class ids are ``0..num_classes-1`` after ``remap``.
        remap: The dataset's raw-id to class-id mapping, or ``None`` when files hold class ids.
        num_samples: Samples generated per label map.
    """

    def __init__(
        self,
        labels: Sequence[Path],
        instance_dir: Path | None,
        num_classes: int,
        remap: LabelRemap | None,
        num_samples: int,
    ) -> None:
        if not labels:
            raise ValueError("no label maps given")
        self.labels = list(labels)
        self.instance_dir = instance_dir
        self.num_classes = num_classes
        self.remap = remap
        self.num_samples = num_samples
        self.size = read_index_map(self.labels[0]).shape

    def __len__(self) -> int:
        return len(self.labels) * self.num_samples

    def _read(self, path: Path) -> np.ndarray:
        values = read_index_map(path)
        if values.shape != self.size:
            raise ValueError(f"{path} has size {values.shape}, but {self.labels[0]} has {self.size}; "
                             "all maps of one run must share a size")
        return values

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.labels[index // self.num_samples]
        raw = self._read(path)
        label = raw if self.remap is None else self.remap(raw)
        invalid = (label < 0) | (label >= self.num_classes)
        if invalid.any():
            values = np.unique(raw[invalid])
            meaning = "class ids" if self.remap is None else "raw ids that are no class of the training data"
            raise ValueError(f"label map {path} has {meaning} {values[:10].tolist()}"
                             f"{' ...' if len(values) > 10 else ''}; valid classes are 0..{self.num_classes - 1}")
        item = {"label": torch.from_numpy(label), "stem": path.stem, "sample_index": index % self.num_samples}
        if self.instance_dir is not None:
            instance_path = self.instance_dir / path.name
            if not instance_path.is_file():
                raise FileNotFoundError(f"no instance map {instance_path} for label map {path}")
            item["instance"] = torch.from_numpy(self._read(instance_path))
        return item


def output_name(stem: str, sample_index: int) -> str:
    """File name of sample ``sample_index`` generated for the label map ``stem``."""
    return f"{stem}_s{sample_index}.png"


class PNGWriter(BasePredictionWriter):
    """Writes each predicted batch (B, 3, H, W) in [-1, 1] as ``<out>/<stem>_s<k>.png``."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = out_dir

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        for pixels, stem, sample_index in zip(to_uint8(prediction), batch["stem"], batch["sample_index"].tolist()):
            write_png(self.out_dir / output_name(stem, sample_index), pixels)


class DenoisingProgressBar(Callback):
    """A progress bar over all denoising steps of the predict run (rank zero only)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.bar: tqdm | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: DiffusionLitModule) -> None:
        total = self.steps * sum(trainer.num_predict_batches)
        self.bar = tqdm(total=total, desc="denoising steps", disable=not trainer.is_global_zero)
        pl_module.sampling_callback = self._advance

    def _advance(self, step: Any) -> None:
        self.bar.update(1)  # returns None: the sampler keeps its state

    def on_predict_end(self, trainer: pl.Trainer, pl_module: DiffusionLitModule) -> None:
        pl_module.sampling_callback = None
        self.bar.close()


def load_label_lut(config_path: Path) -> torch.Tensor | None:
    """The raw-value-to-class table of the DataModule in a run config's ``data`` section (None: no label maps)."""
    config = yaml.safe_load(config_path.read_text())
    if not isinstance(config, dict) or "data" not in config:
        raise ValueError(f"{config_path} has no 'data' section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    datamodule = parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data
    return datamodule.raw_label_lut() if hasattr(datamodule, "raw_label_lut") else None


def lookup(lut: torch.Tensor) -> LabelRemap:
    """The remap that reads raw label values through ``lut`` (see ``SemanticDataModule.raw_label_lut``)."""
    table = lut.numpy().astype(np.int64)
    return lambda raw: table[raw]


def label_remap(model: SDMLitModule, ckpt_path: Path, data_config: Path | None) -> LabelRemap | None:
    """How label PNG values become class ids: ``--data_config``, else the checkpoint's table, else the run's
    ``config.yaml``; None (values are class ids) when none of them says, which is printed."""
    if data_config is not None:
        if not data_config.is_file():
            raise SystemExit(f"--data_config {data_config} does not exist")
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
    return lookup(lut)


def load_model(ckpt_path: Path) -> DiffusionLitModule:
    """Rebuild the LightningModule a checkpoint names (written by ``experiments.fit`` or ``import_official``)."""
    if not ckpt_path.is_file():
        raise SystemExit(f"--ckpt_path {ckpt_path} does not exist")
    return load_diffusion_module(ckpt_path)


def sampler_settings(model: DiffusionLitModule, args: argparse.Namespace) -> SamplerSettings:
    """The checkpoint's sampler settings, with those given on the command line replacing them."""
    given = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "seed": args.seed}
    return replace(model.sampling, **{name: value for name, value in given.items() if value is not None})


def reject_options(args: argparse.Namespace, names: Sequence[str], model: DiffusionLitModule, ckpt: Path) -> None:
    """Stop when an option of the other model family was given."""
    given = [f"--{name}" for name in names if getattr(args, name) is not None]
    if given:
        family = "PIDM (pose-guided persons)" if isinstance(model, SDMLitModule) else "SDM (semantic layouts)"
        raise SystemExit(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of {family} "
                         f"models, but {ckpt} holds a {type(model).__name__}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", type=Path, required=True, help="checkpoint (EMA weights are its state_dict)")
    parser.add_argument("--labels", type=Path, help="SDM: folder of label-map PNGs (raw dataset ids)")
    parser.add_argument("--instances", type=Path, help="folder of instance-map PNGs named like the labels")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data_config", type=Path, help="run config whose data section defines the label remap")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler (default: the checkpoint's)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the checkpoint's)")
    parser.add_argument("--guidance_scale", type=float,
                        help="SDM classifier-free guidance, 1 = none (default: the checkpoint's)")
    parser.add_argument("--eta", type=float, help="DDIM eta (default: the checkpoint's)")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per label map or pose")
    parser.add_argument("--seed", type=int, help="noise seed (default: the checkpoint's)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_pidm_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Run prediction; returns the written files."""
    args = parse_args(argv)
    if args.num_samples < 1 or args.batch_size < 1 or (args.steps is not None and args.steps < 1):
        raise SystemExit("--num_samples, --batch_size and --steps must be positive")
    model = load_model(args.ckpt_path)
    if isinstance(model, PIDMLitModule):
        reject_options(args, SDM_OPTIONS, model, args.ckpt_path)
        return predict_pidm(model, args, sampler_settings(model, args))
    if not isinstance(model, SDMLitModule):
        raise SystemExit(f"{args.ckpt_path} holds a {type(model).__name__}, which predict does not sample")
    reject_options(args, PIDM_OPTIONS, model, args.ckpt_path)
    if args.labels is None:
        raise SystemExit("--labels DIR is required for an SDM checkpoint")
    labels = sorted(args.labels.glob("*.png"))
    if not labels:
        raise SystemExit(f"no .png label maps in {args.labels}")
    if model.instance_edges != (args.instances is not None):
        raise SystemExit("this model uses instance edges: pass --instances DIR" if model.instance_edges else
                         f"--instances: {args.ckpt_path} has no instance-edge channel, so it takes no instance maps")
    outputs = [args.out / output_name(p.stem, k) for p in labels for k in range(args.num_samples)]
    existing = [p for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise SystemExit(f"{len(existing)} outputs exist already (e.g. {existing[0]}); pass --overwrite to replace")
    remap = label_remap(model, args.ckpt_path, args.data_config)
    model.sampling = sampler_settings(model, args)
    if args.guidance_scale is not None:
        model.guidance = ClassifierFreeGuidance(args.guidance_scale)
    dataset = LabelMapFolder(labels, args.instances, model.num_classes, remap, args.num_samples)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PNGWriter(args.out), DenoisingProgressBar(model.sampling.steps)],
    )
    trainer.predict(model, dataloaders=DataLoader(dataset, batch_size=args.batch_size), return_predictions=False)
    return outputs


if __name__ == "__main__":
    main()

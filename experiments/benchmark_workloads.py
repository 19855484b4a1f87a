"""What the benchmark runs: the network of an experiment config plus synthetic inputs and guidance for it.

:func:`load_lit_module` builds the config's LightningModule exactly as ``experiments.fit`` would (same
``class_path``/``init_args``, same data-to-model links), optionally with the small CPU architecture
(:data:`SMALL_ARCHITECTURE`). :func:`workload_for` wraps its network in a :class:`Workload` that knows how to make
a random training batch and the guided sampling variants of that network family (SDM or PIDM).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from jsonargparse import ArgumentParser
from pytorch_lightning import LightningDataModule, LightningModule
from torch import Tensor, nn

from experiments.cli import DATA_TO_MODEL
from lightning_modules.diffusion import DiffusionSchedule, Guidance, classifier_free, style_only
from lightning_modules.nets.pidm_unet import PIDMUNet
from lightning_modules.nets.sdm_unet import SDMUNet

# Model init arguments of the small architecture used for CPU runs; each is applied where the model accepts it.
# Widths stay multiples of 32 (GroupNorm groups) and attention sits at the two lowest resolutions.
SMALL_ARCHITECTURE: dict[str, Any] = {
    "image_size": 16,
    "model_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [8, 4],
    "num_head_channels": 32,
    "spade_hidden_channels": 32,
    "embed_channels": 128,
}
SMALL_BATCH_SIZE = 2


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``model`` and ``data`` sections of an experiment YAML (both must have a ``class_path``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {path} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    for key in ("model", "data"):
        section = config.get(key)
        if not isinstance(section, dict) or "class_path" not in section:
            raise ValueError(f"{path}: '{key}' must be a mapping with a class_path (subclass mode), got {section!r}")
    return {"model": config["model"], "data": config["data"]}


def accepted_overrides(class_path: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``overrides`` that the constructor of ``class_path`` (or a base class) accepts by name."""
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    names = {name for klass in cls.__mro__ for name in inspect.signature(klass.__init__).parameters}
    return {key: value for key, value in overrides.items() if key in names}


def load_lit_module(config_path: str | Path, model_overrides: Mapping[str, Any] | None = None) -> LightningModule:
    """Instantiate the config's LightningModule with the data-to-model links of ``experiments.cli``.

    Args:
        config_path: Experiment YAML with ``model`` and ``data`` in subclass mode.
        model_overrides: ``init_args`` replacing the config's (e.g. a smaller architecture).
    """
    sections = read_config(config_path)
    model = dict(sections["model"])
    model["init_args"] = {**(model.get("init_args") or {}), **(model_overrides or {})}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    for source, target in DATA_TO_MODEL:
        parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
    try:
        namespace = parser.parse_object({"model": model, "data": sections["data"]})
    except Exception as error:
        raise ValueError(f"{config_path}: cannot parse the model/data sections: {error}") from error
    module = parser.instantiate(namespace).model
    if not isinstance(getattr(module, "net", None), nn.Module):
        raise TypeError(f"{config_path}: {type(module).__name__} has no network attribute 'net' to benchmark")
    return module


@dataclass
class Workload:
    """A network with the diffusion settings and synthetic conditions the benchmark feeds it.

    Attributes:
        family: ``"SDM"`` or ``"PIDM"``.
        net: The denoising network ``net(x_t, t, **conditions)``.
        schedule: Training diffusion schedule.
        variance: Variance mode of the network output (``"learned_range"`` or fixed).
        vlb_weight: Weight of the variational term of the hybrid loss.
        optimizer_options: AdamW keyword arguments.
        image_channels: Channels of the generated image.
    """

    family: str
    net: nn.Module
    schedule: DiffusionSchedule
    variance: str
    vlb_weight: float
    optimizer_options: dict[str, Any]
    image_channels: int = 3

    def conditions(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> dict[str, Tensor]:
        """Random training conditions (the network's keyword arguments) on the generator's device."""
        h, w = size
        device = generator.device
        if self.family == "SDM":
            labels = torch.randint(0, self.net.label_channels, (batch, h, w), generator=generator, device=device)
            return {"y": F.one_hot(labels, self.net.label_channels).permute(0, 3, 1, 2).float()}
        pose_channels = self.net.in_channels - self.image_channels
        return {
            "pose": torch.rand(batch, pose_channels, h, w, generator=generator, device=device),
            "source": torch.randn(batch, self.image_channels, h, w, generator=generator, device=device),
        }

    def guidance(self, scale: float) -> Guidance:
        """SDM: classifier-free guidance against the all-zero label map. PIDM: the official style guidance."""
        if scale <= 1.0:
            raise ValueError(f"the benchmark measures guided sampling, so the guidance scale must be > 1, got {scale}")
        return classifier_free(scale) if self.family == "SDM" else style_only(scale)

    def guidance_variants(self, model: nn.Module, conditions: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
        """The condition variants of :meth:`guidance`, built as sampling builds them: once per run.

        PIDM's texture features of the source and of the null (all-zero) source are encoded here, once.
        """
        if self.family == "SDM":
            y = conditions["y"]
            return {"cond": {"y": y}, "null": {"y": torch.zeros_like(y)}}
        source = conditions["source"]
        texture = model.encode(torch.cat([source, torch.zeros_like(source)]))
        full, null = zip(*(feature.chunk(2) for feature in texture))
        pose = conditions["pose"]
        return {"full": {"pose": pose, "texture": list(full)}, "pose": {"pose": pose, "texture": list(null)}}


def randomize_zero_parameters(net: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Give every all-zero parameter small random values, in place.

    Zero-initialised output projections make a fresh network's attention (and output head) contribute nothing,
    which would hide any difference between attention implementations and produce trivial outputs.
    """
    with torch.no_grad():
        for parameter in net.parameters():
            if not parameter.any():
                noise = torch.randn(parameter.shape, generator=generator, device=generator.device)
                parameter.copy_(noise.to(parameter.device) * std)


def workload_for(module: LightningModule) -> Workload:
    """The :class:`Workload` of a condiff diffusion LightningModule (its ``net`` must be SDMUNet or PIDMUNet)."""
    net = module.net
    families = {SDMUNet: "SDM", PIDMUNet: "PIDM"}
    family = families.get(type(net))
    if family is None:
        raise TypeError(f"cannot benchmark a {type(net).__name__}; supported networks: {list(families.values())}")
    return Workload(
        family=family,
        net=net,
        schedule=module.schedule,
        variance=module.variance,
        vlb_weight=module.vlb_weight,
        optimizer_options=dict(module.optimizer_options),
        image_channels=getattr(module, "image_channels", 3),
    )

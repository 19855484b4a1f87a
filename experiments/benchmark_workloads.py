"""What the benchmark runs: the network of an experiment config plus synthetic inputs and guidance for it.

:func:`load_lit_module` builds the config's LightningModule exactly as ``experiments.fit`` would (same
``class_path``/``init_args``, same data-to-model links), optionally with the small CPU architecture
(:data:`SMALL_NETWORK`). A :class:`Workload` wraps the module: it makes random batches in the DataModules' format
of the module's family, and the network inputs and guided sampling variants come from the module's own methods
(``training_inputs``, ``guided_conditions``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import torch
import yaml
from jsonargparse import ArgumentParser
from pytorch_lightning import LightningDataModule, LightningModule
from torch import Tensor, nn

from experiments.cli import DATA_TO_MODEL
from lightning_modules.base import DiffusionLitModule
from lightning_modules.pidm import PoseStyleGuidance
from lightning_modules.sdm import ClassifierFreeGuidance, SDMLitModule

# Network settings of the small architecture used for CPU runs; each is applied where the network config has it.
# Widths stay multiples of 32 (GroupNorm groups) and attention sits at the two lowest resolutions.
SMALL_NETWORK: dict[str, Any] = {
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


def network_overrides(class_path: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``overrides`` that the ``network`` settings of the module ``class_path`` have."""
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    config_type = get_type_hints(cls.__init__)["network"]
    names = {field.name for field in fields(config_type)}
    return {key: value for key, value in overrides.items() if key in names}


def load_lit_module(config_path: str | Path, network: Mapping[str, Any] | None = None) -> DiffusionLitModule:
    """Instantiate the config's LightningModule with the data-to-model links of ``experiments.cli``.

    Args:
        config_path: Experiment YAML with ``model`` and ``data`` in subclass mode.
        network: Network settings replacing the config's (e.g. a smaller architecture).
    """
    sections = read_config(config_path)
    model = dict(sections["model"])
    init_args = dict(model.get("init_args") or {})
    init_args["network"] = {**(init_args.get("network") or {}), **(network or {})}
    model["init_args"] = init_args
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
    if not isinstance(module, DiffusionLitModule):
        raise TypeError(f"{config_path}: {type(module).__name__} is not a diffusion model the benchmark can run")
    return module.eval()  # no condition dropout in the inputs it builds


@dataclass
class Workload:
    """A diffusion LightningModule with the random batches the benchmark feeds it.

    Attributes:
        module: The SDM or PIDM module; its ``net`` is what gets measured.
    """

    module: DiffusionLitModule

    @property
    def family(self) -> str:
        """``"SDM"`` or ``"PIDM"``, for titles."""
        return "SDM" if isinstance(self.module, SDMLitModule) else "PIDM"

    @property
    def net(self) -> nn.Module:
        """The denoising network ``net(x_t, t, **conditions)``."""
        return self.module.net

    @property
    def image_channels(self) -> int:
        """Channels of the generated image."""
        return self.module.image_channels

    def data_batch(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> dict[str, Tensor]:
        """A random batch in the DataModules' format of the module's family, on the generator's device."""
        h, w = size
        device = generator.device
        images = torch.rand(3, batch, self.image_channels, h, w, generator=generator, device=device) * 2 - 1
        if isinstance(self.module, SDMLitModule):
            labels = torch.randint(0, self.module.num_classes, (2, batch, h, w), generator=generator, device=device)
            return {"image": images[0], "label": labels[0], "instance": labels[1]}
        pose = torch.rand(batch, self.module.pose_channels, h, w, generator=generator, device=device)
        return {"target": images[0], "source": images[1], "target_pose": pose}

    def conditions(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> dict[str, Tensor]:
        """The network's keyword arguments for a random batch, as the module builds them for training."""
        return self.module.training_inputs(self.data_batch(batch, size, generator))[1]

    def guidance(self, scale: float) -> Any:
        """The guidance the benchmark measures: SDM's classifier-free guidance, PIDM's official style guidance."""
        if scale <= 1.0:
            raise ValueError(f"the benchmark measures guided sampling, so the guidance scale must be > 1, got {scale}")
        if isinstance(self.module, SDMLitModule):
            return ClassifierFreeGuidance(scale)
        return PoseStyleGuidance("style_only", scale=scale)


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

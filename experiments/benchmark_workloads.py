"""What the benchmark runs: the network of an experiment config plus synthetic inputs and guidance for it.

The benchmark's CLI builds the config's LightningModule exactly as ``experiments.fit`` would, optionally with the
small CPU architecture (:data:`SMALL_NETWORK`, applied through :func:`network_overrides`). A :class:`Workload` wraps
the module: it makes random batches in the DataModules' format of the module's family, and the network inputs and
guided sampling variants come from the module's own methods (``training_inputs``, ``guided_conditions``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

import torch
from torch import Tensor, nn

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


def network_overrides(class_path: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``overrides`` that the ``network`` settings of the module ``class_path`` have."""
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    config_type = get_type_hints(cls.__init__)["network"]
    names = {field.name for field in fields(config_type)}
    return {key: value for key, value in overrides.items() if key in names}


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

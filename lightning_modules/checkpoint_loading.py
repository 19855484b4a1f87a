"""Rebuilding a diffusion LightningModule from a checkpoint of ``experiments.fit`` or ``experiments.import_official``.

The checkpoint names its class (``_class_path``) and holds the module's arguments as plain values; the module is
rebuilt from them, its weights (the EMA ones, when trained with the EMA callback) load strictly, and its own
checkpoint hook restores what else it keeps (e.g. SDM's raw-label table).
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from lightning_modules.base import DiffusionLitModule
from lightning_modules.nets.pidm_unet import PIDMUNetConfig
from lightning_modules.nets.sdm_unet import SDMUNetConfig
from lightning_modules.pidm import GUIDANCE_WEIGHTS

NETWORK_FIELDS = {f.name for f in fields(SDMUNetConfig)} | {f.name for f in fields(PIDMUNetConfig)}
LEGACY_SAMPLING = {"sampler": "sampler", "sampling_steps": "steps", "eta": "eta"}


def upgrade_hyperparameters(hparams: dict[str, Any]) -> dict[str, Any]:
    """Arguments of checkpoints written before the network, sampler and guidance settings became blocks
    (``network``, ``sampling``, ``guidance``), in today's form; current ones are returned unchanged."""
    hparams = dict(hparams)
    network = {name: hparams.pop(name) for name in NETWORK_FIELDS & set(hparams)}
    if network:
        hparams["network"] = network
    sampling = {new: hparams.pop(old) for old, new in LEGACY_SAMPLING.items() if old in hparams}
    if sampling:
        hparams["sampling"] = sampling
    if "guidance_scale" in hparams:  # SDM
        hparams["guidance"] = {"scale": hparams.pop("guidance_scale")}
    if isinstance(hparams.get("guidance"), str):  # PIDM: the form, with every weight stored beside it
        form = hparams.pop("guidance")
        weights = {name: hparams.pop(name, None) for name in ("w_pose", "w_style", "scale")}
        hparams["guidance"] = {"form": form, **{name: weights[name] for name in GUIDANCE_WEIGHTS[form]}}
    return hparams


def load_diffusion_module(path: str | Path) -> DiffusionLitModule:
    """The SDM or PIDM module a checkpoint holds, with its weights, in eval mode on the CPU.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The checkpoint does not name a diffusion module class.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = upgrade_hyperparameters(checkpoint.get("hyper_parameters", {}))
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    module_name, _, class_name = (class_path or "").rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None) if module_name else None
    if not (isinstance(cls, type) and issubclass(cls, DiffusionLitModule)):
        raise ValueError(f"{path} does not name a diffusion model class (found {class_path!r}); use a checkpoint "
                         "written by experiments.fit or experiments.import_official")
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.eval()

r"""Convert official checkpoints into condiff checkpoints that ``experiments.predict`` and ``experiments.test`` accept.

    python -m experiments.import_official --family sdm --weights ema_0.9999_best.pt \
        --official_config flags.yaml --out sdm_ade20k.ckpt
    python -m experiments.import_official --family pidm --weights last.pt --official_config config.json \
        --out pidm_deepfashion.ckpt

For SDM ``--official_config`` is a JSON or YAML mapping of the official script flags the model was trained with
(``image_size``, ``num_channels``, ``num_res_blocks``, ``attention_resolutions``, ``num_classes``, ``no_instance``,
...; the diffusion flags ``diffusion_steps``, ``noise_schedule``, ``learn_sigma`` and ``sigma_small`` are honoured
too). The official weights become the checkpoint's ``state_dict`` (what predict/test sample with).

For PIDM, ``--weights`` is an official checkpoint dict with an ``ema`` (preferred) or ``model`` entry, or a plain
state dict; ``--official_config`` holds the official ``BeatGANsAutoencConfig`` fields (``config/diffconfig.py``).

The imported checkpoint samples as the official code does, with no further options: SDM with ancestral DDPM over
all 1000 steps, guidance scale 1.5 and x̂0 clipped to [-1, 1] (its scripts and README); PIDM with its fast DDIM
over 100 steps (``utils/gen.py``), style-only guidance with scale 2 and x̂0 not clipped. Next to the checkpoint
``<out>.yaml`` holds its ``model`` section (architecture plus those sampling settings), to give the test command
after the dataset config: ``python -m experiments.test --config configs/sdm/ade20k.yaml --config sdm_ade20k.yaml
--ckpt_path sdm_ade20k.ckpt --data.init_args.root ...``.
"""

import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ActionConfigFile

from experiments.errors import CommandError, command_parser, parse_args, run_main
from lightning_modules.official import load_official_pidm, load_official_sdm, pidm_module_hparams, sdm_module_hparams
from lightning_modules.pidm import PIDMLitModule
from lightning_modules.sdm import SDMLitModule


def read_flags(path: Path) -> dict[str, Any]:
    """Official flags from a ``.json`` or ``.yaml``/``.yml`` file (a flat mapping)."""
    text = path.read_text()
    flags = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(flags, dict):
        raise ValueError(f"{path} must hold a mapping of official flag names to values")
    return flags


def import_sdm(weights: Path, flags_path: Path) -> dict[str, Any]:
    """A Lightning checkpoint dict holding official SDM weights and the hyperparameters that rebuild the module."""
    flags = read_flags(flags_path)
    state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    net = load_official_sdm(state_dict, flags)
    hparams = sdm_module_hparams(flags)
    module = SDMLitModule(**hparams)
    module.net.load_state_dict(net.state_dict())
    return lightning_checkpoint(module, hparams)


def lightning_checkpoint(module: pl.LightningModule, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint as ``experiments.fit`` writes it: weights plus CLI-style hyperparameters naming the class."""
    cls = type(module)
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": {
            "_class_path": f"{cls.__module__}.{cls.__qualname__}",
            "_instantiator": "pytorch_lightning.cli.instantiate_module",
            **hparams,
        },
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
    }


def official_pidm_state_dict(weights: Path) -> Mapping[str, Any]:
    """The network weights of an official PIDM file: its ``ema`` entry, else ``model``, else the file itself."""
    try:
        loaded = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{weights} holds non-tensor objects (e.g. the official 'conf'); in the official environment re-save "
            f"its weights with torch.save(torch.load(path)['ema'], 'ema.pt') and import that ({error})"
        ) from error
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{weights} does not hold a state dict or checkpoint dict")
    for key in ("ema", "model"):
        if key in loaded:
            return loaded[key]
    return loaded


def import_pidm(weights: Path, config_path: Path) -> dict[str, Any]:
    """A Lightning checkpoint dict holding official PIDM weights and the hyperparameters that rebuild the module."""
    config = read_flags(config_path)
    net = load_official_pidm(official_pidm_state_dict(weights), config)
    hparams = pidm_module_hparams(config)
    module = PIDMLitModule(**hparams)
    module.net.load_state_dict(net.state_dict())
    return lightning_checkpoint(module, hparams)


# Each importer: (weights, official arguments file) -> checkpoint dict.
IMPORTERS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {"sdm": import_sdm, "pidm": import_pidm}


def model_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` config section that rebuilds a checkpoint's module (for ``experiments.test --config``)."""
    hparams = dict(checkpoint["hyper_parameters"])
    class_path = hparams.pop("_class_path")
    hparams.pop("_instantiator", None)
    return {"model": {"class_path": class_path, "init_args": hparams}}


def import_official(
    family: Literal["sdm", "pidm"], weights: Path, official_config: Path, out: Path, overwrite: bool = False
) -> Path:
    """Convert an official checkpoint; writes ``out`` and the model config ``<out>.yaml`` beside it.

    Args:
        family: ``sdm`` (WeilunWang/semantic-diffusion-model) or ``pidm`` (ankanbhunia/PIDM).
        weights: SDM: an official ``model*.pt``/``ema_*.pt`` state dict. PIDM: an official ``.pt`` holding
            ``ema`` (preferred) or ``model``, or a plain state dict.
        official_config: JSON/YAML of the official arguments: SDM's training flags (``image_size``,
            ``num_channels``, ``attention_resolutions``, ``num_classes``, ``no_instance``, ``diffusion_steps``, ...);
            PIDM's model config (``config/diffconfig.py`` fields).
        out: The checkpoint to write.
        overwrite: Replace an existing ``out`` (and ``<out>.yaml``).
    """
    for option, path in (("weights", weights), ("official_config", official_config)):
        if not path.is_file():
            raise CommandError(f"--{option} {path} does not exist")
    config_path = out.with_suffix(".yaml")
    existing = [path for path in (out, config_path) if path.exists()]
    if existing and not overwrite:
        raise CommandError(f"{existing[0]} exists; pass --overwrite true to replace it")
    checkpoint = IMPORTERS[family](weights, official_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    config_path.write_text(yaml.safe_dump(model_config(checkpoint), sort_keys=False))
    print(f"wrote {out} and its model config {config_path}")
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    """Entry point; ``argv`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    parser = command_parser("python -m experiments.import_official", __doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_function_arguments(import_official, as_group=False)
    options = parse_args(parser, None if argv is None else list(argv))
    options.pop("config", None)
    return import_official(**options.as_dict())


if __name__ == "__main__":
    run_main(main)

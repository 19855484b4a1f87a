r"""Serve a local web page to sample a checkpoint: ``python -m experiments.demo --ckpt_path X.ckpt``.

SDM checkpoints get a label-map canvas (the dataset's palette and class names, test maps or a built-in layout,
upload/download of raw-id label PNGs, region inpainting); PIDM checkpoints get source/pose pickers, a joint editor,
guidance weights, appearance control, style interpolation and pose-sequence animation. The run's ``config.yaml``
beside ``checkpoints/`` says the dataset; the sampler and guidance start at the checkpoint's own settings.

Needs the optional extra: ``pip install -e ".[demo]"``. Open the printed address in a browser (docs/demo.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from experiments.checkpoint_checks import require_checkpoint_file
from experiments.errors import CommandError, parse_dataclass_options, run_main


@dataclass
class DemoOptions:
    """Which checkpoint to serve, and where.

    Args:
        ckpt_path: Checkpoint written by ``experiments.fit`` or ``experiments.import_official`` (SDM or PIDM).
        host: Address to listen on (127.0.0.1: this machine only; 0.0.0.0: the network).
        port: Port to listen on.
        accelerator: ``auto`` (a GPU when there is one), ``cpu`` or ``gpu``.
        num_examples: Test label maps / persons offered from the run's dataset when its files are reachable.
    """

    ckpt_path: Path
    host: str = "127.0.0.1"
    port: int = 7860
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    num_examples: int = 8


def build(options: DemoOptions):
    """Load the checkpoint and its run's data, and build the (not yet launched) app."""
    require_checkpoint_file(options.ckpt_path)
    if options.num_examples < 1:
        raise CommandError(f"--num_examples must be at least 1, got {options.num_examples}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from experiments.demo.app import build_app
    except ImportError as error:
        raise CommandError(f"the demo needs its optional dependencies ({error.name} is missing)",
                           'install them with: pip install -e ".[demo]"') from None
    from experiments.demo.pidm_backend import PIDMDemo
    from experiments.demo.run_config import load_run_datamodule
    from experiments.demo.sdm_backend import SDMDemo
    from experiments.predict import device_for
    from lightning_modules.checkpoint_loading import load_diffusion_module
    from lightning_modules.pidm import PIDMLitModule
    from lightning_modules.sdm import SDMLitModule

    model = load_diffusion_module(options.ckpt_path)
    datamodule, data_note = load_run_datamodule(options.ckpt_path)
    device = device_for(options.accelerator)
    if isinstance(model, SDMLitModule):
        demo = SDMDemo(model, datamodule, device, options.num_examples)
    elif isinstance(model, PIDMLitModule):
        demo = PIDMDemo(model, datamodule, device, options.num_examples)
    else:
        raise CommandError(f"{options.ckpt_path} holds a {type(model).__name__}; the demo serves SDM and PIDM models")
    return build_app(demo, options.ckpt_path, data_note)


def parse_options(argv: Sequence[str] | None = None) -> DemoOptions:
    """The options of a command line (``argv``; default ``sys.argv[1:]``)."""
    return parse_dataclass_options(DemoOptions, "python -m experiments.demo", __doc__, argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; ``argv`` are command-line style arguments (default: ``sys.argv[1:]``). Serves until stopped."""
    from experiments.demo.app import launch

    options = parse_options(argv)
    launch(build(options), options.host, options.port)


if __name__ == "__main__":
    run_main(main)

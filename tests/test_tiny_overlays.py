"""The smoke overlays configs/debug/tiny_*.yaml shrink every shipped experiment config, for fit and test alike.

The resolved configs come from ``--print_config`` (parsing only): EMA averages from step 0, the sample grids,
``sampling`` and ``test_sampling`` take the overlay's few steps, and no epoch cap is left to cut a longer
``--trainer.max_steps`` short. One PIDM run checks the last point and the EMA start on a real trainer.
"""

from pathlib import Path

import pytest
import torch
import yaml

from datamodules.persons import PersonsSpec, generate_persons
from experiments.cli import run_cli
from test_callback_configs import CONFIGS, printed_config
from test_configs import config_stack

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = {family: REPO / "configs" / "debug" / f"tiny_{family}.yaml"
            for family in ("sdm", "pidm", "refiner", "segmenter")}
# Every shipped config through experiments.fit, the diffusion ones (which have a test protocol) through .test too.
CASES = [(path, "fit") for path in CONFIGS] + [(path, "test") for path in CONFIGS if path.parent.name != "segmenter"]


@pytest.mark.parametrize("path, subcommand", CASES, ids=[f"{p.parent.name}/{p.name}-{c}" for p, c in CASES])
def test_the_overlay_shrinks_the_resolved_run(path, subcommand, capsys):
    overlay = OVERLAYS["refiner" if path.stem.endswith("_refiner") else path.parent.name]
    tiny = yaml.safe_load(overlay.read_text())
    config = printed_config(capsys, [*config_stack(path), overlay], subcommand=subcommand)
    assert config["trainer"]["max_epochs"] == -1  # no epoch cap: max_steps alone ends the run
    assert config["trainer"]["max_steps"] == tiny["trainer"]["max_steps"]
    if path.parent.name == "segmenter":
        assert config["ema"] is None and config["sample_grid"] is None
        return
    steps = tiny["sample_grid"]["init_args"]["steps"]
    model = config["model"]["init_args"]
    assert config["ema"]["class_path"] == "callbacks.ema.DelayedEMA"
    assert config["ema"]["init_args"]["update_starting_at_step"] == 0
    assert config["ema"]["init_args"]["update_starting_at_epoch"] is None
    assert config["sample_grid"]["init_args"]["steps"] == steps
    assert model["sampling"]["steps"] == model["test_sampling"]["steps"] == steps


@pytest.mark.slow
def test_a_tiny_pidm_run_longer_than_an_epoch_stops_at_max_steps(tmp_path):
    # The paper config caps training at 300 epochs; with the overlay, max_steps alone ends the run.
    steps_per_epoch, max_steps = 2, 3
    root = tmp_path / "data"
    generate_persons(root, PersonsSpec(seed=0, num_identities=3, poses_per_identity=2, test_fraction=0.3))
    cli = run_cli("fit", [
        "--config", str(REPO / "configs" / "pidm" / "deepfashion_256.yaml"), "--config", str(OVERLAYS["pidm"]),
        f"--data.init_args.root={root}", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.limit_train_batches={steps_per_epoch}",
        f"--trainer.max_steps={max_steps}",
    ])  # fmt: skip
    trainer = cli.trainer
    assert trainer.num_training_batches == steps_per_epoch  # the data has at least that many batches
    assert trainer.global_step == max_steps
    run = Path(trainer.log_dir)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == max_steps
    assert checkpoint["averaging_state"]["n_averaged"] == max_steps  # EMA updated at every step from step 0
    grids = sorted(png.name for png in (run / "images" / "val").iterdir())
    assert grids == ["samples_ddim4_gs-000002.png"]  # validation every 2 steps, grids in the overlay's 4 steps

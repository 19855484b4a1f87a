"""experiments.fit through LightningCLI: run directories, data-to-model links, config saving and resume."""

from pathlib import Path

import pytest
import torch
import yaml

from experiments.cli import run_cli
from experiments.fit import main as fit

REPO = Path(__file__).parents[1]


def tiny_shapes_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs/sdm/shapes.yaml"),
        "--config", str(REPO / "configs/debug/tiny_sdm.yaml"),
        f"--data.init_args.root={tmp_path / 'shapes'}",
        "--data.init_args.num_train=4", "--data.init_args.num_val=2", "--data.init_args.num_test=2",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        *extra,
    ]  # fmt: skip


def test_print_config_shows_the_merged_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit([*tiny_shapes_args(tmp_path), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lightning_modules.sdm.SDMLitModule"
    assert printed["model"]["init_args"]["network"]["model_channels"] == 8  # the tiny overlay won
    assert printed["trainer"]["max_steps"] == 4


@pytest.mark.slow
def test_fit_writes_a_run_directory_and_resumes_from_last_ckpt(tmp_path):
    fit(tiny_shapes_args(tmp_path, "--trainer.max_steps=2"))
    run = tmp_path / "runs" / "sdm_shapes" / "version_0"
    assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "images" / "val").iterdir()) == ["samples_ddim4_gs-000002.png"]
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["num_classes"] == 7 and hparams["instance_edges"] is True  # linked from the shapes data
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    # Resuming into the same directory keeps the first config and saves the new one next to it.
    first_config = (run / "config.yaml").read_text()
    fit(tiny_shapes_args(
        tmp_path, "--trainer.max_steps=4", "--trainer.logger.init_args.version=0",
        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    ))  # fmt: skip
    assert (run / "config.yaml").read_text() == first_config and (run / "config-1.yaml").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4

    # A plain re-run gets its own version directory.
    fit(tiny_shapes_args(tmp_path, "--trainer.max_steps=1"))
    assert (run.parent / "version_1" / "config.yaml").is_file()

    # The test command builds the model from the config and command line, not from the checkpoint's hparams.
    cli = run_cli("test", [
        *tiny_shapes_args(tmp_path, "--trainer.limit_test_batches=0", "--model.init_args.evaluation=null"),
        "--model.init_args.guidance.scale=3.0", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    ])  # fmt: skip
    assert cli.model.guidance.scale == 3.0

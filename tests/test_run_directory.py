"""A run that fails before writing anything worth keeping takes its run directory away again; anything else stays
(experiments/run_directory.py)."""

from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from experiments.run_directory import remove_if_failed_early


def failed_run(save_dir: Path, write: Callable[[TensorBoardLogger], object], version: int | None = None) -> Path:
    """A run of a fresh trainer that creates its run directory, calls ``write(logger)`` and fails."""
    logger = TensorBoardLogger(save_dir, name="sdm", version=version, default_hp_metric=False)
    trainer = pl.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="data root"), remove_if_failed_early(trainer):
        _ = logger.experiment  # what the trainer's setup does first: the directory and its event file
        (Path(logger.log_dir) / "config.yaml").write_text("trainer: {}\n")
        write(logger)
        logger.finalize("failed")
        raise RuntimeError("wrong data root")
    return Path(logger.log_dir)


def nothing(logger: TensorBoardLogger) -> None:
    pass


def write_file(name: str) -> Callable[[TensorBoardLogger], None]:
    def write(logger: TensorBoardLogger) -> None:
        path = Path(logger.log_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"data")

    return write


def test_a_run_that_wrote_only_its_start_files_leaves_nothing_behind(tmp_path):
    def start_files(logger: TensorBoardLogger) -> None:
        logger.log_hyperparams({"lr": 1.0})
        logger.log_metrics({"lr-AdamW": 1.0}, step=0)  # the learning rate of the first step

    run = failed_run(tmp_path / "runs", start_files)
    assert run.name == "version_0" and not (tmp_path / "runs").exists()  # the folders it created above, too


@pytest.mark.parametrize(
    "progress",
    [
        lambda logger: logger.log_metrics({"train/loss": 1.0}, step=3),
        write_file("checkpoints/last.ckpt"),
        write_file("images/val/samples.png"),
    ],
    ids=["a scalar after the first step", "a checkpoint", "an image"],
)
def test_a_run_that_wrote_anything_more_keeps_its_directory(tmp_path, progress):
    run = failed_run(tmp_path / "runs", progress)
    assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))


def test_a_directory_that_existed_before_the_run_is_never_touched(tmp_path):
    earlier = tmp_path / "runs/sdm/version_0"
    earlier.mkdir(parents=True)
    (earlier / "hparams.yaml").write_text("lr: 1.0\n")
    run = failed_run(tmp_path / "runs", nothing, version=0)  # a fixed version: the earlier run's directory
    assert run == earlier and (run / "hparams.yaml").read_text() == "lr: 1.0\n" and (run / "config.yaml").is_file()
    failed_run(tmp_path / "runs", nothing)  # the next version: removed, and the earlier run's still there
    assert [path.name for path in (tmp_path / "runs/sdm").iterdir()] == ["version_0"]


def test_a_run_that_succeeds_keeps_its_directory(tmp_path):
    logger = TensorBoardLogger(tmp_path / "runs", name="sdm")
    trainer = pl.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    with remove_if_failed_early(trainer):
        _ = logger.experiment
    assert Path(logger.log_dir).is_dir()

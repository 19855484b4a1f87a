"""Tiny SDM and PIDM runs as users have them after the quick start: a checkpoint under ``<run>/checkpoints/`` with
the run's ``config.yaml`` beside it and the dataset on disk."""

from pathlib import Path

import pytest

from experiments.fit import main as fit

REPO = Path(__file__).resolve().parents[2]


def tiny_run(root: Path, config: str, overlay: str, name: str, *data: str) -> Path:
    """Train ``config`` + ``overlay`` for one step under ``root``; returns its last.ckpt."""
    fit(["--config", str(REPO / config), "--config", str(REPO / overlay), f"--data.init_args.root={root / 'data'}",
         *data, f"--trainer.logger.init_args.save_dir={root / 'runs'}", "--trainer.max_steps=1"])
    return root / "runs" / name / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def sdm_run(tmp_path_factory) -> Path:
    """A 1-step 16x16 shapes SDM (7 classes, instance edges); its test split has 4 layouts."""
    return tiny_run(tmp_path_factory.mktemp("demo_sdm"), "configs/sdm/shapes.yaml", "configs/debug/tiny_sdm.yaml",
                    "sdm_shapes", "--data.init_args.num_train=4", "--data.init_args.num_val=2",
                    "--data.init_args.num_test=4")


@pytest.fixture(scope="session")
def pidm_run(tmp_path_factory) -> Path:
    """A 1-step tiny persons PIDM."""
    return tiny_run(tmp_path_factory.mktemp("demo_pidm"), "configs/pidm/persons.yaml",
                    "configs/debug/tiny_pidm.yaml", "pidm_persons", "--data.init_args.num_identities=4")

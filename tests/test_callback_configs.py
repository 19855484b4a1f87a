"""Every training config's callbacks are the shared ones of configs/callbacks/training.yaml plus its own, and a
diffusion config's EMA and sample grids are its top-level ``ema:`` and ``sample_grid:`` sections.

The resolved lists are read from ``--print_config`` (parsing only: no model, data or trainer is built).
"""

from pathlib import Path

import pytest
import yaml

import experiments.cli
from experiments.cli import run_cli
from test_configs import config_stack

REPO = Path(__file__).resolve().parents[1]
SHARED = [
    "pytorch_lightning.callbacks.LearningRateMonitor",
    "callbacks.step_seeding.StepSeeding",
    "callbacks.nonfinite_guard.NonFiniteLossGuard",
]
DIFFUSION = ["callbacks.last_step_checkpoint.LastStepCheckpoint"]
NAMED = {"ema": "callbacks.ema.DelayedEMA", "sample_grid": "callbacks.sample_grid.SampleGridLogger"}
SEGMENTER = ["callbacks.last_step_checkpoint.LastStepCheckpoint", "pytorch_lightning.callbacks.ModelCheckpoint"]
CFG_FINETUNE = "callbacks.cfg_finetune.CFGFineTune"
EXTRA = "pytorch_lightning.callbacks.ModelSummary"
CONFIGS = sorted(path for family in ("sdm", "pidm", "segmenter") for path in (REPO / "configs" / family).glob("*.yaml"))


def expected_classes(path: Path) -> list[str]:
    if path.parent.name == "segmenter":
        return SHARED + SEGMENTER
    return SHARED + DIFFUSION + ([CFG_FINETUNE] if path.stem == "shapes_cfg_finetune" else [])


def printed_config(capsys: pytest.CaptureFixture, configs: list[Path], *options: str, subcommand: str = "fit") -> dict:
    """The config ``--print_config`` shows for ``configs`` (merged in order) and command-line ``options``."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(subcommand, [*(arg for path in configs for arg in ("--config", str(path))), *options, "--print_config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def classes(config: dict) -> list[str]:
    return [callback["class_path"] for callback in config["trainer"]["callbacks"]]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_config_resolves_to_the_shared_callbacks_then_its_own_numbers(path, capsys):
    stack = config_stack(path)
    config = printed_config(capsys, stack)
    assert classes(config) == expected_classes(path)
    own = [entry for file in stack for entry in yaml.safe_load(file.read_text())["trainer"].get("callbacks+", [])]
    for entry, resolved in zip(own, config["trainer"]["callbacks"][len(SHARED) :], strict=True):
        assert resolved["class_path"] == entry["class_path"]
        assert resolved["init_args"].items() >= entry.get("init_args", {}).items()
    base = yaml.safe_load(stack[0].read_text())
    for section, class_path in NAMED.items():
        if path.parent.name == "segmenter":
            assert section not in base and config[section] is None
        else:
            assert base[section]["class_path"] == config[section]["class_path"] == class_path
            given = {}  # the section's values as the stack gives them, later files overriding earlier ones
            for file in stack:
                given.update((yaml.safe_load(file.read_text()).get(section) or {}).get("init_args", {}))
            assert config[section]["init_args"].items() >= given.items()


def test_a_change_to_the_shared_fragment_reaches_every_config(tmp_path, monkeypatch, capsys):
    fragment = yaml.safe_load((REPO / "configs" / "callbacks" / "training.yaml").read_text())
    fragment["trainer"]["callbacks"][-1]["init_args"]["max_consecutive"] = 9
    fragment["trainer"]["callbacks"].append({"class_path": EXTRA})
    shared = tmp_path / "training.yaml"
    shared.write_text(yaml.safe_dump(fragment))
    monkeypatch.setattr(experiments.cli, "SHARED_CALLBACKS", shared)
    for path in CONFIGS:
        config = printed_config(capsys, config_stack(path))
        assert classes(config) == [*SHARED, EXTRA, *expected_classes(path)[len(SHARED) :]], path
        assert config["trainer"]["callbacks"][len(SHARED) - 1]["init_args"] == {"max_consecutive": 9}, path


def test_a_saved_run_config_restates_the_list_instead_of_appending_again(tmp_path, capsys):
    stack = config_stack(REPO / "configs" / "sdm" / "shapes_cfg_finetune.yaml")
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(printed_config(capsys, stack)))
    assert classes(printed_config(capsys, [saved])) == expected_classes(stack[-1])


def test_a_command_line_callback_is_appended(capsys):
    config = printed_config(capsys, [REPO / "configs" / "sdm" / "shapes.yaml"], f"--trainer.callbacks+={EXTRA}")
    assert classes(config) == [*SHARED, *DIFFUSION, EXTRA]

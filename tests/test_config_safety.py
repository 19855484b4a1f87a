"""The CLI rejects unknown configuration keys, naming them, instead of silently ignoring a typo."""

from pathlib import Path

import pytest

from experiments.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
BASE = ["--config", str(REPO / "configs/sdm/shapes.yaml")]


def _parse_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", [*BASE, *args])
    assert exit_info.value.code != 0
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("trainer:\n  max_stepz: 3\n", "unknown option --trainer.max_stepz; did you mean --trainer.max_steps?"),
        ("model:\n  init_args:\n    num_res_blockz: 3\n",
         "unknown option --model.init_args.num_res_blockz (not an argument of lightning_modules.sdm.SDMLitModule); "
         "did you mean --model.init_args.network.num_res_blocks?"),
        ("data:\n  init_args:\n    batch_sise: 3\n", "unknown option --data.init_args.batch_sise"),
    ],
)
def test_unknown_yaml_keys_are_rejected_by_name(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "typo.yaml"
    config.write_text(yaml_text)
    assert message in _parse_error(["--config", str(config)], capsys)


def test_unknown_command_line_override_is_rejected_by_name(capsys):
    assert "did you mean --data.init_args.batch_size?" in _parse_error(["--data.init_args.batch_sise=3"], capsys)

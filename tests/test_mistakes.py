"""A user's mistake is one line and a hint, not a traceback (experiments/errors.py); a bug keeps its traceback; a run
that fails before it starts leaves no run directory behind and never touches another run's (run_directory.py)."""

import logging
import os
import shutil
import subprocess
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.bad_samples import BadSampleWarning
from datamodules.builtin_data import generate_once
from datamodules.seeds import derived_seed
from experiments.benchmark import main as benchmark_main
from experiments.errors import run_main
from experiments.fit import main as fit_main
from experiments.import_official import main as import_main
from experiments.predict import main as predict_main
from experiments.quiet import NOISE_WARNINGS, silence_third_party_noise
from experiments.test import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]
SHAPES = str(REPO / "configs/sdm/shapes.yaml")
TINY = str(REPO / "configs/debug/tiny_sdm.yaml")


def tiny_args(runs: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "--config", SHAPES, "--config", TINY, f"--data.init_args.root={data_root}",
        "--data.init_args.num_train=4", "--data.init_args.num_val=2", "--data.init_args.num_test=2",
        f"--trainer.logger.init_args.save_dir={runs}", *extra,
    ]  # fmt: skip


def report(capsys: pytest.CaptureFixture) -> list[str]:
    """The lines the command wrote to stderr."""
    return capsys.readouterr().err.strip().splitlines()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A workspace with generated shapes data and one finished tiny run (runs/sdm_shapes/version_0)."""
    workspace = tmp_path_factory.mktemp("trained")
    fit_main(tiny_args(workspace / "runs", workspace / "shapes", "--trainer.max_steps=1"))
    return workspace


def test_the_acceptance_check_a_mistyped_option_is_at_most_three_lines_naming_lr():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.fit", "--config", "configs/sdm/shapes.yaml", "--model.init_args.lrr",
         "1e-4"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2
    assert len(lines) <= 3, lines
    assert lines[0] == ("error: unknown option --model.init_args.lrr (not an argument of "
                        "lightning_modules.sdm.SDMLitModule); did you mean --model.init_args.lr?")
    assert "`python -m experiments.fit --model.help lightning_modules.sdm.SDMLitModule` lists" in lines[1]


@pytest.mark.parametrize(
    ("mistake", "first_line"),
    [
        (["--model.init_args.network.model_chanels", "4"],
         "unknown option --model.init_args.network.model_chanels (not an argument of "
         "lightning_modules.sdm.SDMLitModule); did you mean --model.init_args.network.model_channels?"),
        (["--trainer.max_stepz", "5"], "unknown option --trainer.max_stepz; did you mean --trainer.max_steps?"),
        (["--data.init_args.rooot", "x"],
         "unknown option --data.init_args.rooot (not an argument of datamodules.shapes.ShapesDataModule); "
         "did you mean --data.init_args.root?"),
        (["--trainer.logger.init_args.nme", "x"],
         "unknown option --trainer.logger.init_args.nme (not an argument of "
         "pytorch_lightning.loggers.TensorBoardLogger); did you mean --trainer.logger.init_args.name?"),
        (["--model.init_args.evaluation", '{"lpipz": null}'],
         "unknown option --model.init_args.evaluation.lpipz (not an argument of "
         "lightning_modules.metrics.EvaluationConfig); did you mean --model.init_args.evaluation.lpips?"),
        (["--model.init_args.lr", "abc"], "--model.init_args.lr: Expected a float. Got value: abc"),
        (["--config", str(REPO / "configs/sdm/shapez.yaml")],
         f"config file not found: {REPO}/configs/sdm/shapez.yaml; did you mean {REPO}/configs/sdm/shapes.yaml?"),
    ],
)  # fmt: skip
def test_a_command_line_mistake_is_one_line_and_a_hint(tmp_path, capsys, mistake, first_line):
    with pytest.raises(SystemExit) as exit_info:
        fit_main(tiny_args(tmp_path / "runs", tmp_path / "shapes", *mistake))
    assert exit_info.value.code == 2
    lines = report(capsys)
    assert lines[0] == f"error: {first_line}"
    assert len(lines) == 2 and lines[1].startswith("hint: ")
    assert lines[1].endswith("(CONDIFF_DEBUG=1 shows the details)")


@pytest.mark.parametrize(
    ("command", "mistake", "first_line"),
    [
        ("predict", ["--batch-size", "2"], "unknown option --batch-size; did you mean --batch_size?"),
        ("predict", ["--sampler", "ddmp"], "--sampler: ddmp is not one of ddpm, ddim, dpmpp_2m; did you mean ddpm?"),
        ("predict", ["--guidance.w_stlye", "2"], "unknown option --guidance.w_stlye; did you mean --guidance.w_style?"),
        ("predict", ["--num_sample", "2"], "unknown option --num_sample; did you mean --num_samples?"),
        ("import_official", ["--officialconfig", "flags.yaml"],
         "unknown option --officialconfig; did you mean --official_config?"),
        ("import_official", ["--family", "sdn"], "--family: sdn is not one of sdm, pidm; did you mean sdm?"),
        ("benchmark", ["--sample_step", "3"], "unknown option --sample_step; did you mean --sample_steps?"),
        ("benchmark", ["--model.init_args.network.model_chanels", "4"],
         "unknown option --model.init_args.network.model_chanels (not an argument of "
         "lightning_modules.sdm.SDMLitModule); did you mean --model.init_args.network.model_channels?"),
    ],
)  # fmt: skip
def test_every_command_reports_an_option_mistake_alike(tmp_path, capsys, command, mistake, first_line):
    arguments = {
        "predict": ["--ckpt_path", str(tmp_path / "x.ckpt"), "--out", str(tmp_path / "out")],
        "import_official": ["--family", "sdm", "--weights", "w.pt", "--official_config", "f.yaml", "--out", "x.ckpt"],
        "benchmark": ["--config", SHAPES, "--config", TINY],
    }[command]
    main = {"predict": predict_main, "import_official": import_main, "benchmark": benchmark_main}[command]
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, [*arguments, *mistake])
    assert exit_info.value.code == 2
    lines = report(capsys)
    assert lines == [f"error: {first_line}", lines[1]] and lines[1].startswith("hint: ")
    assert "--help" in lines[1] or "--model.help" in lines[1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["predict", "import_official"])
def test_a_required_option_left_out_is_named(capsys, command):
    main = {"predict": predict_main, "import_official": import_main}[command]
    with pytest.raises(SystemExit):
        run_main(main, ["--family", "sdm", "--weights", "w.pt", "--official_config", "f.yaml"]
                 if command == "import_official" else ["--ckpt_path", "x.ckpt"])
    assert report(capsys)[0] == "error: missing required option --out"


def test_predict_checks_its_files_and_options_before_loading_the_checkpoint(trained, tmp_path, capsys):
    checkpoint = trained / "runs/sdm_shapes/version_0/checkpoints/last.ckpt"
    out = tmp_path / "out"
    cases = [
        (["--ckpt_path", str(tmp_path / "nope.ckpt"), "--labels", "x"],
         f"error: --ckpt_path {tmp_path / 'nope.ckpt'}: no such checkpoint file"),
        (["--ckpt_path", str(checkpoint), "--labels", str(tmp_path / "labelz")],
         f"error: --labels {tmp_path / 'labelz'} does not exist"),
        (["--ckpt_path", str(checkpoint), "--labels", "x", "--steps", "0"], "error: --steps must be at least 1, got 0"),
        (["--ckpt_path", str(checkpoint), "--source", str(checkpoint), "--poses", str(checkpoint)],
         f"error: --source, --poses are options of PIDM (pose-guided persons) models, but {checkpoint} holds a "
         "SDMLitModule"),
    ]  # fmt: skip
    for arguments, first_line in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_main(predict_main, [*arguments, "--out", str(out)])
        assert exit_info.value.code == 1
        assert report(capsys)[0] == first_line
    assert not out.exists()


def test_import_official_names_a_missing_weights_file(tmp_path, capsys):
    flags = tmp_path / "flags.yaml"
    flags.write_text("image_size: 32\n")
    with pytest.raises(SystemExit):
        run_main(import_main, ["--family", "sdm", "--weights", str(tmp_path / "ema.pt"), "--official_config",
                               str(flags), "--out", str(tmp_path / "x.ckpt")])
    assert report(capsys)[0] == f"error: --weights {tmp_path / 'ema.pt'} does not exist"
    assert not (tmp_path / "x.ckpt").exists()


def test_condiff_debug_shows_jsonargparse_s_full_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDIFF_DEBUG", "1")
    with pytest.raises(ArgumentError, match="Option 'lrr' is not accepted"):
        run_main(fit_main, tiny_args(tmp_path / "runs", tmp_path / "shapes", "--model.init_args.lrr", "1e-4"))


def test_a_missing_data_root_is_named_and_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    earlier = runs / "sdm_ade20k" / "version_0"  # another run's directory, holding only start-of-run files
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("trainer: {}\n")
    before = snapshot(runs)
    root = tmp_path / "no_such_root"
    args = ["--config", str(REPO / "configs/sdm/ade20k.yaml"), "--config", TINY, f"--data.init_args.root={root}",
            f"--trainer.logger.init_args.save_dir={runs}"]
    with pytest.raises(SystemExit) as exit_info:
        run_main(fit_main, args)
    assert exit_info.value.code == 1
    assert report(capsys) == [
        f"error: dataset folder not found: {root}/ADEChallengeData2016/images/training",
        "hint: Is the dataset location right (--data.init_args.root)? (CONDIFF_DEBUG=1 shows the details)",
    ]
    assert snapshot(runs) == before and sorted(os.listdir(runs / "sdm_ade20k")) == ["version_0"]

    monkeypatch.setenv("CONDIFF_DEBUG", "1")
    with pytest.raises(FileNotFoundError):  # the traceback, and still no directory left
        run_main(fit_main, args)
    assert snapshot(runs) == before and sorted(os.listdir(runs / "sdm_ade20k")) == ["version_0"]


def test_generating_a_builtin_dataset_says_where(tmp_path, caplog):
    root = tmp_path / "data" / "shapez"  # a mistyped root gets a new dataset, and the user sees where
    manifest = {"generator": 1}
    with caplog.at_level(logging.INFO):
        assert generate_once(root, manifest, lambda folder: (folder / "a.png").write_bytes(b"png"), "shapes")
        assert not generate_once(root, manifest, lambda folder: None, "shapes")  # reused: nothing to say
    assert caplog.messages == [f"Generating the built-in shapes dataset into {root} (first use of this root; later "
                               "runs reuse it)"]


def test_a_builtin_root_holding_something_else_is_named(tmp_path, capsys):
    root = tmp_path / "my_photos"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"not a dataset")
    with pytest.raises(SystemExit):
        run_main(fit_main, tiny_args(tmp_path / "runs", root))
    assert report(capsys)[0] == (f"error: {root} is not empty and not a shapes dataset (no manifest.json); "
                                 "pick another root")
    assert (root / "holiday.jpg").read_bytes() == b"not a dataset" and not (tmp_path / "runs").exists()


def test_a_checkpoint_of_the_other_family_is_named_for_fit_and_test(trained, tmp_path, capsys):
    checkpoint = tmp_path / "pidm.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "lightning_modules.pidm.PIDMLitModule"}, "state_dict": {}},
               checkpoint)
    for main in (fit_main, evaluate_main):
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, tiny_args(tmp_path / "runs", trained / "shapes", f"--ckpt_path={checkpoint}"))
        assert exit_info.value.code == 1
        lines = report(capsys)
        assert lines[0] == (f"error: --ckpt_path {checkpoint} is a checkpoint of lightning_modules.pidm.PIDMLitModule, "
                            "but the config builds lightning_modules.sdm.SDMLitModule")
        assert lines[1].startswith("hint: give the config the checkpoint was trained with") and len(lines) == 2
    assert not (tmp_path / "runs").exists()


def test_a_missing_checkpoint_file_is_named(trained, tmp_path, capsys):
    missing = tmp_path / "runs/sdm_shapes/version_7/checkpoints/last.ckpt"
    with pytest.raises(SystemExit):
        run_main(evaluate_main, tiny_args(tmp_path / "runs", trained / "shapes", f"--ckpt_path={missing}"))
    assert report(capsys)[0] == f"error: --ckpt_path {missing}: no such checkpoint file"
    assert not (tmp_path / "runs").exists()


def test_a_label_id_out_of_range_is_one_line_naming_the_file(trained, tmp_path, capsys):
    data = tmp_path / "shapes"
    shutil.copytree(trained / "shapes", data)
    label = sorted((data / "annotations/training").glob("*.png"))[0]
    values = np.array(Image.open(label))
    values[0, 0] = 200
    Image.fromarray(values).save(label)
    # A DataLoader worker process: torch re-raises the error with the worker's traceback inside its message.
    with pytest.raises(SystemExit):
        run_main(fit_main, tiny_args(tmp_path / "runs", data, "--data.init_args.num_workers=1"))
    lines = report(capsys)
    assert len(lines) == 2 and lines[0].startswith("error: bad sample ")
    assert f"label {label} contains class 199 after remapping; valid classes are 0..6" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_missing_weights_file_says_where_to_put_it_and_how_to_skip_the_metric(trained, monkeypatch, capsys):
    monkeypatch.setenv("CONDIFF_OFFLINE", "1")
    monkeypatch.setenv("CONDIFF_WEIGHTS", str(trained / "no_weights"))
    monkeypatch.setenv("TORCH_HOME", str(trained / "no_torch_home"))
    runs = trained / "runs"
    before = snapshot(runs)
    checkpoint = runs / "sdm_shapes/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit):
        run_main(evaluate_main, tiny_args(runs, trained / "shapes", f"--ckpt_path={checkpoint}",
                                          '--model.init_args.evaluation={"miou": null}',
                                          f"--model.init_args.evaluation.fid.stats_dir={trained / 'stats'}"))
    error, hint = report(capsys)
    assert error.startswith("error: Missing weights file 'alexnet-owt-7be5be79.pth' (LPIPS AlexNet backbone")
    assert f"put it at {trained / 'no_weights' / 'alexnet-owt-7be5be79.pth'}" in hint
    assert "or test without lpips: --model.init_args.evaluation='{\"lpips\": null}'." in hint
    # The failed test run's directory (version_1) is gone; the trained run's is as it was.
    assert snapshot(runs) == before and os.listdir(runs / "sdm_shapes") == ["version_0"]


def test_a_bug_keeps_its_traceback_while_condiff_s_own_checks_are_one_line(capsys):
    def broken(argv):
        return {}["missing key"]

    def third_party_value_error(argv):
        return int("not a number")  # raised inside Python, not by a condiff check

    with pytest.raises(KeyError):
        run_main(broken)
    with pytest.raises(ValueError):
        run_main(third_party_value_error)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda argv: derived_seed(-1))  # datamodules.seeds checks its keys
    assert exit_info.value.code == 1
    assert report(capsys)[0].startswith("error: seed keys must be one or more integers")


def test_only_the_named_third_party_warnings_are_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        for message, category, module in [
            ("'set_vital' is deprecated, please do not call", UserWarning,
             "torchdata.stateful_dataloader.stateful_dataloader"),
            ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
             "treespec.is_leaf()` instead.", FutureWarning, "pytorch_lightning.utilities._pytree"),
            ("The dirpath has changed from '/a/version_0/checkpoints' to '/a/version_1/checkpoints', therefore "
             "`best_model_score`, `kth_best_model_path` ... will not be reloaded.", UserWarning,
             "pytorch_lightning.callbacks.model_checkpoint"),
        ]:  # fmt: skip
            warnings.warn_explicit(message, category, "third_party.py", 1, module=module)
        assert caught == []
        # The same text from another package, and condiff's own warnings, still show.
        warnings.warn_explicit("'set_vital' is deprecated", UserWarning, "loaders.py", 1, module="datamodules.loaders")
        warnings.warn("bad sample 3 skipped", BadSampleWarning)
    assert [type(w.message) for w in caught] == [UserWarning, BadSampleWarning]
    assert len(NOISE_WARNINGS) == len({message for message, _, _ in NOISE_WARNINGS})


def test_lightning_tips_are_dropped_and_its_other_messages_kept(caplog):
    silence_third_party_noise()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level("INFO", logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        logger.info("GPU available: False, used: False")
    assert caplog.messages == ["GPU available: False, used: False"]

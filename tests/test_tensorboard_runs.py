"""What TensorBoard shows of a run: a resumed run goes on in its own directory with one curve per tag
(experiments/resume.py), and training and test runs both appear in the HParams view
(lightning_modules/hparams_logging.py)."""

import os
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from experiments.fit import main as fit_main
from experiments.test import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]


def tiny_args(workspace: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs/sdm/shapes.yaml"), "--config", str(REPO / "configs/debug/tiny_sdm.yaml"),
        f"--data.init_args.root={workspace / 'shapes'}", "--data.init_args.num_train=4",
        "--data.init_args.num_val=2", "--data.init_args.num_test=2",
        f"--trainer.logger.init_args.save_dir={workspace / 'runs'}", *extra,
    ]  # fmt: skip


def events(run: Path) -> list:
    """Every event of every event file in ``run``, in file order."""
    return [event for path in sorted(run.glob("events.out.tfevents.*")) for event in EventFileLoader(str(path)).Load()]


def hparams_summaries(run: Path) -> dict[str, list]:
    """The HParams plugin data of ``run`` by tag (``_hparams_/session_start_info``, ``_hparams_/experiment``)."""
    found: dict[str, list] = {}
    for event in events(run):
        for value in event.summary.value:
            if value.tag.startswith("_hparams_/"):
                content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                found.setdefault(value.tag, []).append(content)
    return found


def test_a_resumed_run_continues_its_directory_with_one_curve_per_tag(tmp_path):
    run = tmp_path / "runs/sdm_shapes/version_0"
    fit_main(tiny_args(tmp_path, "--trainer.max_steps=2"))
    step_2 = (run / "checkpoints/last.ckpt").read_bytes()
    fit_main(tiny_args(tmp_path, "--trainer.max_steps=4", "--ckpt_path=last"))
    curve = {event.step: event.value for event in EventAccumulator(str(run)).Reload().Scalars("train/loss")}
    # Killed after logging steps 3 and 4 but before checkpointing them: the restart goes back to step 2.
    (run / "checkpoints/last.ckpt").write_bytes(step_2)
    fit_main(tiny_args(tmp_path, "--trainer.max_steps=4", "--ckpt_path=last"))

    assert os.listdir(run.parent) == ["version_0"]
    assert {"config.yaml", "config-1.yaml", "config-2.yaml"} <= set(os.listdir(run))
    logged = [value.tag for event in events(run) for value in event.summary.value]
    assert logged.count("train/loss") > len(curve)  # the restart logged some steps again ...
    replayed = EventAccumulator(str(run)).Reload().Scalars("train/loss")
    assert [event.step for event in replayed] == sorted(curve)  # ... and TensorBoard shows each step once
    assert {event.step: event.value for event in replayed} == curve  # an exact resume repeats the same losses


def test_training_and_test_runs_both_appear_in_the_hparams_view(tmp_path):
    fit_main(tiny_args(tmp_path, "--trainer.max_steps=2"))
    train_run = tmp_path / "runs/sdm_shapes/version_0"
    evaluate_main(tiny_args(
        tmp_path, f"--ckpt_path={train_run / 'checkpoints/last.ckpt'}",
        '--model.init_args.evaluation={"lpips": null, "miou": null}',
        f"--model.init_args.evaluation.fid.stats_dir={tmp_path / 'stats'}",
    ))  # fmt: skip
    test_run = tmp_path / "runs/sdm_shapes/version_1"

    # Sessions only: an experiment summary would decide the view's columns for the whole log directory.
    train_view, test_view = hparams_summaries(train_run), hparams_summaries(test_run)
    assert set(train_view) == set(test_view) == {"_hparams_/session_start_info"}
    train_hparams = train_view["_hparams_/session_start_info"][0].session_start_info.hparams
    assert train_hparams["model"].string_value == "SDMLitModule"
    assert train_hparams["lr"].number_value == 3e-4 and train_hparams["network/model_channels"].number_value == 8
    test_hparams = test_view["_hparams_/session_start_info"][0].session_start_info.hparams
    assert test_hparams["checkpoint"].string_value.endswith("version_0/checkpoints/last.ckpt")
    assert {"test_sampling/sampler", "test_sampling/steps", "num_samples"} <= set(test_hparams)
    # The metrics TensorBoard puts next to them: each run's scalars.
    assert "val/loss" in EventAccumulator(str(train_run)).Reload().Tags()["scalars"]
    assert "hp/fid" in EventAccumulator(str(test_run)).Reload().Tags()["scalars"]


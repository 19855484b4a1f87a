"""Exact resume: a SIGKILLed SDM run restarted with ``--ckpt_path last`` repeats the uninterrupted run step for step,
with random augmentations on, from a mid-epoch checkpoint and from one taken at an epoch's last batch."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.fit import main as fit_main
from experiments.resume import resolve_last_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 3
CHECKPOINT_EVERY = 2  # checkpoints at steps 2 and 4 fall mid-epoch, step 6 ends an epoch
MAX_STEPS = 10

RESUME_CONFIG = """\
seed_everything: 0
trainer:
  deterministic: true
  max_epochs: -1
  limit_train_batches: {steps_per_epoch}
  limit_val_batches: 0
  logger:
    class_path: pytorch_lightning.loggers.TensorBoardLogger
    init_args:
      save_dir: {save_dir}
      name: sdm
  plugins:
    - class_path: experiments.checkpoint_io.AtomicCheckpointIO
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args:
        save_last: true
        every_n_train_steps: {checkpoint_every}
        save_top_k: -1
    - class_path: callbacks.step_seeding.StepSeeding
    - class_path: callbacks.nonfinite_guard.NonFiniteLossGuard
ema:
  init_args:
    decay: 0.9
model:
  init_args:
    num_timesteps: 50
    timestep_sampler: loss-second-moment
    condition_drop_prob: 0.3
    network:
      dropout: 0.1
data:
  init_args:
    root: {data_root}
    num_train: 16
    num_val: 2
    num_test: 2
    batch_size: 2
    train_transform: random_resized_crop
    flip: true
    num_workers: 0
    persistent_workers: false
"""


def _write_config(directory: Path, data_root: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "resume.yaml"
    path.write_text(
        RESUME_CONFIG.format(
            steps_per_epoch=STEPS_PER_EPOCH,
            checkpoint_every=CHECKPOINT_EVERY,
            save_dir=directory / "runs",
            data_root=data_root,
        )
    )
    return path


def _args(config: Path, max_steps: int, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs/sdm/shapes.yaml"),
        "--config", str(REPO / "configs/debug/tiny_sdm.yaml"),
        "--config", str(config),
        f"--trainer.max_steps={max_steps}",
        *extra,
    ]


def _losses(version_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(version_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def _kill_after_first_checkpoint(config: Path, checkpoints: Path) -> None:
    # A long run, SIGKILLed as soon as its first last.ckpt exists (written atomically), at step 2 or 4: mid-epoch.
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.fit", *_args(config, 1000)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 240
        while not (checkpoints / "last.ckpt").is_file():
            if process.poll() is not None:
                pytest.fail(f"training exited early:\n{process.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint written within 240 s")
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _assert_same_state(a: object, b: object, where: str = "checkpoint") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_sigkill_then_ckpt_path_last_repeats_the_uninterrupted_run(tmp_path):
    data_root = tmp_path / "shapes"
    straight_config = _write_config(tmp_path / "straight", data_root)
    fit_main(_args(straight_config, MAX_STEPS))
    straight_dir = tmp_path / "straight/runs/sdm/version_0"
    straight = _losses(straight_dir)
    assert sorted(straight) == list(range(MAX_STEPS))

    killed_config = _write_config(tmp_path / "killed", data_root)
    killed_dir = tmp_path / "killed/runs/sdm/version_0"
    _kill_after_first_checkpoint(killed_config, killed_dir / "checkpoints")
    killed_state = torch.load(killed_dir / "checkpoints/last.ckpt", weights_only=True)
    resumed_from = killed_state["global_step"]
    assert resumed_from % STEPS_PER_EPOCH != 0 and 0 < resumed_from < MAX_STEPS
    # The data loader's position (StatefulDataLoader: sampler epoch and samples handed out) is in the checkpoint.
    (loader_state,) = killed_state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["_index_sampler_state"] is not None or loader_state["_sampler_iter_state"] is not None

    fit_main(_args(killed_config, MAX_STEPS, "--ckpt_path=last"))
    # The resumed run goes on in the killed run's directory, and TensorBoard shows one curve: the killed run's steps
    # before the checkpoint (those its writer had flushed), then the resumed run's, each step once.
    resumed_dir = killed_dir
    assert os.listdir(resumed_dir.parent) == ["version_0"]
    steps = [event.step for event in EventAccumulator(str(resumed_dir)).Reload().Scalars("train/loss")]
    assert steps == sorted(set(steps)) and [step for step in steps if step >= resumed_from] == list(
        range(resumed_from, MAX_STEPS)
    )
    resumed = _losses(resumed_dir)
    assert resumed == {step: straight[step] for step in resumed}

    # Weights, EMA weights, optimizer and LR schedule, loop counters and timestep-sampler history all agree.
    final_straight = torch.load(straight_dir / "checkpoints/last.ckpt", weights_only=True)
    final_resumed = torch.load(resumed_dir / "checkpoints/last.ckpt", weights_only=True)
    assert final_resumed["global_step"] == MAX_STEPS
    for key in ("state_dict", "current_model_state", "optimizer_states", "lr_schedulers", "timestep_sampler"):
        _assert_same_state(final_straight[key], final_resumed[key], key)
    guard = "NonFiniteLossGuard"
    assert final_resumed["callbacks"][guard] == final_straight["callbacks"][guard] == {
        "skipped_steps": 0, "consecutive": 0
    }

    # From the checkpoint at the last batch of epoch 1, training goes on with epoch 2 exactly as it did.
    epoch_end = straight_dir / f"checkpoints/epoch=1-step={2 * STEPS_PER_EPOCH}.ckpt"
    fit_main(_args(straight_config, MAX_STEPS, f"--ckpt_path={epoch_end}"))
    from_epoch_end = _losses(tmp_path / "straight/runs/sdm/version_1")
    assert sorted(from_epoch_end) == list(range(2 * STEPS_PER_EPOCH, MAX_STEPS))
    assert from_epoch_end == {step: straight[step] for step in from_epoch_end}


def test_last_resolves_across_versions_and_slurm_checkpoints(tmp_path):
    trainer = pl.Trainer(
        default_root_dir=tmp_path / "job", logger=TensorBoardLogger(tmp_path / "runs", name="sdm"), accelerator="cpu"
    )
    assert resolve_last_checkpoint(trainer, "last") == "last"  # first run: Lightning warns and starts afresh
    assert resolve_last_checkpoint(trainer, "some.ckpt") == "some.ckpt"
    assert resolve_last_checkpoint(trainer, None) is None

    files = [
        tmp_path / "runs/sdm/version_0/checkpoints/last.ckpt",
        tmp_path / "runs/sdm/version_1/checkpoints/last.ckpt",
        tmp_path / "job/hpc_ckpt_1.ckpt",
        tmp_path / "runs/sdm/version_1/checkpoints/epoch=0-step=4.ckpt",
    ]
    for age, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, ns=(age * 10**9, age * 10**9))
    # The newest "last" or preemption checkpoint wins; periodic checkpoints are not "last".
    assert resolve_last_checkpoint(trainer, "last") == str(files[2])
    os.utime(files[0], ns=(10**10, 10**10))
    assert resolve_last_checkpoint(trainer, "last") == str(files[0])

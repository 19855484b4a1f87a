"""DDP on CPU: 2-process ``ddp_spawn`` in pytest and the real ``ddp`` launcher through ``experiments.fit``/``test``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanSquaredError

from callbacks.nonfinite_guard import NonFiniteLossGuard
from callbacks.process_group import LeaveProcessGroupAtExit
from offline_weights import write_lpips_alexnet, write_shapes_segmenter

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 16


class IndexedRegression(Dataset):
    """Deterministic (x, y) pairs that also report their index, to check how ranks shard the data."""

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {"x": torch.randn(4, generator=generator), "y": torch.randn(1, generator=generator), "index": index}


class ShardRecorder(pl.LightningModule):
    """Linear regressor that records which samples each rank trained on and measures a synced validation MSE."""

    def __init__(self, record_dir: str) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.val_mse = MeanSquaredError()
        self.record_dir = record_dir
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen += batch["index"].tolist()
        return (self.layer(batch["x"]) - batch["y"]).pow(2).mean()

    def on_train_end(self) -> None:
        path = Path(self.record_dir) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps({"seen": self.seen, "world_size": self.trainer.world_size}))

    def validation_step(self, batch, batch_idx):
        self.val_mse.update(self.layer(batch["x"]), batch["y"])
        self.log("val/mse", self.val_mse, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _loader(shuffle: bool) -> DataLoader:
    return DataLoader(IndexedRegression(), batch_size=2, shuffle=shuffle)


@pytest.mark.slow
def test_ddp_spawn_shards_data_and_syncs_metrics(tmp_path):
    torch.manual_seed(0)
    model = ShardRecorder(str(tmp_path))
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    # Guard included: its host-side decision must not desynchronise the ranks. The ranks leave their gloo group at
    # exit as the CLI's runs do (callbacks.process_group).
    trainer = _trainer(tmp_path, strategy="ddp_spawn", devices=2, max_epochs=1,
                       callbacks=[NonFiniteLossGuard(), LeaveProcessGroupAtExit()])
    trainer.fit(model, train_dataloaders=_loader(shuffle=True), val_dataloaders=_loader(shuffle=False))
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(record["world_size"] == 2 for record in records)
    seen = [set(record["seen"]) for record in records]
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(NUM_SAMPLES))

    # The trained weights and the logged metrics come back to this process; the validation MSE over 2 ranks
    # (each saw half the samples) equals the one-process value and the direct computation.
    trained = model.state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    spawned_mse = float(trainer.callback_metrics["val/mse"])
    # A fresh module with the returned weights (the returned one's metric objects are not reset by the spawn).
    reloaded = ShardRecorder(str(tmp_path))
    reloaded.load_state_dict(trained)
    single = _trainer(tmp_path, devices=1).validate(reloaded, _loader(shuffle=False), verbose=False)
    with torch.no_grad():
        x = torch.stack([IndexedRegression()[i]["x"] for i in range(NUM_SAMPLES)])
        y = torch.stack([IndexedRegression()[i]["y"] for i in range(NUM_SAMPLES)])
        direct = float((model.layer(x) - y).pow(2).mean())
    assert spawned_mse == pytest.approx(single[0]["val/mse"], rel=1e-6)
    assert single[0]["val/mse"] == pytest.approx(direct, rel=1e-6)


def run_under_timeout(stage: str, command: list[str], env: dict[str, str], timeout: int) -> str:
    """Run ``command`` in its own process group; a hang (no exit within ``timeout`` s) fails naming ``stage``."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher's rank-1 process too
        output, _ = process.communicate()
        pytest.fail(f"{stage} did not finish within {timeout} s (a rank waits in a collective?); "
                    f"last output:\n{output[-3000:]}")
    assert process.returncode == 0, f"{stage} failed:\n{output[-4000:]}"
    return output


@pytest.mark.slow
def test_fit_and_test_commands_run_under_the_ddp_launcher(tmp_path):
    """The shipped shapes config as users run it on 2 processes: validation with the grid logger, EMA, checkpoints,
    then the test command with FID, LPIPS and mIoU. Lightning's "ddp" re-launches ``python -m experiments.<cmd>``
    for rank 1; DDP runs with find_unused_parameters=False, so a parameter without gradient would fail step 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "CONDIFF_OFFLINE": "1",
           "CONDIFF_WEIGHTS": str(tmp_path / "weights"), "TORCH_HOME": str(tmp_path / "torch_home")}
    write_lpips_alexnet(tmp_path / "weights")
    segmenter = write_shapes_segmenter(tmp_path / "segmenter.ckpt")
    common = [
        "--config", "configs/sdm/shapes.yaml", "--config", "configs/debug/tiny_sdm.yaml",
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--data.init_args.root={tmp_path / 'shapes'}",
        "--data.init_args.num_train=8", "--data.init_args.num_val=4", "--data.init_args.num_test=5",
        "--data.init_args.persistent_workers=false",
    ]  # fmt: skip
    fit_output = run_under_timeout("experiments.fit under DDP (2 CPU processes)",
                                   [sys.executable, "-m", "experiments.fit", *common], env, timeout=300)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in fit_output
    run = tmp_path / "runs/sdm_shapes/version_0"
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4 and "current_model_state" in checkpoint  # EMA and raw weights
    # Validation ran at steps 2 and 4 (tiny overlay), each logging one grid on rank zero.
    assert sorted(p.name for p in (run / "images/val").iterdir()) == [
        "samples_ddim4_gs-000002.png", "samples_ddim4_gs-000004.png"]
    assert not (tmp_path / "runs/sdm_shapes/version_1").exists()

    test_output = run_under_timeout("experiments.test under DDP (2 CPU processes)", [
        sys.executable, "-m", "experiments.test", *common, f"--ckpt_path={run / 'checkpoints/last.ckpt'}",
        "--trainer.limit_test_batches=1.0", "--model.init_args.test_sampling.steps=2",
        "--model.init_args.evaluation.lpips.num_samples=2",
        f"--model.init_args.evaluation.fid.stats_dir={tmp_path / 'fid_stats'}",
        f"--model.init_args.evaluation.miou.segmenter={segmenter}",
    ], env, timeout=300)  # fmt: skip
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in test_output
    report = json.loads((tmp_path / "runs/sdm_shapes/version_1/test/metrics.json").read_text())
    assert report["num_samples"] == 5 and set(report["metrics"]) == {"fid", "lpips", "miou"}
    assert len(list((tmp_path / "runs/sdm_shapes/version_1/test/generated").iterdir())) == 5 * 2


def test_a_rank_leaves_its_gloo_group_when_it_exits(tmp_path):
    """Lightning destroys only NCCL groups at exit; LeaveProcessGroupAtExit (every CLI run has it) destroys a gloo
    group too, before the interpreter's teardown could abort in gloo's destructor. atexit runs last-in first-out, so
    a handler registered before the callback's setup sees the state the callback left."""
    script = f"""
import atexit, torch
from callbacks.process_group import LeaveProcessGroupAtExit
torch.distributed.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
atexit.register(lambda: print("group alive at exit:", torch.distributed.is_initialized(), flush=True))
callback = LeaveProcessGroupAtExit()
callback.setup(None, None, "fit")
callback.setup(None, None, "test")  # a second run in the process registers nothing more
print("group alive after setup:", torch.distributed.is_initialized(), flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    output = run_under_timeout("a one-rank gloo group", [sys.executable, "-c", script], env, timeout=120)
    assert output.splitlines()[-2:] == ["group alive after setup: True", "group alive at exit: False"]

"""The CUDA paths: mixed-precision training, torch.compile, channels_last, guided sampling and NCCL DDP.

Marked ``gpu`` and skipped (with the reason) where no CUDA device is present, e.g. in CI; run them with
``experiments/gpu_selfcheck.sh`` or ``pytest -m gpu -rs``. Tiny networks, a few steps each.
"""

import os
import sys

import pytest
import pytorch_lightning as pl
import torch
from test_ddp import REPO, run_under_timeout
from test_pidm_module import person_batch, tiny_module
from test_sdm_module import random_batches, tiny_sdm
from torch.utils.data import DataLoader

from lightning_modules.base import SamplerSettings
from lightning_modules.pidm import PoseStyleGuidance
from lightning_modules.sdm import ClassifierFreeGuidance

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]


def tiny(family: str, **options) -> tuple[pl.LightningModule, list[dict]]:
    if family == "sdm":
        return tiny_sdm(**options), random_batches(2)
    return tiny_module(**options).train(), [person_batch(), person_batch()]


def fit_on_gpu(module: pl.LightningModule, batches: list[dict], **trainer_options) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="gpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **trainer_options)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return trainer


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("family", ["sdm", "pidm"])
def test_mixed_precision_training_steps(family, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bfloat16")
    module, batches = tiny(family)
    trainer = fit_on_gpu(module, batches, precision=precision)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and float(metrics["train/vb"]) > 0
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in module.parameters())


@pytest.mark.parametrize("family", ["sdm", "pidm"])
def test_compiled_network_trains(family):
    module, batches = tiny(family, compile_network=True)
    trainer = fit_on_gpu(module, batches, precision="bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert hasattr(module.net, "_compiled_call_impl") and module.net._compiled_call_impl is not None


def test_channels_last_trains_with_channels_last_weights():
    module, batches = tiny("sdm", channels_last=True)
    fit_on_gpu(module, batches)
    conv_weights = [p for p in module.net.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m"])
@pytest.mark.parametrize("family", ["sdm", "pidm"])
def test_guided_sampling_on_cuda_matches_the_cpu(family, sampler, monkeypatch):
    # TF32 convolutions would differ from the CPU by ~1e-3 relative; the comparison is of the code path.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    if family == "sdm":
        module, batch = tiny_sdm(guidance=ClassifierFreeGuidance(1.5)).eval(), random_batches(1, batch_size=2)[0]
        for parameter in module.net.parameters():
            torch.nn.init.normal_(parameter, std=0.2)
    else:
        module, batch = tiny_module(guidance=PoseStyleGuidance("disentangled")).eval(), person_batch()
    sampling = SamplerSettings(sampler=sampler, steps=5)
    x_T = torch.randn(2, 3, *batch[next(k for k in ("image", "target") if k in batch)].shape[-2:],
                      generator=torch.Generator().manual_seed(0))

    def sample(device: str) -> torch.Tensor:
        model = module.to(device)
        generator = torch.Generator(device).manual_seed(1)
        return model.generate_batch(batch, sampling=sampling, generator=generator, x_T=x_T.to(device)).cpu()

    cuda = sample("cuda")
    cpu = sample("cpu")
    if sampler == "ddpm":  # the per-step noise comes from a CUDA generator: another stream than the CPU's
        assert torch.isfinite(cuda).all() and cuda.abs().max() <= 1
    else:
        torch.testing.assert_close(cuda, cpu, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two CUDA devices")
def test_fit_runs_under_nccl_ddp_on_two_gpus(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    output = run_under_timeout("experiments.fit under NCCL DDP (2 GPUs)", [
        sys.executable, "-m", "experiments.fit", "--config", "configs/sdm/shapes.yaml",
        "--config", "configs/debug/tiny_sdm.yaml", "--trainer.strategy=ddp", "--trainer.devices=2",
        "--trainer.accelerator=gpu", "--trainer.precision=bf16-mixed",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--data.init_args.root={tmp_path / 'shapes'}",
        "--data.init_args.num_train=8", "--data.init_args.num_val=4", "--data.init_args.num_test=4",
    ], env, timeout=300)  # fmt: skip
    assert "distributed_backend=nccl" in output
    checkpoint = torch.load(tmp_path / "runs/sdm_shapes/version_0/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4

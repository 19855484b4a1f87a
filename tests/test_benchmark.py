"""The benchmark's baseline is the same model as the optimised network, and its report has the promised shape."""


import pytest
import torch

from experiments.benchmark import (
    Settings,
    benchmark,
    compile_skip_reason,
    main,
    parse_sample_steps,
    peak_flops,
)
from experiments.benchmark_baseline import (
    EinsumCrossAttention,
    EinsumSelfAttention,
    naive_copy,
    sequential_guided_denoiser,
)
from experiments.benchmark_measure import baseline_max_abs_diff, forward_flops
from experiments.benchmark_workloads import Workload, randomize_zero_parameters
from experiments.errors import CommandError
from lightning_modules.base import DiffusionLitModule
from lightning_modules.diffusion import guided_denoiser
from lightning_modules.nets.attention import SelfAttention2d
from lightning_modules.nets.cross_attention import TextureCrossAttention
from lightning_modules.nets.pidm_unet import PIDMUNetConfig
from lightning_modules.nets.sdm_unet import SDMUNetConfig
from lightning_modules.pidm import PIDMLitModule
from lightning_modules.sdm import SDMLitModule

TRAINING_COLUMNS = ["variant", "precision", "attention", "compile", "images/s", "× naive", "peak GiB", "MFU",
                    "warm-up s"]  # fmt: skip
SAMPLING_COLUMNS = ["variant", "sampler", "guidance", "precision", "attention", "NFE/image", "images/s", "s/image",
                    "× naive", "MFU", "timing"]  # fmt: skip


def _workload(module: DiffusionLitModule) -> Workload:
    randomize_zero_parameters(module.net, torch.Generator().manual_seed(0))
    return Workload(module.eval())


def _tiny_sdm() -> SDMLitModule:
    torch.manual_seed(0)
    network = SDMUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                            image_size=16, num_head_channels=16, spade_hidden_channels=16)
    return SDMLitModule(num_classes=4, instance_edges=True, network=network)


def _tiny_pidm() -> PIDMLitModule:
    torch.manual_seed(0)
    network = PIDMUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                             image_size=16, embed_channels=64, num_heads=2)
    return PIDMLitModule(pose_channels=4, network=network)


def test_einsum_attention_modules_match_sdpa_modules():
    torch.manual_seed(0)
    self_attention = SelfAttention2d(64, head_channels=16)
    cross_attention = TextureCrossAttention(64, num_heads=2)
    for module in (self_attention, cross_attention):
        torch.nn.init.normal_(module.proj_out.weight)
    x, texture = torch.randn(2, 64, 8, 8), torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        expected_self, expected_cross = self_attention(x), cross_attention(x, texture)
        assert (expected_self - x).abs().max() > 0.1  # the attention branch is active
        torch.testing.assert_close(EinsumSelfAttention(self_attention)(x), expected_self, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            EinsumCrossAttention(cross_attention)(x, texture), expected_cross, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("family", ["SDM", "PIDM"])
def test_naive_copy_swaps_attention_and_gives_the_same_outputs(family):
    workload = _workload(_tiny_sdm() if family == "SDM" else _tiny_pidm())
    net = workload.net
    baseline = naive_copy(net)
    swapped = [m for m in baseline.modules() if isinstance(m, (EinsumSelfAttention, EinsumCrossAttention))]
    assert swapped
    assert not any(isinstance(m, (EinsumSelfAttention, EinsumCrossAttention)) for m in net.modules())
    assert baseline_max_abs_diff(workload, (16, 16), torch.device("cpu")) < 1e-4


def test_naive_copy_rejects_a_network_without_attention():
    with pytest.raises(ValueError, match="no attention module"):
        naive_copy(torch.nn.Conv2d(3, 3, 1))


def test_sequential_guidance_equals_batched_guidance():
    workload = _workload(_tiny_sdm())
    generator = torch.Generator().manual_seed(1)
    data = workload.data_batch(2, (16, 16), generator)
    x, t = torch.randn(2, 3, 16, 16, generator=generator), torch.tensor([3, 700])
    variants, guidance, _ = workload.module.guided_conditions(data, workload.guidance(3.0))
    assert set(variants) == {"cond", "null"}
    with torch.no_grad():
        batched = guided_denoiser(workload.net, variants, guidance)(x, t)
        sequential = sequential_guided_denoiser(workload.net, variants, guidance)(x, t)
    torch.testing.assert_close(sequential, batched, atol=1e-5, rtol=1e-5)


def test_forward_flops_count_the_texture_encoder_only_in_training():
    workload = _workload(_tiny_pidm())
    training, sampling = forward_flops(workload, (16, 16), torch.device("cpu"))
    assert training > sampling > 0


@pytest.mark.slow
def test_sdm_benchmark_has_every_row_and_column():
    settings = Settings(
        batch=1, size=(16, 16), device=torch.device("cpu"), warmup_steps=1, train_steps=1,
        sample_steps=(("ddim", 3),), max_timed_steps=5, probe_steps=2,
        compile_skip_reason=compile_skip_reason("auto", torch.device("cpu")),
    )  # fmt: skip
    report = benchmark(_workload(_tiny_sdm()), settings, "SDM test")
    assert [list(row) for row in report.training] == [TRAINING_COLUMNS] * len(report.training)
    assert [row["variant"] for row in report.training] == [
        "naive baseline", "fp32", "bf16", "bf16 + channels_last", "bf16 + activation checkpointing"
    ]
    assert report.training[0]["× naive"] == "1.00"
    assert [list(row) for row in report.sampling] == [SAMPLING_COLUMNS] * 3
    baseline, fp32, bf16 = report.sampling
    assert (baseline["sampler"], baseline["guidance"], baseline["attention"]) == (
        "ddpm-1000", "2 sequential calls", "einsum"
    )
    assert baseline["NFE/image"] == "2000" and baseline["timing"] == "extrapolated from 2 steps"
    assert (fp32["sampler"], fp32["guidance"], fp32["timing"]) == ("ddim-3", "1 batched call (2×)", "measured")
    assert bf16["precision"] == "bf16"
    text = report.markdown()
    assert "max |Δ|" in text and "| naive baseline | ddpm-1000 |" in text
    assert "torch.compile rows skipped on CPU" in text


@pytest.mark.slow
def test_main_benchmarks_the_config_network_and_writes_the_table(tmp_path):
    out = tmp_path / "table.md"
    report = main([
        "--config", "configs/sdm/ade20k.yaml", "--config", "configs/debug/tiny_sdm.yaml", "--model_size", "small",
        "--device", "cpu", "--batch_size", "1", "--parts", "[sample]", "--precisions", "[fp32]",
        "--sample_steps", "ddim:2", "--probe_steps", "2",
        "--out", str(out),
    ])  # fmt: skip
    assert report.training == [] and len(report.sampling) == 2
    text = out.read_text()
    assert "SDMUNet from configs/sdm/ade20k.yaml, configs/debug/tiny_sdm.yaml, small architecture" in text
    assert "| fp32 | ddim-2 |" in text


@pytest.mark.slow
def test_pidm_benchmark_rows_with_cached_texture_guidance():
    workload = _workload(_tiny_pidm())
    settings = Settings(
        batch=1, size=(16, 16), device=torch.device("cpu"), precisions=("fp32",),
        compile_skip_reason="skipped in tests", sample_steps=(("dpmpp_2m", 2),), parts=("sample",),
        max_timed_steps=5, probe_steps=2,
    )  # fmt: skip
    report = benchmark(workload, settings, "PIDM test")
    assert report.training == []
    assert [(row["variant"], row["sampler"]) for row in report.sampling] == [
        ("naive baseline", "ddpm-1000"), ("fp32", "dpmpp_2m-2")
    ]
    assert "skipped in tests" in report.markdown()


def test_options_are_validated():
    assert parse_sample_steps("ddim:50, dpmpp_2m:25") == (("ddim", 50), ("dpmpp_2m", 25))
    for bad in ("ddim", "ddim:0", "euler:10"):
        with pytest.raises(ValueError, match="SAMPLER:STEPS"):
            parse_sample_steps(bad)
    cpu = torch.device("cpu")
    assert "--compile off" in compile_skip_reason("off", cpu)
    assert "--compile on" in compile_skip_reason("auto", cpu)
    assert peak_flops(cpu) is None


def test_bad_options_are_named_before_anything_is_built(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(CommandError, match="SAMPLER:STEPS"):
        main(["--config", "configs/sdm/shapes.yaml", "--data.init_args.root", str(tmp_path / "shapes"),
              "--sample_steps", "euler:10"])

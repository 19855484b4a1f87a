"""Mixed precision: the networks run under bf16 autocast, the diffusion math never does.

Each check compares a computation under ``torch.autocast("cpu", torch.bfloat16)`` with the float32 computation on
the same network outputs (recorded under autocast and replayed). CPU autocast uses the same dtypes as CUDA's.
"""

from collections.abc import Callable

import pytest
import pytorch_lightning as pl
import torch
from test_pidm_module import person_batch, tiny_module
from test_sdm_module import random_batches, tiny_sdm
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_modules.diffusion import (
    SAMPLERS,
    DiffusionSchedule,
    classifier_free,
    disentangled,
    guided_denoiser,
    q_sample,
    training_losses,
)

RTOL = 1e-5
bf16_autocast = torch.autocast("cpu", dtype=torch.bfloat16)


@torch.no_grad()
def tiny_networks() -> dict[str, tuple[torch.nn.Module, dict, dict, int]]:
    """name -> (network, its condition keywords, the null-condition keywords, image size), random weights."""
    torch.manual_seed(0)
    sdm = tiny_sdm().eval()
    for parameter in sdm.net.parameters():  # the zero-initialised output conv would make every output 0
        torch.nn.init.normal_(parameter, std=0.2)
    sdm_batch = random_batches(1, batch_size=2)[0]
    y = sdm.condition(sdm_batch["label"], sdm_batch["instance"])
    pidm = tiny_module()
    batch = person_batch()
    texture, null_texture = pidm.net.encode(batch["source"]), pidm.null_texture(2, batch["source"])
    return {
        "sdm": (sdm.net, {"y": y}, {"y": torch.zeros_like(y)}, 8),
        "pidm": (pidm.net, {"pose": batch["target_pose"], "texture": texture},
                 {"pose": torch.zeros_like(batch["target_pose"]), "texture": null_texture}, 16),
    }


NETWORKS = tiny_networks()


class RecordedOutputs:
    """Calls the network under bf16 autocast and records each output rounded to bfloat16 (what a reduced-precision
    output head hands the math); :meth:`replay` serves the same outputs in float32, in the same order."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.outputs: list[Tensor] = []

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        with bf16_autocast:
            output = self.net(x, t, **kwargs).bfloat16()
        self.outputs.append(output)
        return output

    def replay(self) -> Callable[..., Tensor]:
        outputs = iter(self.outputs)
        return lambda x, t, **kwargs: next(outputs).float()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_body_runs_in_bf16_and_the_output_head_in_float32(name):
    net, condition, _, size = NETWORKS[name]
    x, t = torch.randn(2, 3, size, size), torch.tensor([10, 900])
    with torch.no_grad():
        reference = net(x, t, **condition)
        with bf16_autocast:
            mixed = net(x, t, **condition)
    assert mixed.dtype == torch.float32
    assert not torch.allclose(mixed, reference, rtol=1e-4, atol=1e-4)  # the body did run in bf16
    assert torch.allclose(mixed, reference, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_hybrid_loss_and_variance_gradient_under_autocast_equal_float32(name):
    net, condition, _, size = NETWORKS[name]
    schedule = DiffusionSchedule.create("linear", 1000)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, size, size, generator=generator) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)

    for t in (torch.tensor([0, 250]), torch.tensor([600, 999])):  # the decoder NLL, the KL and the large-t steps
        # The network's own output under autocast (float32 from its float32 head), and the same output rounded to
        # bfloat16 (a reduced-precision head, e.g. bf16-true weights): each leaf gets its own gradient.
        with torch.no_grad(), bf16_autocast:
            head_output = net(q_sample(schedule, x0, t, noise), t, **condition)
        for output in (head_output, head_output.bfloat16()):
            leaf = output.detach().requires_grad_()
            with bf16_autocast:
                mixed = training_losses(schedule, lambda x_t, timesteps: leaf, x0, t, noise)
            reference_leaf = output.detach().float().requires_grad_()
            reference = training_losses(schedule, lambda x_t, timesteps: reference_leaf, x0, t, noise)
            for key in ("loss", "mse", "vb"):
                assert mixed[key].dtype == torch.float32
                torch.testing.assert_close(mixed[key], reference[key], rtol=RTOL, atol=0)
            mixed["vb"].sum().backward()
            reference["vb"].sum().backward()
            variance_grad = reference_leaf.grad[:, 3:]
            assert (variance_grad.abs().flatten(1).amax(dim=1) > 0).all()  # bf16 math zeroed it for t >= 200
            # A bfloat16 leaf receives the float32 gradient rounded to bfloat16, nothing else.
            expected = variance_grad.to(output.dtype)
            torch.testing.assert_close(leaf.grad[:, 3:], expected, rtol=RTOL if output.dtype == torch.float32 else 0,
                                       atol=0)


GUIDANCE = {"sdm": classifier_free(2.0), "pidm": disentangled(2.0, 1.5)}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_guided_sampler_end_points_under_autocast_equal_float32(name, sampler):
    net, condition, null, size = NETWORKS[name]
    guidance = GUIDANCE[name]
    names = guidance.active_variants
    variants = {"cond": condition, "null": null} if name == "sdm" else {
        "none": null, "pose": {"pose": condition["pose"], "texture": null["texture"]},
        "style": {"pose": null["pose"], "texture": condition["texture"]}}
    variants = {key: value for key, value in variants.items() if key in names}
    schedule = DiffusionSchedule.create("linear", 1000).respace("10")
    x_T = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    recorded = RecordedOutputs(net)

    def run(model: Callable[..., Tensor], autocast: bool) -> Tensor:
        generator = torch.Generator().manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return SAMPLERS[sampler](guided_denoiser(model, variants, guidance), x_T, schedule, generator=generator)

    mixed = run(recorded, autocast=True)
    reference = run(recorded.replay(), autocast=False)
    assert len(recorded.outputs) == schedule.num_steps and recorded.outputs[0].dtype == torch.bfloat16
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("family", ["sdm", "pidm"])
def test_one_bf16_mixed_training_step_of_each_lightning_module(family):
    if family == "sdm":
        module, batches = tiny_sdm(), random_batches(1)
    else:
        module, batches = tiny_module(), [person_batch()]
    module.train()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and float(metrics["train/vb"]) > 0
    assert all(p.dtype == torch.float32 for p in module.parameters())
    changed = [name for name, p in module.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("net.out") for name in changed)  # the output head trained too

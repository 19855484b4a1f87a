"""PIDM editing: appearance control keeps the unmasked reference, style interpolation ends at plain samples."""

import pytest
import torch

from lightning_modules.base import SamplerSettings
from lightning_modules.editing import appearance_control, interpolate_styles, slerp
from test_pidm_module import SIZE, person_batch, tiny_module

SAMPLING = SamplerSettings(sampler="ddim", steps=5)


@pytest.fixture(scope="module")
def module():
    return tiny_module()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_appearance_control_keeps_the_unmasked_reference(module, sampler):
    batch = person_batch()
    reference = batch["target"]
    mask = torch.zeros(SIZE, SIZE)
    mask[4:12, 2:10] = 1
    out = appearance_control(
        module, batch["source"], reference, batch["target_pose"], mask,
        sampling=SamplerSettings(sampler=sampler, steps=5), generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    keep = mask == 0
    assert torch.equal(out[..., keep], reference[..., keep])
    assert (out[..., ~keep] - reference[..., ~keep]).abs().max() > 0.1  # the masked region is regenerated


def test_appearance_control_blends_every_step_with_the_noised_reference(module):
    batch = person_batch(batch_size=1)
    reference = batch["target"]
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., :, : SIZE // 2] = 1
    schedule = module.sampling_schedule(SAMPLING)
    states = []
    original_sample = module.sample

    def recording_sample(*args, callback, **kwargs):
        def record(step):
            blended = callback(step)
            states.append((step.t, blended))
            return blended

        return original_sample(*args, callback=record, **kwargs)

    module.sample = recording_sample
    try:
        appearance_control(module, batch["source"], reference, batch["target_pose"], mask, sampling=SAMPLING)
    finally:
        del module.sample
    kept = mask[0, 0] == 0
    assert [t for t, _ in states] == list(reversed(range(schedule.num_steps)))
    for t, state in states[:-1]:  # kept pixels are the reference noised to level t - 1: check their scale
        signal = schedule.alphas_cumprod[t - 1].sqrt().item()
        residual = state[..., kept] - signal * reference[..., kept]
        noise_std = (1 - schedule.alphas_cumprod[t - 1]).sqrt().item()
        assert residual.std().item() == pytest.approx(noise_std, rel=0.35)


def test_appearance_control_rejects_a_misshapen_mask(module):
    batch = person_batch()
    with pytest.raises(ValueError, match="mask"):
        appearance_control(module, batch["source"], batch["target"], batch["target_pose"], torch.ones(8, 8))


def test_slerp_ends_and_keeps_the_norm_of_orthogonal_noises():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    mixes = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.equal(mixes[0], a[0]) and torch.allclose(mixes[-1], b[0])
    torch.testing.assert_close(mixes.norm(dim=1), torch.ones(5))


def test_interpolation_endpoints_equal_plain_sampling(module):
    batch = person_batch()
    source_a, source_b, pose = batch["source"][:1], batch["source"][1:], batch["target_pose"][:1]
    noise = tuple(torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(s)) for s in (11, 12))
    mixes = interpolate_styles(module, source_a, source_b, pose, 4, noise=noise, sampling=SAMPLING)
    assert mixes.shape == (4, 3, SIZE, SIZE)
    plain_a = module.generate(source_a, pose, sampling=SAMPLING, generator=torch.Generator().manual_seed(11))
    plain_b = module.generate(source_b, pose, sampling=SAMPLING, generator=torch.Generator().manual_seed(12))
    torch.testing.assert_close(mixes[0], plain_a[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(mixes[-1], plain_b[0], atol=1e-4, rtol=0)
    assert (mixes[1] - mixes[0]).abs().max() > 1e-3 and (mixes[2] - mixes[3]).abs().max() > 1e-3


def test_interpolation_needs_deterministic_ddim(module):
    batch = person_batch()
    with pytest.raises(ValueError, match="DDIM"):
        interpolate_styles(
            module, batch["source"][:1], batch["source"][1:], batch["target_pose"][:1], 3,
            sampling=SamplerSettings(sampler="ddpm", steps=3),
        )  # fmt: skip

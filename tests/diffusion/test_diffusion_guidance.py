import pytest
import torch

from lightning_modules.diffusion import Guidance, classifier_free, disentangled, guided_denoiser, nested, style_only


class CountingModel:
    """Returns 6 channels whose value encodes each sample's condition scalar, and records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond, features=None):
        self.calls.append({"x": x, "t": t, "cond": cond, "features": features})
        eps = x + cond.view(-1, 1, 1, 1)
        return torch.cat([eps, 10 * cond.view(-1, 1, 1, 1).expand_as(x)], dim=1)


def condition(value: float, batch: int = 2) -> dict:
    return {"cond": torch.full((batch,), value), "features": [torch.full((batch, 4), value)]}


def test_nested_guidance_is_one_call_and_skips_zero_weight_variant():
    model = CountingModel()
    variants = {"none": condition(0.0), "full": condition(2.0)}  # "image" is unused when s_image == s_pose
    denoise = guided_denoiser(model, variants, nested(3.0, 3.0))
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([5, 9])
    for _ in range(3):
        out = denoise(x, t)
    assert len(model.calls) == 3
    call = model.calls[0]
    assert call["x"].shape[0] == 4 and torch.equal(call["t"], t.repeat(2))
    assert call["cond"].tolist() == [0.0, 0.0, 2.0, 2.0] and call["features"][0].shape == (4, 4)
    # ε(∅) + 3·(ε(full) − ε(∅)) = x + 6 on ε; v from "full" (20).
    torch.testing.assert_close(out[:, :3], x + 6.0)
    assert (out[:, 3:] == 20.0).all()


def test_disentangled_guidance_combines_all_channels():
    model = CountingModel()
    variants = {"none": condition(0.0), "pose": condition(1.0), "style": condition(2.0)}
    out = guided_denoiser(model, variants, disentangled(2.0, 0.5))(torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]))
    assert len(model.calls) == 1 and model.calls[0]["x"].shape[0] == 6
    torch.testing.assert_close(out[:, :3], torch.full((2, 3, 4, 4), 2.0 * 1.0 + 0.5 * 2.0))
    torch.testing.assert_close(out[:, 3:], torch.full((2, 3, 4, 4), 30.0))


def test_scale_one_needs_only_the_conditional_pass():
    model = CountingModel()
    for guidance in (classifier_free(1.0), style_only(1.0)):
        name = next(iter(guidance.weights))
        out = guided_denoiser(model, {name: condition(1.0)}, guidance)(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
        assert model.calls[-1]["x"].shape[0] == 2
        torch.testing.assert_close(out, model(torch.zeros(2, 3, 4, 4), None, torch.full((2,), 1.0)))


def test_classifier_free_mixes_eps_only_with_variance_from_cond():
    guidance = classifier_free(1.5)
    assert dict(guidance.weights) == {"cond": 1.5, "null": -0.5}
    assert guidance.mix_channels == 3 and guidance.variance_from == "cond"
    model = CountingModel()
    out = guided_denoiser(model, {"cond": condition(1.0), "null": condition(0.0)}, guidance)(
        torch.zeros(2, 3, 4, 4), torch.tensor([0, 1])
    )
    torch.testing.assert_close(out[:, :3], torch.full((2, 3, 4, 4), 1.5))
    assert (out[:, 3:] == 10.0).all()


def test_missing_or_inconsistent_variants_raise():
    model = CountingModel()
    with pytest.raises(KeyError, match="null"):
        guided_denoiser(model, {"cond": condition(1.0)}, classifier_free(2.0))
    with pytest.raises(ValueError, match="keywords"):
        guided_denoiser(model, {"cond": condition(1.0), "null": {"cond": torch.zeros(2)}}, classifier_free(2.0))
    with pytest.raises(ValueError, match="sequence of 1 tensors"):
        guided_denoiser(
            model,
            {"cond": condition(1.0), "null": {"cond": torch.zeros(2), "features": []}},
            classifier_free(2.0),
        )


def test_guidance_validates_its_fields():
    with pytest.raises(ValueError, match="variance_from 'x'"):
        Guidance({"a": 1.0}, variance_from="x")
    with pytest.raises(ValueError, match="at least one"):
        Guidance({})
    assert Guidance({"a": 2.0, "b": -1.0}).variance_from == "a"
    assert Guidance({"a": 2.0, "b": -1.0}, mix_channels=None).active_variants == ("a", "b")

import shutil

import lpips
import pytest
import torch

from lightning_modules.metrics import EvaluationMetrics, MissingWeightsError
from lightning_modules.metrics.image_conversion import to_uint8, uint8_to_signed
from lightning_modules.metrics.lpips import build_lpips, lpips_diversity
from lightning_modules.metrics.weights import WEIGHTS, torch_hub_checkpoint


@pytest.fixture(scope="module")
def alex(weights_dir):
    return build_lpips("alex")


def test_backbone_comes_from_the_weights_file(weights_dir, alex):
    state = torch.load(weights_dir / WEIGHTS["lpips_alex"].name, weights_only=True)
    loaded = alex.net.state_dict()
    torch.testing.assert_close(loaded["slice1.0.weight"], state["features.0.weight"])
    torch.testing.assert_close(loaded["slice5.10.bias"], state["features.10.bias"])
    assert not any(p.requires_grad for p in alex.parameters())


@pytest.mark.filterwarnings("ignore::UserWarning")  # lpips itself uses torchvision's deprecated `pretrained=`
def test_equals_lpips_loading_the_same_file_from_the_torch_hub_cache(weights_dir, alex, make_images):
    cached = torch_hub_checkpoint(WEIGHTS["lpips_alex"].name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights_dir / WEIGHTS["lpips_alex"].name, cached)
    try:
        reference = lpips.LPIPS(net="alex", verbose=False)
    finally:
        cached.unlink()
    x, y = make_images(2, 64, seed=1), make_images(2, 64, seed=2)
    torch.testing.assert_close(alex(x, y), reference(x, y))


def test_diversity_zero_for_identical_samples_positive_otherwise(alex, make_images):
    same = make_images(2, 64).expand(3, -1, -1, -1, -1)
    assert torch.all(lpips_diversity(alex, same) == 0)
    different = torch.stack([make_images(2, 64, seed=s) for s in range(3)])
    scores = lpips_diversity(alex, different)
    assert scores.shape == (2,)
    assert torch.all(scores > 0)
    pairwise = torch.stack([alex(different[i], different[j]).flatten() for i in range(3) for j in range(i + 1, 3)])
    torch.testing.assert_close(scores, pairwise.mean(0))


def test_diversity_needs_two_samples(alex, make_images):
    with pytest.raises(ValueError, match="K>=2"):
        lpips_diversity(alex, make_images(2, 64)[None])


def test_holder_diversity_and_reconstruction(weights_dir, make_images):
    samples = torch.stack([make_images(2, 64, seed=s) for s in range(3)])
    diversity = EvaluationMetrics.from_config({"fid": None, "lpips": {"mode": "diversity", "num_samples": 3}})
    diversity.update_lpips_diversity(samples)
    assert diversity.compute()["lpips"] > 0
    legacy = EvaluationMetrics.from_config(
        {"fid": None, "lpips": {"mode": "diversity", "num_samples": 3, "stargan_v2_preprocess": True}})
    legacy.update_lpips_diversity(samples)
    assert legacy.compute()["lpips"] > 0
    with pytest.raises(ValueError, match="num_samples=3"):
        legacy.update_lpips_diversity(samples[:2])
    with pytest.raises(ValueError, match="configured for 'diversity'"):
        legacy.update_lpips(samples[0], samples[1])

    reconstruction = EvaluationMetrics.from_config({"fid": None, "lpips": {"resolution": [64, 44]}})
    reconstruction.update_lpips(samples[0], samples[0])
    assert reconstruction.compute()["lpips"] == 0
    reconstruction.reset()
    reconstruction.update_lpips(samples[0], samples[1])
    assert reconstruction.compute()["lpips"] > 0


def test_missing_backbone_offline(tmp_path):
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        build_lpips("alex", weights_dir=tmp_path, offline=True)


def test_images_below_the_backbone_s_smallest_input_are_upsampled_with_a_warning(weights_dir, make_images):
    small = torch.stack([make_images(2, 16, seed=s) for s in range(2)])  # (K=2, B=2, 3, 16, 16)
    metrics = EvaluationMetrics.from_config({"fid": None, "lpips": {"mode": "diversity", "num_samples": 2}})
    with pytest.warns(UserWarning, match=r"at least 31 px per side; 16x16 images are scored at 31x31"):
        metrics.update_lpips_diversity(small)
    quantised = uint8_to_signed(to_uint8(small.flatten(0, 1)))  # the metric scores 8-bit images
    upsampled = torch.nn.functional.interpolate(quantised, size=(31, 31), mode="bilinear", align_corners=False)
    expected = lpips_diversity(metrics.lpips_model, upsampled.unflatten(0, (2, 2))).mean()
    assert metrics.compute()["lpips"] == pytest.approx(float(expected), rel=1e-5)

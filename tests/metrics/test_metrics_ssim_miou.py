import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.metrics.ssim import cropped_ssim
from lightning_modules.segmenter import SegmenterLitModule, load_segmenter


def test_cropped_ssim_equals_skimage_win51(make_images):
    generator = torch.Generator().manual_seed(0)
    clean = make_images(2, 64)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=generator)).clamp(-1, 1)
    to_unit = lambda x: ((x + 1) * 127.5).round() / 255  # noqa: E731  (uint8-rounded, like PNG files)
    ours = cropped_ssim(to_unit(noisy), to_unit(clean), window=51)
    for index in range(2):
        reference = structural_similarity(
            to_unit(clean[index]).permute(1, 2, 0).double().numpy(),
            to_unit(noisy[index]).permute(1, 2, 0).double().numpy(),
            win_size=51, data_range=1, channel_axis=2,
        )
        assert abs(ours[index].item() - reference) < 1e-6
    assert ours.dtype == torch.float64


def test_cropped_ssim_rejects_small_images(make_images):
    with pytest.raises(ValueError, match="window 51"):
        cropped_ssim(make_images(1, 32), make_images(1, 32), window=51)


def test_holder_ssim_is_one_for_identical_images(make_images):
    metrics = EvaluationMetrics.from_config({"fid": None, "ssim": {}})
    images = make_images(2, 64)
    metrics.update_ssim(images, images)
    np.testing.assert_allclose(metrics.compute()["ssim"].item(), 1.0, atol=1e-12)


def test_holder_ssim_fits_the_window_to_smoke_test_images_with_a_warning(make_images):
    metrics = EvaluationMetrics.from_config({"fid": None, "ssim": {"window": 51}})
    fake, real = make_images(2, 16, seed=1), make_images(2, 16)
    with pytest.warns(UserWarning, match="SSIM window 51 does not fit 16x16 images; scored with window 15"):
        metrics.update_ssim(fake, real)
    to_unit = lambda x: ((x + 1) * 127.5).round() / 255  # noqa: E731
    expected = cropped_ssim(to_unit(fake).double(), to_unit(real).double(), window=15).mean()
    np.testing.assert_allclose(metrics.compute()["ssim"].item(), expected.item(), rtol=1e-7)


@pytest.fixture
def miou_metrics(tmp_path):
    segmenter = SegmenterLitModule(num_classes=3, arch="Unet", encoder_name="resnet18", ignore_index=255,
                                   model_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})
    path = tmp_path / "segmenter.ckpt"
    torch.save({"state_dict": segmenter.state_dict(), "hyper_parameters": dict(segmenter.hparams)}, path)
    metrics = EvaluationMetrics.from_config({"fid": None, "miou": {"segmenter": str(path)}},
                                            segmenter=load_segmenter(str(path)))
    assert metrics.miou.num_classes == 3 and metrics.miou.ignore_index == 255
    return metrics


def oracle(prediction: torch.Tensor):
    """A segmenter stand-in whose argmax is ``prediction``."""
    return lambda images: torch.nn.functional.one_hot(prediction, 3).permute(0, 3, 1, 2).float()


def test_miou_one_for_perfect_predictions_and_ignore_index_honoured(miou_metrics, make_images):
    label = torch.randint(0, 3, (2, 32, 32))
    images = make_images(2)
    miou_metrics.segmenter = oracle(label)
    miou_metrics.update_miou(images, label)
    assert miou_metrics.compute()["miou"].item() == 1.0

    miou_metrics.reset()
    ignored = label.clone()
    ignored[:, :8] = 255
    wrong = label.clone()
    wrong[:, :8] = (label[:, :8] + 1) % 3  # wrong only where the label is ignored
    miou_metrics.segmenter = oracle(wrong)
    miou_metrics.update_miou(images, ignored)
    assert miou_metrics.compute()["miou"].item() == 1.0

    miou_metrics.reset()
    miou_metrics.update_miou(images, label)
    assert miou_metrics.compute()["miou"].item() < 1.0

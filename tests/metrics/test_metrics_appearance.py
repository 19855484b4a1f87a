import pytest
import torch

from lightning_modules.metrics import EvaluationConfig, EvaluationMetrics
from lightning_modules.metrics.appearance import AppearanceTransfer, part_mean_colours

# Two parts on 4x4 images: part 1 the top half, part 2 the bottom-left quarter, the rest unlabelled.
PARTS = torch.zeros(4, 4, dtype=torch.long)
PARTS[:2] = 1
PARTS[2:, :2] = 2


def paint(colours: torch.Tensor, parts: torch.Tensor = PARTS, rest: float = -1.0) -> torch.Tensor:
    """(N, 2, 3) part colours in [-1, 1] -> (N, 3, 4, 4) images, unlabelled pixels set to ``rest``."""
    images = torch.full((colours.shape[0], 3, 4, 4), rest)
    for label in (1, 2):
        images.permute(0, 2, 3, 1)[:, parts == label] = colours[:, label - 1].unsqueeze(1)
    return images


def test_part_means_ignore_unlabelled_pixels_and_flag_small_parts():
    colours = torch.tensor([[[0.5, -0.5, 0.0], [1.0, 0.0, -1.0]]])
    means = part_mean_colours(paint(colours, rest=0.9), PARTS.unsqueeze(0), num_parts=3, min_pixels=4)
    assert torch.allclose(means[0, :2], colours[0])
    assert means[0, 2].isnan().all()  # label 3 has no pixels
    means = part_mean_colours(paint(colours), PARTS.unsqueeze(0), num_parts=2, min_pixels=5)
    assert not means[0, 0].isnan().any() and means[0, 1].isnan().all()  # part 2 has 4 < 5 pixels


def test_real_targets_score_zero_error_and_full_accuracy_swapped_ones_none():
    colours = torch.rand(3, 2, 3) * 2 - 1
    real = paint(colours)
    parts, identity = PARTS.expand(3, 4, 4), torch.tensor([7, 3, 5])
    metric = AppearanceTransfer(num_parts=2)
    metric.update(real, real, parts, identity)
    result = metric.compute()
    assert result["part_colour_error"] == pytest.approx(0.0, abs=1e-4) and result["identity_accuracy"] == 1.0

    metric.reset()
    swapped = colours[[1, 2, 0]]
    metric.update(paint(swapped), real, parts, identity)
    result = metric.compute()
    expected = ((swapped - colours) * 127.5).norm(dim=-1).mean()  # 0-255 scale, mean over parts then images
    assert result["part_colour_error"] == pytest.approx(float(expected), rel=1e-5)
    assert result["identity_accuracy"] == 0.0


def test_identity_references_average_all_targets_of_an_identity():
    # Identity 0 has two targets (dark and mid grey), identity 1 one (white). A generated image closer to the
    # average of identity 0 than to identity 1 counts as identity 0 even if it matches neither target.
    real = paint(torch.tensor([[[-1.0] * 3] * 2, [[0.0] * 3] * 2, [[1.0] * 3] * 2]))
    fake = paint(torch.tensor([[[-0.5] * 3] * 2, [[-0.4] * 3] * 2, [[0.6] * 3] * 2]))
    metric = AppearanceTransfer(num_parts=2)
    metric.update(fake, real, PARTS.expand(3, 4, 4), torch.tensor([0, 0, 1]))
    assert metric.compute()["identity_accuracy"] == 1.0
    metric.reset()
    metric.update(fake[[2, 1, 0]], real, PARTS.expand(3, 4, 4), torch.tensor([0, 0, 1]))
    assert metric.compute()["identity_accuracy"] == pytest.approx(1 / 3)  # only the middle one is right


def test_parts_missing_in_an_image_are_left_out_of_its_error():
    colours = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    parts = PARTS.clone()
    parts[parts == 2] = 0  # this target shows no part 2
    fake = paint(torch.tensor([[[0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]]))
    metric = AppearanceTransfer(num_parts=2)
    metric.update(fake, paint(colours), parts.unsqueeze(0), torch.tensor([0]))
    assert metric.compute()["part_colour_error"] == pytest.approx(0.0, abs=1e-4)


def test_bad_inputs_are_named():
    metric = AppearanceTransfer(num_parts=2)
    images = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="part labels must lie in 0..2"):
        metric.update(images, images, torch.full((2, 4, 4), 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="share batch and spatial size"):
        metric.update(images, images, torch.zeros(2, 8, 8, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="no images"):
        metric.compute()
    with pytest.raises(ValueError, match="positive"):
        AppearanceTransfer(num_parts=0)


def test_evaluation_metrics_report_appearance_from_the_config():
    config = EvaluationConfig.from_dict({"fid": None, "appearance": {"num_parts": 2, "min_pixels": 1}})
    metrics = EvaluationMetrics(config)
    real = paint(torch.rand(2, 2, 3) * 2 - 1)
    metrics.update_appearance(real, real, PARTS.expand(2, 4, 4), torch.tensor([0, 1]))
    results = metrics.compute()
    assert set(results) == {"part_colour_error", "identity_accuracy"}
    assert results["part_colour_error"] <= 0.5 * 3**0.5  # only the PNG rounding of the generated images
    assert metrics.description["appearance"] == {"num_parts": 2, "min_pixels": 1}
    metrics.reset()
    with pytest.raises(RuntimeError, match="no images"):
        metrics.compute()

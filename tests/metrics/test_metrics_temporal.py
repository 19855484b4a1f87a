import pytest
import torch

from lightning_modules.metrics.temporal import flicker, mean_frame_difference, pixel_flicker


def moving_square(frames: int, jitter: float = 0.0, seed: int = 0) -> torch.Tensor:
    """A bright square moving one pixel per frame on grey, optionally with per-frame noise."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.full((frames, 3, 16, 16), 100.0)
    for t in range(frames):
        video[t, :, 4:8, 2 + t : 6 + t] = 200.0
    video += jitter * torch.randn(video.shape, generator=generator)
    return video.round().clamp(0, 255).to(torch.uint8)


def test_a_steady_copy_of_the_video_has_zero_flicker_and_noise_adds_it():
    real = moving_square(6)
    assert mean_frame_difference(real) == pytest.approx(100 * 2 * 4 * 3 / (3 * 16 * 16))  # two edge columns move
    assert flicker(real, real) == 0 and pixel_flicker(real, real) == 0
    noisy = moving_square(6, jitter=10.0)
    assert flicker(noisy, real) > 5 and pixel_flicker(noisy, real) > flicker(noisy, real)


def test_a_frozen_sequence_has_negative_flicker_but_positive_pixel_flicker():
    real = moving_square(6)
    frozen = real[:1].repeat(6, 1, 1, 1)
    assert mean_frame_difference(frozen) == 0
    assert flicker(frozen, real) < 0 < pixel_flicker(frozen, real)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="uint8 frames shaped"):
        mean_frame_difference(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="differ"):
        flicker(moving_square(3), moving_square(4))

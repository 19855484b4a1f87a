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


def test_video_flicker_groups_the_written_frames_by_source(tmp_path):
    from torchvision.io import write_png

    from lightning_modules.metrics.temporal import video_flicker

    real = moving_square(4)
    noisy = moving_square(4, jitter=10.0)
    for folder, frames in (("generated", noisy), ("real", real)):
        (tmp_path / folder).mkdir()
        for video in ("a", "b"):
            for index, frame in enumerate(frames):
                write_png(frame, str(tmp_path / folder / f"{video}_00000_to_{video}_{index:05d}.png"))
        write_png(frames[0], str(tmp_path / folder / "c_00000_to_c_00001.png"))  # a one-frame video: left out
    scores = video_flicker(tmp_path / "generated", tmp_path / "real")
    assert scores["videos"] == 2
    assert scores["flicker"] == pytest.approx(flicker(noisy, real))
    assert scores["pixel_flicker"] == pytest.approx(pixel_flicker(noisy, real))
    assert video_flicker(tmp_path / "generated", tmp_path / "real", min_frames=5) == {}

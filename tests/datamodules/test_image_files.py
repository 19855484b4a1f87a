from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image_files import read_rgb, write_png
from lightning_modules.metrics.image_conversion import to_uint8

RNG = np.random.default_rng(0)


def _pixels(*shape: int, dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def test_exif_orientation_is_not_applied(tmp_path: Path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated by 90 degrees
    Image.fromarray(_pixels(20, 40, 3)).save(path, exif=exif.tobytes())
    assert read_rgb(path).shape == (20, 40, 3)
    assert cv2.imread(str(path)).shape == (40, 20, 3)  # OpenCV would have turned it


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(_pixels(6, 5)),  # 8-bit grey
        Image.fromarray(_pixels(6, 5, dtype=np.uint16)),  # 16-bit grey
        Image.fromarray(_pixels(6, 5, 4), mode="RGBA"),
        Image.fromarray(_pixels(6, 5, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8),
    ],
    ids=["grey8", "grey16", "rgba", "palette"],
)
def test_other_png_modes_become_rgb_as_pil_converts_them(tmp_path: Path, image: Image.Image):
    path = tmp_path / "image.png"
    image.save(path)
    pixels = read_rgb(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 5, 3)
    assert np.array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))
    if image.mode == "L":
        assert np.array_equal(pixels, np.repeat(np.asarray(image)[..., None], 3, axis=2))
    if image.mode == "RGBA":
        assert np.array_equal(pixels, np.asarray(image)[..., :3])


def test_a_missing_or_undecodable_file_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_rgb(tmp_path / "missing.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image file .*broken\.jpg"):
        read_rgb(broken)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(_pixels(32, 32, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.png"):
        read_rgb(truncated)


def test_pngs_hold_exactly_the_pixels_written(tmp_path: Path):
    rgb, grey, ids = _pixels(7, 9, 3), _pixels(7, 9), _pixels(7, 9, dtype=np.uint16)
    write_png(tmp_path / "new" / "folder" / "rgb.png", rgb)
    write_png(tmp_path / "grey.png", grey)
    write_png(tmp_path / "ids.png", ids)
    assert np.array_equal(read_rgb(tmp_path / "new" / "folder" / "rgb.png"), rgb)
    assert np.array_equal(cv2.imread(str(tmp_path / "grey.png"), cv2.IMREAD_UNCHANGED), grey)
    read_back = cv2.imread(str(tmp_path / "ids.png"), cv2.IMREAD_UNCHANGED)
    assert read_back.dtype == np.uint16 and np.array_equal(read_back, ids)


def test_tensors_are_channel_first_and_saved_as_the_metrics_round_them(tmp_path: Path):
    images = torch.rand(2, 3, 8, 6) * 2.2 - 1.1  # a little outside [-1, 1], as samples can be
    pixels = to_uint8(images)
    write_png(tmp_path / "image.png", pixels[0])
    assert torch.equal(torch.from_numpy(read_rgb(tmp_path / "image.png")).permute(2, 0, 1), pixels[0])
    write_png(tmp_path / "label.png", pixels[1, :1])
    assert np.array_equal(cv2.imread(str(tmp_path / "label.png"), cv2.IMREAD_UNCHANGED), pixels[1, 0].numpy())


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), torch.zeros(3, 4, 4), torch.zeros(2, 4, 4)],
    ids=["float-array", "four-channels", "float-tensor", "two-channel-tensor"],
)
def test_pixels_of_another_kind_are_refused_naming_the_file(tmp_path: Path, pixels):
    with pytest.raises(ValueError, match=r"cannot write .*out\.png"):
        write_png(tmp_path / "out.png", pixels)
    assert not (tmp_path / "out.png").exists()


def test_a_failed_write_names_the_file(tmp_path: Path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError, match=r"cannot write PNG file .*not_a_folder/image\.png"):
        write_png(blocker / "image.png", _pixels(4, 4, 3))

import numpy as np
import pytest

from datamodules.keypoints import (
    LIMBS,
    NUM_KEYPOINTS,
    load_keypoints_txt,
    load_patn_csv,
    resize_keypoints,
    save_keypoints_txt,
    to_txt_frame,
    transform_keypoints,
)


def _keypoints() -> np.ndarray:
    points = np.stack([np.arange(NUM_KEYPOINTS) * 5.0 + 50, np.arange(NUM_KEYPOINTS) * 10.0 + 3], axis=1)
    points[7] = -1
    return points


def test_limbs_are_the_17_drawn_openpose_pairs():
    assert len(LIMBS) == 17
    assert LIMBS[0] == (1, 2) and LIMBS[12] == (1, 0) and LIMBS[-1] == (15, 17)


def test_txt_round_trip(tmp_path):
    path = tmp_path / "pose.txt"
    save_keypoints_txt(path, _keypoints())
    loaded = load_keypoints_txt(path)
    assert loaded.dtype == np.float64 and loaded.shape == (18, 2)
    np.testing.assert_array_equal(loaded, _keypoints())


def test_txt_with_wrong_count_names_file_and_shape(tmp_path):
    path = tmp_path / "short.txt"
    np.savetxt(path, np.zeros((17, 2)))
    with pytest.raises(ValueError, match=r"short\.txt.*\(17, 2\)"):
        load_keypoints_txt(path)


def test_txt_unparsable_and_missing(tmp_path):
    path = tmp_path / "junk.txt"
    path.write_text("1 2\nthree four\n")
    with pytest.raises(ValueError, match="junk.txt"):
        load_keypoints_txt(path)
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        load_keypoints_txt(tmp_path / "absent.txt")


def test_patn_csv_reads_y_first(tmp_path):
    ys, xs = list(range(18)), [100 + i for i in range(18)]
    ys[3] = xs[3] = -1
    path = tmp_path / "annotation.csv"
    path.write_text(f"name:keypoints_y:keypoints_x\na.jpg:{ys}:{xs}\n")
    keypoints = load_patn_csv(path)["a.jpg"]
    assert keypoints.dtype == np.float64 and keypoints.shape == (18, 2)
    np.testing.assert_array_equal(keypoints[:, 0], xs)
    np.testing.assert_array_equal(keypoints[:, 1], ys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name;keypoints_y;keypoints_x\na;[1];[2]\n", "missing column"),
        ("name:keypoints_y:keypoints_x\na.jpg:[1, 2]:[3, 4]\n", r"annotation\.csv:2.*18 coordinates"),
        ("name:keypoints_y:keypoints_x\na.jpg:[1, 2\n", r"annotation\.csv:2"),
    ],
)
def test_patn_csv_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "annotation.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_patn_csv(path)


def test_transform_with_scale_and_crop_follows_the_official_formula():
    raw = np.array([[40.0, 0.0], [216.0, 256.0], [-1.0, 128.0]] + [[-1.0, -1.0]] * 15)
    out = transform_keypoints(raw, (64, 44), scale_size=(67, 46), crop=(1, 2))
    # x' = (x - 40) * 44/176 * 46/44 - 1, y' = y * 64/256 * 67/64 - 2
    np.testing.assert_allclose(out[0], [-1.0, -2.0])
    np.testing.assert_allclose(out[1], [176 * 46 / 176 - 1, 256 * 67 / 256 - 2])
    assert out[2, 0] == -1 and out[2, 1] == pytest.approx(128 * 67 / 256 - 2)
    assert (out[3:] == -1).all()


def test_to_txt_frame_inverts_transform():
    image_points = _keypoints() / 4
    image_points[7] = -1
    np.testing.assert_allclose(transform_keypoints(to_txt_frame(image_points, (32, 32)), (32, 32)), image_points)


def test_resize_keeps_missing():
    points = _keypoints()
    resized = resize_keypoints(points, (256, 176), (128, 88), crop=(2, 0))
    np.testing.assert_allclose(resized[0], [50 / 2 - 2, 3 / 2])
    assert (resized[7] == -1).all()

import numpy as np
import pytest
import torch
from official_fixtures import load_official_fixture

from datamodules.keypoints import LIMBS, transform_keypoints
from datamodules.pose_rendering import POSE_CHANNELS, render_heatmaps, render_official_pose, render_pose


@pytest.fixture(scope="module")
def pose_fixture(fixtures_dir):
    return load_official_fixture(fixtures_dir / "pidm_official" / "pose.pt")


@pytest.mark.parametrize("which", ["a", "b"])
def test_official_transform_matches_fixture(pose_fixture, which):
    height, width = pose_fixture["image_size"].tolist()
    transformed = transform_keypoints(pose_fixture[f"keypoints_{which}"].numpy(), (height, width))
    expected = pose_fixture[f"keypoints_{which}_transformed"].numpy()
    assert np.abs(transformed - expected).max() <= 1e-9


@pytest.mark.parametrize("which", ["a", "b"])
def test_official_pose_matches_fixture(pose_fixture, which):
    height, width = pose_fixture["image_size"].tolist()
    keypoints = transform_keypoints(pose_fixture[f"keypoints_{which}"].numpy(), (height, width))
    pose = render_official_pose(keypoints, height, width)
    expected = pose_fixture[f"pose_{which}"]
    assert pose.dtype == torch.float32 and pose.shape == expected.shape == (20, height, width)
    assert (pose - expected).abs().max().item() < 1e-6


def _skeleton() -> np.ndarray:
    points = np.stack([np.linspace(10, 50, 18), np.linspace(5, 58, 18)], axis=1)
    points[4] = -1  # right wrist: limb 3 (r_elbow, r_wrist) is skipped
    return points


def test_missing_limb_gives_constant_one_map():
    pose = render_official_pose(_skeleton(), 64, 60)
    missing_limb = 3 + LIMBS.index((3, 4))
    assert torch.all(pose[missing_limb] == 1.0)
    assert pose[3 + LIMBS.index((2, 3))].min() == 0.0  # a drawn limb is 0 on itself


def test_all_missing_pose_is_black_skeleton_and_saturated_distances():
    pose = render_official_pose(np.full((18, 2), -1.0), 16, 12)
    assert torch.all(pose[:3] == 0) and torch.all(pose[3:] == 1)


def test_heatmaps_peak_at_joints_and_zero_when_missing():
    points = _skeleton().round()
    heatmaps = render_heatmaps(points, 64, 60, sigma=2.0)
    assert heatmaps.shape == (18, 64, 60) and heatmaps.dtype == torch.float32
    x, y = points[0].astype(int)
    assert heatmaps[0, y, x] == 1.0 and heatmaps[0].argmax() == y * 60 + x
    assert heatmaps[0, y, x + 2] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert torch.all(heatmaps[4] == 0)


def test_render_pose_dispatch_and_errors():
    points = _skeleton()
    for encoding, channels in POSE_CHANNELS.items():
        assert render_pose(points, 32, 24, encoding, sigma=1.5).shape == (channels, 32, 24)
    with pytest.raises(ValueError, match="unknown pose encoding 'densepose'"):
        render_pose(points, 32, 24, "densepose")
    with pytest.raises(ValueError, match="sigma"):
        render_heatmaps(points, 32, 24, sigma=0.0)

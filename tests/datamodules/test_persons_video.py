"""Built-in persons videos: generated once in the frame-folder layout, smooth motion, whole videos per split."""

import numpy as np
import pytest
import torch

from datamodules.image_files import read_rgb
from datamodules.persons import PersonsSpec, identity_appearance
from datamodules.persons_video import PersonsVideoDataModule, PersonsVideoSpec, generate_persons_videos, video_joints


def spec(frames: int = 7) -> PersonsVideoSpec:
    return PersonsVideoSpec(PersonsSpec(seed=1, num_identities=4, poses_per_identity=3, test_fraction=0.25), frames)


def test_a_video_passes_through_its_keyframe_poses_in_small_steps():
    joints, _ = video_joints(spec(7), 0)
    assert joints.shape == (7, 18, 2)
    from datamodules.persons import image_scene
    keyframes = [image_scene(spec().persons, 0, pose)[0] for pose in range(3)]
    assert np.allclose(joints[0], keyframes[0]) and np.allclose(joints[3], keyframes[1])
    assert np.allclose(joints[6], keyframes[2])
    steps = np.abs(np.diff(joints, axis=0)).max()
    jumps = max(np.abs(keyframes[1] - keyframes[0]).max(), np.abs(keyframes[2] - keyframes[1]).max())
    assert steps <= jumps / 3 + 1e-9  # three frames per keyframe interval


def test_the_tree_is_written_once_with_whole_videos_per_split(tmp_path):
    assert generate_persons_videos(tmp_path / "videos", spec())
    assert not generate_persons_videos(tmp_path / "videos", spec())
    assert sorted(p.name for p in (tmp_path / "videos" / "train").iterdir()) == ["id_00000", "id_00001", "id_00002"]
    assert [p.name for p in (tmp_path / "videos" / "test").iterdir()] == ["id_00003"]
    frames = sorted((tmp_path / "videos/test/id_00003/frames").glob("*.png"))
    assert len(frames) == 7 and read_rgb(frames[0]).shape == (128, 88, 3)
    # one identity, one background: consecutive frames differ only where the person moved
    first, second = read_rgb(frames[0]).astype(int), read_rgb(frames[1]).astype(int)
    assert 0 < np.mean(np.any(first != second, axis=2)) < 0.5
    with pytest.raises(ValueError, match="other arguments|manifest"):
        generate_persons_videos(tmp_path / "videos", spec(8))


def test_the_datamodule_serves_windows_of_real_neighbouring_poses(tmp_path):
    data = PersonsVideoDataModule(str(tmp_path / "videos"), image_size=16, num_identities=4, keyframes=3,
                                  frames_per_video=7, test_fraction=0.25, seed=1, pose_window=3, batch_size=2,
                                  num_workers=0, pin_memory=False)
    data.prepare_data()
    data.setup("fit")
    assert data.pose_channels == 60 and len(data.datasets["train"]) == 3 * 7 * 2  # both directions
    item = data.datasets["test"][0]
    assert item["source_path"] == "id_00003/00000.png" and item["target_path"] == "id_00003/00001.png"
    window = item["target_pose"]
    assert window.shape == (60, 16, 16) and not torch.equal(window[:20], window[20:40])


def test_evaluation_frames_carry_part_labels_that_match_the_frame(tmp_path):
    data = PersonsVideoDataModule(str(tmp_path / "videos"), image_size=32, num_identities=4, keyframes=3,
                                  frames_per_video=7, test_fraction=0.25, seed=1, batch_size=2, num_workers=0,
                                  pin_memory=False)
    data.prepare_data()
    data.setup("test")
    item = data.datasets["test"][2]  # frame 3 of test person 3
    assert item["target_identity"] == 3 and item["target_parts"].shape == (32, 32)
    look = identity_appearance(data.spec.persons, 3)
    target = (item["target"] + 1) * 127.5
    for label, part in enumerate(("skin", "hair", "shirt", "trousers", "shoes"), start=1):
        if part == "shirt" and look.stripes != "none" or not (item["target_parts"] == label).any():
            continue
        mean = target[:, item["target_parts"] == label].mean(dim=1)
        assert (mean - torch.tensor(getattr(look, part), dtype=torch.float32)).norm() < 35, part

"""VideoDataModule: frame folders with per-frame OpenPose JSON or txt poses, pairs within a video, pose windows of
real neighbouring frames."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from person_trees import skeleton, skeleton_photo, write_image

from datamodules.keypoints import save_keypoints_txt, to_txt_frame
from datamodules.pose_rendering import render_pose
from datamodules.video import VideoDataModule

SIZE = (32, 24)  # frames' (height, width)


def frame_keypoints(frame: int) -> np.ndarray:
    return skeleton(SIZE, 0) + [frame, 0]  # the person walks one pixel right per frame


def write_video(folder: Path, frames: int, poses: str = "json", missing: tuple[int, int] | None = None) -> Path:
    for frame in range(frames):
        points = frame_keypoints(frame)
        write_image(folder / "frames" / f"{frame:05d}.png", skeleton_photo(points, SIZE))
        (folder / "poses").mkdir(parents=True, exist_ok=True)
        if poses == "txt":
            save_keypoints_txt(folder / "poses" / f"{frame:05d}.txt", to_txt_frame(points, SIZE))
            continue
        flat = []
        for joint, (x, y) in enumerate(points):
            hidden = x < 0 or missing == (frame, joint)
            flat += [0.0, 0.0, 0.0] if hidden else [float(x), float(y), 0.9]
        (folder / "poses" / f"{frame:05d}.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}]}))
    return folder


def module(root: Path, **options) -> VideoDataModule:
    return VideoDataModule(str(root), image_size=32, keep_aspect=False, flip_prob=0.0, scale_augmentation=0.0,
                           batch_size=2, num_workers=0, pin_memory=False, **options)


def test_pairs_stay_within_a_video_and_the_test_source_is_the_first_frame(tmp_path):
    write_video(tmp_path / "data/train/a", 3)
    write_video(tmp_path / "data/train/b", 2, poses="txt")
    write_video(tmp_path / "data/test/c", 4)
    data = module(tmp_path / "data")
    train = data.read_pairs("train")
    assert len(train) == 5
    for sample in train:
        video = sample.target.image_path.parent.parent
        assert {source.image_path.parent.parent for source in sample.sources} == {video}
    test = data.read_pairs("test")
    assert [sample.target.name for sample in test] == ["c/00001.png", "c/00002.png", "c/00003.png"]
    assert all(sample.sources[0].name == "c/00000.png" for sample in test)
    assert len(data.fid_reference_images("train")) == 5


def test_a_pose_window_holds_the_neighbouring_frames_poses(tmp_path):
    write_video(tmp_path / "data/test/c", 4)
    data = module(tmp_path / "data", pose_window=3)
    data.setup("test")
    item = data.datasets["test"][0]  # target frame 1, source frame 0
    assert item["target_pose"].shape == (60, 32, 32)
    for slot, frame in enumerate((0, 1, 2)):
        keypoints = frame_keypoints(frame) * [32 / SIZE[1], 32 / SIZE[0]]
        keypoints[frame_keypoints(frame)[:, 0] < 0] = -1
        expected = render_pose(keypoints, 32, 32, "official20", 6.0)
        assert torch.allclose(item["target_pose"][20 * slot : 20 * slot + 20], expected, atol=1e-5), slot
    last = data.datasets["test"][2]["target_pose"]  # frame 3: the window repeats it beyond the end
    assert torch.equal(last[20:40], last[40:60]) and not torch.equal(last[0:20], last[20:40])


def test_a_joint_missing_in_one_frame_is_filled_from_its_neighbours(tmp_path):
    write_video(tmp_path / "data/test/c", 3, missing=(1, 4))  # right wrist hidden in frame 1
    frames = module(tmp_path / "data").videos("test")[0]
    expected = (frame_keypoints(0)[4] + frame_keypoints(2)[4]) / 2
    assert np.allclose(frames[1].video_keypoints[1, 4], expected)


def test_mismatched_frames_and_poses_are_named(tmp_path):
    video = write_video(tmp_path / "data/test/c", 3)
    (video / "poses" / "00002.json").unlink()
    with pytest.raises(ValueError, match="frames and poses do not match one to one"):
        module(tmp_path / "data").videos("test")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        module(tmp_path / "data").videos("train")


def test_a_video_dataset_trains_with_a_pose_window_through_the_cli(tmp_path):
    from experiments.fit import main as fit

    repo = Path(__file__).resolve().parents[2]
    write_video(tmp_path / "data/train/a", 3)
    write_video(tmp_path / "data/test/b", 3)
    fit(["--config", str(repo / "configs/pidm/persons.yaml"), "--config", str(repo / "configs/debug/tiny_pidm.yaml"),
         "--data", "datamodules.video.VideoDataModule", f"--data.init_args.root={tmp_path / 'data'}",
         "--data.init_args.image_size=16", "--data.init_args.pose_window=3", "--data.init_args.num_workers=0",
         f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.max_steps=2"])
    checkpoint = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert (checkpoint["hyper_parameters"]["pose_channels"], checkpoint["hyper_parameters"]["pose_window"]) == (60, 3)


def test_the_test_split_can_be_restricted_to_some_videos_and_frames(tmp_path):
    for video in ("a", "b"):
        write_video(tmp_path / f"data/test/{video}", 5)
    data = module(tmp_path / "data", test_videos=["b"], test_frames=[2, 4])
    assert [sample.target.name for sample in data.read_pairs("test")] == ["b/00002.png", "b/00004.png"]
    assert data.fid_reference_images("test") == [tmp_path / f"data/test/b/frames/{i:05d}.png" for i in range(5)]
    with pytest.raises(ValueError, match=r"test_videos: \['c'\] are not videos"):
        module(tmp_path / "data", test_videos=["c"]).read_pairs("test")
    with pytest.raises(ValueError, match="a video has frames 0..4"):
        module(tmp_path / "data", test_frames=[5]).read_pairs("test")

"""SubjectDataModule: one person's photos with their txt poses, every ordered pair among them."""

from pathlib import Path

import pytest
import torch
from person_trees import skeleton, skeleton_photo, write_image

from datamodules.keypoints import save_keypoints_txt, to_txt_frame
from datamodules.subject import SubjectDataModule


def write_subject(root: Path, names: list[str], size: tuple[int, int] = (64, 44)) -> Path:
    for variant, name in enumerate(names):
        keypoints = skeleton(size, variant)
        write_image(root / f"{name}.jpg", skeleton_photo(keypoints, size))
        save_keypoints_txt(root / f"{name}.txt", to_txt_frame(keypoints, size))
    return root


def module(root: Path, **options) -> SubjectDataModule:
    return SubjectDataModule(str(root), image_size=32, batch_size=2, num_workers=0, pin_memory=False, **options)


def test_every_photo_is_a_target_with_all_the_others_as_sources(tmp_path):
    data = module(write_subject(tmp_path / "subject", ["front", "side", "back"]))
    pairs = data.read_pairs("train")
    assert [pair.target.name for pair in pairs] == ["back.jpg", "front.jpg", "side.jpg"]
    assert [[source.name for source in pair.sources] for pair in pairs] == [
        ["front.jpg", "side.jpg"], ["back.jpg", "side.jpg"], ["back.jpg", "front.jpg"]]
    data.prepare_data()
    data.setup("fit")
    item = data.datasets["test"][0]
    assert item["target_path"] == "back.jpg" and item["source_path"] == "front.jpg"
    assert item["target"].shape == (3, 32, 32) and item["target_pose"].shape == (20, 32, 32)
    assert torch.count_nonzero(item["target_pose"]) > 0


def test_one_photo_is_its_own_source(tmp_path):
    pairs = module(write_subject(tmp_path / "subject", ["only"])).read_pairs("train")
    assert len(pairs) == 1 and pairs[0].sources == (pairs[0].target,)


def test_a_photo_without_its_pose_and_too_many_photos_are_named(tmp_path):
    root = write_subject(tmp_path / "subject", ["front", "side"])
    (root / "side.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no pose file for side.jpg"):
        module(root).prepare_data()
    crowd = write_subject(tmp_path / "crowd", [f"p{index}" for index in range(11)])
    with pytest.raises(ValueError, match="holds 11 photos; subject fine-tuning takes at most 10"):
        module(crowd).prepare_data()
    with pytest.raises(FileNotFoundError, match="subject folder not found"):
        module(tmp_path / "nobody").prepare_data()

"""Joint horizontal flips of person samples, checked against the official pose rendering."""

from pathlib import Path

import numpy as np
import pytest
import torch
from official_fixtures import load_official_fixture
from person_trees import skeleton, write_image

from datamodules.keypoints import save_keypoints_txt, to_txt_frame
from datamodules.person_base import PairSample, PersonPairDataset, TxtPosedImage
from datamodules.pose_rendering import POSE_CHANNELS


def one_pair_dataset(
    root: Path, txt_keypoints: np.ndarray, image_size: tuple[int, int], flip_prob: float, encoding: str = "official20"
) -> PersonPairDataset:
    """A training dataset of one photo paired with itself, without scale augmentation."""
    rng = np.random.default_rng(0)
    image_path, pose_path = root / "img" / "person.png", root / "pose" / "person.txt"
    write_image(image_path, rng.integers(0, 256, (*image_size, 3), dtype=np.uint8))
    pose_path.parent.mkdir(parents=True, exist_ok=True)
    save_keypoints_txt(pose_path, txt_keypoints)
    posed = TxtPosedImage("img/person.png", image_path, pose_path)
    return PersonPairDataset(
        [PairSample(posed, (posed,))],
        image_size=image_size,
        pose_encoding=encoding,
        heatmap_sigma=2.0,
        train=True,
        both_directions=False,
        scale_augmentation=0.0,
        flip_prob=flip_prob,
    )


def test_flipped_pose_is_the_official_pose_mirrored_as_pixels(tmp_path: Path, fixtures_dir: Path) -> None:
    fixture = load_official_fixture(fixtures_dir / "pidm_official" / "pose.pt")
    official = fixture["pose_a"]
    image_size = tuple(fixture["image_size"].tolist())
    flipped = one_pair_dataset(tmp_path, fixture["keypoints_a"].numpy(), image_size, flip_prob=1.0)[0]
    assert torch.equal(flipped["target_pose"], torch.flip(official, dims=[-1]))
    assert torch.equal(flipped["source_pose"], torch.flip(official, dims=[-1]))


@pytest.mark.parametrize("encoding", sorted(POSE_CHANNELS))
def test_flip_mirrors_photo_and_rendered_pose_together(tmp_path: Path, encoding: str) -> None:
    image_size = (64, 44)
    txt_keypoints = to_txt_frame(skeleton(image_size, 1), image_size)
    plain = one_pair_dataset(tmp_path, txt_keypoints, image_size, flip_prob=0.0, encoding=encoding)[0]
    flipped = one_pair_dataset(tmp_path, txt_keypoints, image_size, flip_prob=1.0, encoding=encoding)[0]
    for key in ("source", "target", "source_pose", "target_pose"):
        assert torch.equal(flipped[key], plain[key].flip(-1)), key
    assert not torch.equal(flipped["target_pose"], plain["target_pose"])  # the skeleton is asymmetric

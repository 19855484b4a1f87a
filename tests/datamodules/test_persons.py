import json

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.deepfashion import read_gfla_pairs
from datamodules.keypoints import load_keypoints_txt, transform_keypoints
from datamodules.persons import (
    CANVAS_SIZE,
    PART_NAMES,
    PersonsDataModule,
    PersonsSpec,
    generate_persons,
    identity_appearance,
    parse_image_name,
)

SPEC = PersonsSpec(seed=3, num_identities=5, poses_per_identity=3, test_fraction=0.2)


def _files(root):
    return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_generation_is_deterministic_and_seeded(tmp_path):
    generate_persons(tmp_path / "a", SPEC)
    generate_persons(tmp_path / "b", SPEC)
    generate_persons(tmp_path / "c", PersonsSpec(4, 5, 3, 0.2))
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")
    photo = next(name for name in first if name.suffix == ".png")
    assert first[photo] != _files(tmp_path / "c")[photo]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["num_identities"] == 5 and manifest["version"] == 1
    assert len(list((tmp_path / "a" / "img").rglob("*.png"))) == 15
    assert {path.name for path in tmp_path.iterdir()} == {"a", "b", "c"}  # no staging folders left behind


def test_tree_layout_and_splits(tmp_path):
    root = tmp_path / "persons"
    generate_persons(root, SPEC)
    train, test = read_gfla_pairs(root, root / "train_pairs.txt"), read_gfla_pairs(root, root / "test_pairs.txt")
    assert len(train) == 12 and len(test) == 3
    assert all(len(sample.sources) == 2 for sample in train) and all(len(sample.sources) == 1 for sample in test)
    identities = lambda samples: {sample.target.name.split("/")[1] for sample in samples}  # noqa: E731
    assert identities(test) == {"id_00004"} and not identities(train) & identities(test)
    assert len((root / "train.lst").read_text().split()) == 12 and len((root / "test.lst").read_text().split()) == 3


def test_pose_txt_uses_the_official_frame(tmp_path):
    root = tmp_path / "persons"
    generate_persons(root, SPEC)
    keypoints = transform_keypoints(load_keypoints_txt(root / "pose/id_00000/00.txt"), CANVAS_SIZE)
    visible = keypoints[:, 0] != -1
    assert visible.sum() >= 12
    height, width = CANVAS_SIZE
    assert (keypoints[visible] >= 0).all() and (keypoints[visible, 0] < width).all()
    assert (keypoints[visible, 1] < height).all()
    # the neck sits on the body: a non-background pixel in the photo
    photo = np.asarray(Image.open(root / "img/id_00000/00.png")).astype(int)
    neck_x, neck_y = keypoints[1].astype(int)
    assert np.abs(photo[neck_y, neck_x] - photo[0, 0]).sum() > 30


def test_regeneration_with_other_arguments_is_refused(tmp_path):
    root = tmp_path / "persons"
    generate_persons(root, SPEC)
    generate_persons(root, SPEC)  # same arguments: nothing to do
    with pytest.raises(ValueError, match=r"manifest\.json.*num_identities: stored 5 != requested 6"):
        generate_persons(root, PersonsSpec(3, 6, 3, 0.2))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_persons(foreign, SPEC)


def test_datamodule_prepares_once_and_reads_back(tmp_path):
    options = dict(num_identities=5, poses_per_identity=3, test_fraction=0.2, seed=3, batch_size=4, num_workers=0,
                   pin_memory=False)
    module = PersonsDataModule(str(tmp_path / "persons"), image_size=32, **options)
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        module.setup("fit")
    module.prepare_data()
    module.setup("fit")
    assert len(module.datasets["train"]) == 24 and module.pose_channels == 20
    batch = next(iter(module.train_dataloader()))
    assert batch["source"].shape == (4, 3, 32, 32) and batch["target_pose"].shape == (4, 20, 32, 32)
    assert batch["source"].dtype == torch.float32 and -1 <= batch["source"].min() and batch["source"].max() <= 1
    other = PersonsDataModule(str(tmp_path / "persons"), image_size=32, **{**options, "seed": 4})
    with pytest.raises(ValueError, match="seed: stored 3 != requested 4"):
        other.prepare_data()


def test_invalid_spec_is_rejected():
    with pytest.raises(ValueError, match="num_identities >= 2"):
        PersonsSpec(0, 1, 3, 0.2)
    with pytest.raises(ValueError, match="test_fraction"):
        PersonsSpec(0, 5, 3, 1.5)


def test_evaluation_items_carry_target_part_labels_that_match_the_image(tmp_path):
    module = PersonsDataModule(str(tmp_path / "persons"), image_size=32, num_identities=5, poses_per_identity=3,
                               test_fraction=0.2, seed=3, batch_size=3, num_workers=0, pin_memory=False)
    module.prepare_data()
    module.setup("fit")
    assert "target_parts" not in module.datasets["train"][0]  # augmented training targets have no labels
    batch = next(iter(module.test_dataloader()))
    assert batch["target_parts"].shape == (3, 32, 32) and batch["target_parts"].dtype == torch.int64
    assert batch["target_identity"].tolist() == [4, 4, 4]
    look = identity_appearance(module.spec, 4)
    target = (batch["target"] + 1) * 127.5
    for index in range(3):
        labels = batch["target_parts"][index]
        assert set(labels.unique().tolist()) == set(range(len(PART_NAMES) + 1))  # every part visible at 32 px
        for label, part in enumerate(PART_NAMES, start=1):
            if part == "shirt" and look.stripes != "none":
                continue
            mean = target[index][:, labels == label].mean(dim=1)
            assert (mean - torch.tensor(getattr(look, part), dtype=torch.float32)).norm() < 35, part


def test_part_labels_need_a_persons_image_path():
    assert parse_image_name("img/id_00360/05.png") == (360, 5)
    with pytest.raises(ValueError, match="photo.jpg is not a persons image path"):
        parse_image_name("img/photo.jpg")


def test_a_pose_window_repeats_a_still_target_pose_on_channels(tmp_path):
    options = dict(image_size=16, num_identities=4, poses_per_identity=3, test_fraction=0.25, seed=3, batch_size=2,
                   num_workers=0, pin_memory=False)
    single = PersonsDataModule(str(tmp_path / "persons"), **options)
    window = PersonsDataModule(str(tmp_path / "persons"), pose_window=3, **options)
    for module in (single, window):
        module.prepare_data()
        module.setup("test")
    assert (single.pose_channels, window.pose_channels) == (20, 60)
    one, three = single.datasets["test"][0]["target_pose"], window.datasets["test"][0]["target_pose"]
    assert three.shape == (60, 16, 16) and torch.equal(three, one.repeat(3, 1, 1))
    with pytest.raises(ValueError, match="pose_window must be odd"):
        PersonsDataModule(str(tmp_path / "persons"), pose_window=2, **options)

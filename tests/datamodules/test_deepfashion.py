import numpy as np
import pytest
import torch
from person_trees import write_gfla_tree, write_patn_fashion_tree

from datamodules.deepfashion import DeepFashionDataModule, DeepFashionPATNDataModule


def _module(root, **kwargs):
    options = dict(image_size=32, batch_size=4, num_workers=0, pin_memory=False)
    options.update(kwargs)
    module = DeepFashionDataModule(str(root), **options)
    module.setup("fit")
    return module


def _check_batch(batch, batch_size, channels, size):
    for key in ("source", "target"):
        assert batch[key].shape == (batch_size, 3, *size) and batch[key].dtype == torch.float32
        assert batch[key].min() >= -1 and batch[key].max() <= 1
    for key in ("source_pose", "target_pose"):
        assert batch[key].shape == (batch_size, channels, *size) and batch[key].dtype == torch.float32
        assert batch[key].min() >= 0 and batch[key].max() <= 1
    assert all(isinstance(path, str) for path in batch["source_path"] + batch["target_path"])


@pytest.mark.parametrize(
    ("options", "channels", "size"),
    [({}, 20, (32, 32)), ({"keep_aspect": True}, 20, (32, 22)), ({"pose_encoding": "heatmap18"}, 18, (32, 32))],
)
def test_batches_have_the_contract_shapes(tmp_path, options, channels, size):
    module = _module(write_gfla_tree(tmp_path), **options)
    assert module.pose_channels == channels
    _check_batch(next(iter(module.train_dataloader())), 4, channels, size)
    _check_batch(next(iter(module.val_dataloader())), 1, channels, size)


def test_both_directions_double_training_samples_only(tmp_path):
    root = write_gfla_tree(tmp_path)
    doubled, single = _module(root), _module(root, both_directions=False)
    assert len(single.datasets["train"]) == 6 and len(doubled.datasets["train"]) == 12
    assert len(doubled.datasets["test"]) == len(single.datasets["test"]) == 1
    forward, backward = doubled.datasets["train"][0], doubled.datasets["train"][1]
    assert forward["target_path"] == backward["source_path"] == "img/WOMEN/Dresses/id_00000000/00_1_front.jpg"


def test_training_draws_listed_sources_and_test_uses_the_first(tmp_path):
    module = _module(write_gfla_tree(tmp_path), both_directions=False)
    torch.manual_seed(0)
    sources = {module.datasets["train"][0]["source_path"] for _ in range(30)}
    assert sources == {f"img/WOMEN/Dresses/id_00000000/0{view}_1_front.jpg" for view in (1, 2)}
    test = module.datasets["test"][0]
    assert (test["target_path"], test["source_path"]) == tuple(
        f"img/WOMEN/Dresses/id_00000002/0{view}_1_front.jpg" for view in (0, 1)
    )


def _mask(image_or_pose: torch.Tensor, threshold: float) -> torch.Tensor:
    return image_or_pose[:3].amax(dim=0) > threshold


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


def test_without_augmentation_pose_matches_the_photo_exactly(tmp_path):
    module = _module(write_gfla_tree(tmp_path, suffix=".png"), image_size=64, keep_aspect=True,
                     scale_augmentation=0.0, flip_prob=0.0)
    sample = module.datasets["train"][0]
    torch.testing.assert_close((sample["target"] + 1) / 2, sample["target_pose"][:3], atol=1 / 255, rtol=0)


@pytest.mark.parametrize("scale_augmentation", [0.0, 0.05])
def test_flip_keeps_image_and_pose_aligned(tmp_path, scale_augmentation):
    options = dict(image_size=64, keep_aspect=True, scale_augmentation=scale_augmentation, both_directions=False)
    root = write_gfla_tree(tmp_path, suffix=".png")
    plain = _module(root, flip_prob=0.0, **options).datasets["train"][0]
    torch.manual_seed(1)
    flipped = _module(root, flip_prob=1.0, **options).datasets["train"][0]
    for image_key, pose_key in (("source", "source_pose"), ("target", "target_pose")):
        image_mask, pose_mask = _mask(flipped[image_key], -0.9), _mask(flipped[pose_key], 0.05)
        assert _iou(image_mask, pose_mask) > 0.8
        assert _iou(image_mask, pose_mask.flip(-1)) < 0.5  # the test skeleton is asymmetric
    unflipped_pose = _mask(plain["target_pose"], 0.05)
    minimum_iou = 0.9 if scale_augmentation == 0 else 0.6
    assert _iou(_mask(flipped["target_pose"], 0.05), unflipped_pose.flip(-1)) > minimum_iou
    if scale_augmentation == 0:
        torch.testing.assert_close(flipped["target"], plain["target"].flip(-1))


def test_scale_augmentation_moves_pose_with_the_image(tmp_path):
    root = write_gfla_tree(tmp_path, suffix=".png")
    options = dict(image_size=64, keep_aspect=True, flip_prob=0.0, both_directions=False)
    unaugmented_pose = _mask(_module(root, scale_augmentation=0.0, **options).datasets["train"][0]["target_pose"], 0.05)
    dataset = _module(root, scale_augmentation=0.3, **options).datasets["train"]
    torch.manual_seed(0)
    samples = [dataset[0] for _ in range(6)]
    assert not torch.equal(samples[0]["target"], samples[1]["target"])
    for sample in samples:
        image_mask = _mask(sample["target"], -0.9)
        aligned = _iou(image_mask, _mask(sample["target_pose"], 0.05))
        assert aligned > 0.75 and aligned > _iou(image_mask, unaugmented_pose)


def test_image_list_reads_lst(tmp_path):
    module = _module(write_gfla_tree(tmp_path))
    assert [path.name for path in module.image_list("test")] == ["00_1_front.jpg", "01_1_front.jpg"]


def test_png_files_are_found_from_jpg_pair_entries(tmp_path):
    module = _module(write_gfla_tree(tmp_path, suffix=".png"))
    assert module.datasets["train"].samples[0].target.image_path.suffix == ".png"


def test_missing_image_names_the_pair_list(tmp_path):
    root = write_gfla_tree(tmp_path)
    (root / "img/WOMEN/Dresses/id_00000001/01_1_front.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_pairs\.txt.*id_00000001/01_1_front"):
        _module(root)


def test_missing_pose_names_the_pair_list(tmp_path):
    root = write_gfla_tree(tmp_path)
    (root / "pose/WOMEN/Dresses/id_00000002/01_1_front.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_pairs\.txt.*pose/WOMEN/Dresses/id_00000002/01_1_front\.txt"):
        _module(root)


def test_bad_pair_line_names_file_and_line(tmp_path):
    root = write_gfla_tree(tmp_path)
    (root / "test_pairs.txt").write_text("img/WOMEN/Dresses/id_00000002/00_1_front.jpg\n")
    with pytest.raises(ValueError, match=r"test_pairs\.txt:1"):
        _module(root)


def test_corrupt_image_and_wrong_keypoint_count_name_the_file(tmp_path):
    root = write_gfla_tree(tmp_path)
    module = _module(root, both_directions=False)
    target = module.datasets["test"].samples[0].target
    target.image_path.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=str(target.image_path)):
        module.datasets["test"][0]
    source = module.datasets["train"].samples[0].target
    np.savetxt(source.pose_path, np.zeros((17, 2)))
    with pytest.raises(ValueError, match=rf"{source.pose_path}.*\(17, 2\)"):
        module.datasets["train"][0]


def test_patn_layout_batches(tmp_path):
    module = DeepFashionPATNDataModule(str(write_patn_fashion_tree(tmp_path)), image_size=32, keep_aspect=True,
                                       batch_size=2, num_workers=0, pin_memory=False)
    module.setup("fit")
    assert len(module.datasets["train"]) == 6 and len(module.datasets["test"]) == 2
    _check_batch(next(iter(module.train_dataloader())), 2, 20, (32, 22))
    test = module.datasets["test"][0]
    assert (test["source_path"], test["target_path"]) == ("fashionMENid0side.jpg", "fashionMENid1side.jpg")

from pathlib import Path

import pytest
import torch

from datamodules.cityscapes import CityscapesDataModule
from trees import build_cityscapes_tree


def make_module(root: Path, **kwargs) -> CityscapesDataModule:
    return CityscapesDataModule(str(root), **({"image_size": (16, 32), "num_workers": 0, "pin_memory": False} | kwargs))


def test_defaults_match_spade_convention(tmp_path: Path) -> None:
    module = CityscapesDataModule(str(tmp_path))
    assert module.image_size == (256, 512)
    assert (module.num_classes, module.label_channels, module.has_instances) == (35, 36, True)
    assert module.class_names[26] == "car"


def test_adjacent_instances_of_one_class_keep_distinct_ids(tmp_path: Path) -> None:
    build_cityscapes_tree(tmp_path)
    module = make_module(tmp_path, batch_size=2)
    module.setup("fit")
    for batch in (next(iter(module.val_dataloader())), next(iter(module.train_dataloader()))):
        assert batch["image"].shape == (2, 3, 16, 32)
        instance, label = batch["instance"][0], batch["label"][0]
        assert instance.dtype == torch.int64 and {26001, 26002} <= set(instance.unique().tolist())
        cars = label == 26
        assert torch.equal(cars, instance > 26000)
        # the two cars touch: some horizontally adjacent pixels carry the two different ids
        pairs = {(a, b) for a, b in zip(instance[:, :-1].flatten().tolist(), instance[:, 1:].flatten().tolist())}
        assert (26001, 26002) in pairs or (26002, 26001) in pairs
        assert set(label.unique().tolist()) == {0, 7, 26}


def test_pairing_uses_city_and_frame(tmp_path: Path) -> None:
    build_cityscapes_tree(tmp_path)
    (tmp_path / "gtFine/val/lindau/lindau_000001_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(ValueError, match=r"lindau_000001_000019_leftImg8bit\.png has no matching instance"):
        make_module(tmp_path).setup("test")

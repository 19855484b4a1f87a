from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.cityscapes import CityscapesDataModule
from lightning_modules.conditioning import instance_edges
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


def car_boundary_edges(module: CityscapesDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance map and edge map of the first validation frame (evaluation: no flip, same size)."""
    module.setup("validate")
    instance = module.datasets["val"][0]["instance"]
    return instance, instance_edges(instance[None])[0, 0]


def test_16_bit_instances_separate_touching_cars(tmp_path: Path) -> None:
    build_cityscapes_tree(tmp_path)
    instance, edges = car_boundary_edges(make_module(tmp_path))
    assert set(instance.unique().tolist()) == {0, 7, 26001, 26002}
    assert edges[12, 7] == 1 and edges[12, 8] == 1  # where the two cars touch


def test_8_bit_instances_reproduce_the_official_pil_conversion(tmp_path: Path) -> None:
    build_cityscapes_tree(tmp_path)
    module = make_module(tmp_path, instance_bit_depth=8)
    instance, edges = car_boundary_edges(module)
    path = module.datasets["val"].samples[0].instance
    with Image.open(path) as official:
        assert torch.equal(instance, torch.from_numpy(np.array(official.convert("L"))).long())
    assert set(instance.unique().tolist()) == {0, 7, 255}
    assert edges[12, 7] == 0 and edges[12, 8] == 0  # both cars saturate to 255: no edge between them
    assert edges[7, 3] == 1 and edges[8, 3] == 1  # car/road boundary survives


def test_instance_bit_depth_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="instance_bit_depth must be 8 or 16, got 12"):
        make_module(tmp_path, instance_bit_depth=12)

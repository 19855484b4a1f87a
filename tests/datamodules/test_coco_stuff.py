from pathlib import Path

import torch

from datamodules.coco_stuff import COCOStuffDataModule
from trees import build_coco_stuff_tree


def make_module(root: Path, **kwargs) -> COCOStuffDataModule:
    return COCOStuffDataModule(str(root), **({"image_size": 16, "num_workers": 0, "pin_memory": False} | kwargs))


def test_unlabeled_becomes_class_182_and_instances_are_detected(tmp_path: Path) -> None:
    build_coco_stuff_tree(tmp_path)
    module = make_module(tmp_path, batch_size=2)
    assert (module.num_classes, module.label_channels, module.has_instances) == (183, 184, True)
    module.setup("test")
    batch = next(iter(module.test_dataloader()))
    labels = set(batch["label"].unique().tolist())
    assert 182 in labels and labels <= {0, 90, 181, 182}
    assert batch["instance"].shape == (2, 16, 16) and batch["instance"].dtype == torch.int64


def test_without_instance_folders(tmp_path: Path) -> None:
    build_coco_stuff_tree(tmp_path, instances=False)
    module = make_module(tmp_path)
    assert (module.label_channels, module.has_instances) == (183, False)
    module.setup("test")
    assert "instance" not in module.datasets["test"][0]

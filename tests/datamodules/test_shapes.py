import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.shapes import ShapesDataModule
from datamodules.shapes_render import render_layout

SIZES = dict(num_train=8, num_val=4, num_test=4)


def make_module(root: Path, **kwargs) -> ShapesDataModule:
    return ShapesDataModule(str(root), **(SIZES | {"num_workers": 0, "pin_memory": False} | kwargs))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    make_module(tmp_path / "a").prepare_data()
    make_module(tmp_path / "b").prepare_data()
    first = tree_bytes(tmp_path / "a")
    assert first == tree_bytes(tmp_path / "b")
    assert len(first) == 1 + 3 * 16
    assert json.loads(first["manifest.json"])["seed"] == 0
    make_module(tmp_path / "a").prepare_data()  # same arguments: nothing regenerated
    assert tree_bytes(tmp_path / "a") == first
    make_module(tmp_path / "c", seed=1).prepare_data()
    assert tree_bytes(tmp_path / "c") != first


def test_mismatched_regeneration_is_refused(tmp_path: Path) -> None:
    make_module(tmp_path).prepare_data()
    with pytest.raises(ValueError, match="pick another root or delete"):
        make_module(tmp_path, num_train=9).prepare_data()
    with pytest.raises(ValueError, match="pick another root or delete"):
        make_module(tmp_path, image_size=16).prepare_data()


def test_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a shapes dataset"):
        make_module(tmp_path).prepare_data()


def test_layouts_have_classes_and_touching_same_class_instances() -> None:
    rng = np.random.default_rng(0)
    classes, touching = set(), 0
    for _ in range(20):
        sample = render_layout(32, 32, rng)
        classes |= set(np.unique(sample.label).tolist())
        inst, label = sample.instance.astype(int), sample.label
        differ = (inst[:, 1:] != inst[:, :-1]) & (label[:, 1:] == label[:, :-1]) & (label[:, 1:] >= 4)
        touching += bool(differ.any())
    assert classes == {1, 2, 3, 4, 5, 6}
    assert touching >= 15


def test_batches_through_the_ade_loader(tmp_path: Path) -> None:
    module = make_module(tmp_path, batch_size=4)
    assert (module.num_classes, module.label_channels, module.class_names[-1]) == (7, 8, "other")
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert 0 <= batch["label"].min() and batch["label"].max() <= 5  # "other" (6) is never drawn
    assert batch["instance"].min() >= 1000
    module.setup("test")
    assert module.datasets["test"][0]["path"].endswith("images/test/shapes_test_000000.png")

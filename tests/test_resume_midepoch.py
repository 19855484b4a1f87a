"""Reproducible augmentations and resumable training loaders (the data side of exact resume).

The end-to-end SIGKILL + ``--ckpt_path last`` check with augmentations on lives in ``tests/test_resume.py``.
"""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.persons import PersonsDataModule
from datamodules.samplers import ResumableSampler, SampleKey
from datamodules.seeds import derived_seed
from datamodules.shapes import ShapesDataModule


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    ShapesDataModule(root=str(root), image_size=16, num_train=12, num_val=1, num_test=1).prepare_data()
    return root


@pytest.fixture(scope="module")
def persons_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "persons"
    PersonsDataModule(root=str(root), num_identities=3, poses_per_identity=4, test_fraction=0.3).prepare_data()
    return root


def _shapes(root: Path, num_workers: int) -> ShapesDataModule:
    # random_resized_crop + flip: every training sample is randomly scaled, cropped and flipped.
    module = ShapesDataModule(
        root=str(root), image_size=16, num_train=12, num_val=1, num_test=1, batch_size=3, num_workers=num_workers,
        pin_memory=False, persistent_workers=False, train_transform="random_resized_crop", flip=True,
        min_crop_fraction=0.5,
    )
    module.setup("fit")
    return module


def _persons(root: Path, num_workers: int) -> PersonsDataModule:
    module = PersonsDataModule(
        root=str(root), image_size=32, num_identities=3, poses_per_identity=4, test_fraction=0.3, batch_size=3,
        num_workers=num_workers, pin_memory=False, scale_augmentation=0.3, flip_prob=0.5,
    )
    module.setup("fit")
    return module


def _epochs(loader, epochs: int) -> list[dict]:
    batches = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
        batches += list(loader)
    return batches


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b):
        assert first.keys() == second.keys()
        for key in first:
            if isinstance(first[key], torch.Tensor):
                assert torch.equal(first[key], second[key]), key
            else:
                assert first[key] == second[key], key


@pytest.mark.parametrize("make", [_shapes, _persons], ids=["shapes", "persons"])
def test_same_seed_gives_the_same_augmented_batches_whatever_the_workers(make, shapes_root, persons_root):
    root = shapes_root if make is _shapes else persons_root
    pl.seed_everything(3)
    reference = _epochs(make(root, num_workers=0).train_dataloader(), epochs=2)
    pl.seed_everything(3)
    _assert_same_batches(reference, _epochs(make(root, num_workers=2).train_dataloader(), epochs=2))

    # The augmentations are really random: a sample looks different in another epoch and under another seed.
    dataset = make(root, num_workers=0).datasets["train"]
    first, next_epoch, other_seed = (
        dataset[SampleKey(0, derived_seed(seed, epoch, 0))] for seed, epoch in ((3, 0), (3, 1), (4, 0))
    )
    image = "image" if make is _shapes else "target"
    assert not torch.equal(first[image], next_epoch[image]) and not torch.equal(first[image], other_seed[image])
    pl.seed_everything(4)
    _assert_different(reference, _epochs(make(root, num_workers=0).train_dataloader(), epochs=2), image)


def _assert_different(a: list[dict], b: list[dict], key: str) -> None:
    assert not all(torch.equal(x[key], y[key]) for x, y in zip(a, b))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_restored_mid_epoch_serves_the_rest_of_the_epoch(shapes_root, num_workers):
    pl.seed_everything(0)
    straight = _shapes(shapes_root, num_workers).train_dataloader()
    straight.sampler.set_epoch(1)
    iterator = iter(straight)
    served = [next(iterator)]
    state = straight.state_dict()
    rest = list(iterator)
    assert len(rest) == 3

    resumed = _shapes(shapes_root, num_workers).train_dataloader()
    resumed.load_state_dict(state)
    _assert_same_batches(rest, list(resumed))
    assert served[0]["path"] not in [path for batch in rest for path in batch["path"]]


def test_a_position_past_the_epoch_end_restores_as_the_next_epoch():
    data = list(range(10))
    sampler = ResumableSampler(data, seed=5, epoch_samples=9)  # a batch size of 3 drops the tenth sample
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(key.index for key in full) == data
    assert full[0].seed == derived_seed(5, 2, full[0].index)

    sampler.load_state_dict({"epoch": 2, "yielded": 4})
    assert list(sampler) == full[4:]
    sampler.load_state_dict({"epoch": 1, "yielded": 9})
    assert sampler.epoch == 2 and list(sampler) == full
    # A restored position only holds for its epoch: if the trainer moves on, the new epoch starts from its beginning.
    sampler.load_state_dict({"epoch": 2, "yielded": 4})
    sampler.set_epoch(3)
    assert len(list(sampler)) == 10

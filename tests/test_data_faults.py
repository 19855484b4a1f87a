"""Corrupt samples: reported with their path; ``on_bad_sample`` stops (default) or skips them, never silently."""

import re
from pathlib import Path

import numpy as np
import pytest

from datamodules.persons import PersonsDataModule
from datamodules.bad_samples import BadSampleError, BadSampleWarning, GuardedDataset
from datamodules.samplers import SampleKey
from datamodules.shapes import ShapesDataModule


def _shapes(root: Path, **options) -> ShapesDataModule:
    module = ShapesDataModule(
        root=str(root), image_size=16, num_train=4, num_val=1, num_test=1, batch_size=2, num_workers=0,
        pin_memory=False, **options,
    )
    module.prepare_data()
    return module


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def shapes_with_truncated_png(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "shapes"
    _shapes(root)
    broken = sorted((root / "images/training").glob("*.png"))[1]
    _truncate(broken)
    return root, broken


def test_a_truncated_png_stops_training_by_default_naming_the_file(shapes_with_truncated_png):
    root, broken = shapes_with_truncated_png
    module = _shapes(root)
    module.setup("fit")
    with pytest.raises(BadSampleError, match=f"{re.escape(str(broken))}.*on_bad_sample='skip'"):
        list(module.train_dataloader())
    assert module.datasets["train"][0]["path"] != str(broken)  # the readable samples still load


def test_skip_warns_counts_and_substitutes_the_next_sample(shapes_with_truncated_png):
    root, broken = shapes_with_truncated_png
    module = _shapes(root, on_bad_sample="skip")
    module.setup("fit")
    dataset = module.datasets["train"]
    with pytest.warns(BadSampleWarning, match=re.escape(str(broken))):
        batches = list(module.train_dataloader())
    assert dataset.skipped_samples == 1
    assert [len(batch["path"]) for batch in batches] == [2, 2]  # batches keep their size
    paths = [path for batch in batches for path in batch["path"]]
    assert str(broken) not in paths
    # The replacement is the next sample in index order, augmented with the bad sample's seed: deterministic.
    key = SampleKey(1, seed=123)
    with pytest.warns(BadSampleWarning):
        replacement = dataset[key]
    assert replacement["path"] == str(dataset.samples[2].image)
    assert np.array_equal(replacement["image"].numpy(), dataset.load(2, 123)["image"].numpy())


def test_a_corrupt_pose_file_is_reported_or_skipped(tmp_path: Path):
    options = dict(root=str(tmp_path / "persons"), image_size=32, num_identities=3, poses_per_identity=2,
                   test_fraction=0.3, batch_size=2, num_workers=0, pin_memory=False)
    module = PersonsDataModule(**options)
    module.prepare_data()
    broken = sorted((tmp_path / "persons/pose").rglob("*.txt"))[0]
    broken.write_text("this is no keypoint list\n")

    module.setup("fit")
    with pytest.raises(BadSampleError, match=re.escape(str(broken))):
        list(module.train_dataloader())

    skipping = PersonsDataModule(**options, on_bad_sample="skip")
    skipping.setup("fit")
    with pytest.warns(BadSampleWarning, match=re.escape(str(broken))):
        batches = list(skipping.train_dataloader())
    assert skipping.datasets["train"].skipped_samples > 0
    assert all(len(batch["target_path"]) == 2 for batch in batches)


def test_skip_gives_up_when_no_sample_is_readable():
    class Unreadable(GuardedDataset):
        def __len__(self) -> int:
            return 3

        def describe(self, index: int) -> str:
            return f"file_{index}.png"

        def load(self, index: int, seed: int | None) -> dict:
            raise ValueError(f"cannot read image file file_{index}.png")

    with pytest.warns(BadSampleWarning, match="file_2.png"), pytest.raises(BadSampleError, match="all 3 samples"):
        Unreadable("skip")[0]
    with pytest.raises(ValueError, match="on_bad_sample must be 'stop' or 'skip', got 'ignore'"):
        Unreadable("ignore")  # type: ignore[arg-type]

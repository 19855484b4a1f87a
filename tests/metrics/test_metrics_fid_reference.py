"""The FID real images as the DataModules describe and serve them: which files, each once, unaugmented, and the
fingerprint that keys their cached statistics."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.person_base import PersonPairDataModule
from datamodules.persons import PersonsDataModule
from datamodules.shapes import ShapesDataModule


def persons(root, image_size=16) -> PersonsDataModule:
    """3 identities x 2 poses: 2 training identities (4 images), 1 test identity."""
    module = PersonsDataModule(str(root), image_size=image_size, num_identities=3, poses_per_identity=2,
                               batch_size=3, num_workers=0, pin_memory=False)
    module.prepare_data()
    return module


def test_person_reference_is_every_listed_training_image_once(tmp_path):
    module = persons(tmp_path / "persons")
    # The pair-list reference (PATN layouts): each image appears in the pairs as a target and as a source.
    paired = PersonPairDataModule.fid_reference_images(module, "train")
    assert [p.relative_to(module.root).as_posix() for p in paired] == [
        "img/id_00000/00.png", "img/id_00000/01.png", "img/id_00001/00.png", "img/id_00001/01.png"]
    unpaired = module.root / "img/id_00009/00.png"  # a training image that no pair uses
    unpaired.parent.mkdir()
    shutil.copy(paired[0], unpaired)
    with (module.root / "train.lst").open("a") as handle:
        handle.write("img/id_00009/00.png\n")
    assert module.fid_reference_images("train") == [*paired, unpaired]  # DeepFashion: the whole train.lst


def test_person_reference_loader_serves_each_image_unaugmented(tmp_path):
    module = persons(tmp_path / "persons")  # training pairs are flipped and scaled; the reference never is
    expected = module.fid_reference_images("train")
    passes = [list(module.fid_reference_dataloader("train")) for _ in range(2)]
    assert [path for batch in passes[0] for path in batch["path"]] == [str(path) for path in expected]
    images = torch.cat([batch["image"] for batch in passes[0]])
    torch.testing.assert_close(images, torch.cat([batch["image"] for batch in passes[1]]))
    for path, image in zip(expected, images, strict=True):
        photo = np.array(Image.open(path).convert("RGB").resize((16, 16), Image.BICUBIC))
        torch.testing.assert_close(image, torch.from_numpy(photo).permute(2, 0, 1).float() / 127.5 - 1)


def test_person_fingerprints_tell_roots_file_lists_and_sizes_apart(tmp_path):
    module = persons(tmp_path / "persons")
    train = module.fid_reference_fingerprint("train")
    assert train.count == 4 and train.image_size == (16, 16) and train.root == str(module.root.resolve())
    assert module.fid_reference_fingerprint("test").files_sha256 != train.files_sha256
    assert persons(tmp_path / "persons", image_size=32).fid_reference_fingerprint("train").image_size == (32, 32)
    shutil.copytree(module.root, tmp_path / "copy")
    copy = persons(tmp_path / "copy").fid_reference_fingerprint("train")
    assert copy != train and copy.root != train.root and copy.files_sha256 == train.files_sha256


def test_semantic_fingerprint_describes_a_role_split(tmp_path):
    module = ShapesDataModule(str(tmp_path / "shapes"), image_size=16, num_train=2, num_val=2, num_test=3,
                              num_workers=0, pin_memory=False)
    module.prepare_data()
    test = module.image_fingerprint("test")
    assert test.count == 3 and test.image_size == (16, 16)
    assert module.image_fingerprint("val").files_sha256 != test.files_sha256
    with pytest.raises(ValueError, match="unknown role 'validation'"):
        module.image_fingerprint("validation")

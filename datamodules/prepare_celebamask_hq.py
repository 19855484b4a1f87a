"""Merge CelebAMask-HQ's per-part masks into 19-class label maps and write a train/test split.

Usage: ``python -m datamodules.prepare_celebamask_hq RAW_ROOT OUT_ROOT [--split index|celeba_partition]
[--overwrite] [--image-format png]``

``RAW_ROOT`` is the extracted CelebAMask-HQ archive: ``CelebA-HQ-img/<i>.jpg`` (1024²),
``CelebAMask-HQ-mask-anno/<i // 2000>/<i:05d>_<part>.png`` (binary part masks, 512²) and
``CelebA-HQ-to-CelebA-mapping.txt``. Two splits:

- ``index`` (default): images 0..27,999 train and 28,000..29,999 test (28,000 / 2,000), the split of SEAN's
  released data that the semantic-synthesis works comparing with it use. It needs nothing beyond the archive.
- ``celeba_partition``: an image goes to ``train`` when its original CelebA image is in CelebA's training partition
  (original files 000001..162770) and to ``test`` otherwise (CelebA val + test). It also needs CelebA's
  ``list_eval_partition.txt`` in ``RAW_ROOT``.

Output: ``OUT_ROOT/<split>/images/<i>.<ext>`` resized to the mask size (area averaging) and
``OUT_ROOT/<split>/labels/<i>.png`` (uint8 class ids, order of :data:`CELEBAMASK_HQ_CLASS_NAMES`).
"""

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from datamodules.celebamask_hq import CELEBAMASK_HQ_CLASS_NAMES

MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "CelebA-HQ-img"
IMAGES_PER_MASK_FOLDER = 2000
FIRST_TEST_INDEX = 28000


def index_split(raw_root: Path) -> dict[int, str]:
    """Map each CelebA-HQ index found in ``CelebA-HQ-img/`` to ``"train"`` (below 28,000) or ``"test"``."""
    image_dir = raw_root / IMAGE_DIR
    indices = [int(path.stem) for path in image_dir.glob("*.jpg") if path.stem.isdigit()]
    if not indices:
        raise FileNotFoundError(f"no CelebA-HQ images <index>.jpg found in {image_dir}")
    return {index: "train" if index < FIRST_TEST_INDEX else "test" for index in indices}


def celeba_partition_split(raw_root: Path) -> dict[int, str]:
    """Map each CelebA-HQ index to ``"train"`` or ``"test"`` from the mapping and CelebA partition files."""
    for name in (MAPPING_FILE, PARTITION_FILE):
        if not (raw_root / name).is_file():
            raise FileNotFoundError(f"{raw_root / name} is missing; it is needed for the standard train/test split")
    partition: dict[str, int] = {}
    for line in (raw_root / PARTITION_FILE).read_text().split("\n"):
        if line.strip():
            file_name, part = line.split()
            partition[file_name] = int(part)
    split: dict[int, str] = {}
    for line_number, line in enumerate((raw_root / MAPPING_FILE).read_text().split("\n")[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2] not in partition:
            raise ValueError(f"{raw_root / MAPPING_FILE}:{line_number}: cannot resolve {line!r} in {PARTITION_FILE}")
        split[int(fields[0])] = "train" if partition[fields[2]] == 0 else "test"
    return split


SPLITS: dict[str, Callable[[Path], dict[int, str]]] = {
    "index": index_split,
    "celeba_partition": celeba_partition_split,
}


def merge_parts(mask_dir: Path, index: int) -> np.ndarray:
    """Merge the part masks of one image into a uint8 label map; later classes overwrite earlier ones."""
    label: np.ndarray | None = None
    for class_id, part in enumerate(CELEBAMASK_HQ_CLASS_NAMES[1:], start=1):
        path = mask_dir / f"{index:05d}_{part}.png"
        if not path.is_file():
            continue  # parts absent from a face (hat, glasses, ...) have no file
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ValueError(f"cannot read mask file {path}")
        if label is None:
            label = np.zeros(mask.shape, dtype=np.uint8)
        elif mask.shape != label.shape:
            raise ValueError(f"mask {path} has size {mask.shape}, other parts of image {index} have {label.shape}")
        label[mask > 0] = class_id
    if label is None:
        raise FileNotFoundError(f"no part masks for image {index} under {mask_dir}")
    return label


def prepare(
    raw_root: Path, out_root: Path, overwrite: bool = False, image_format: str = "jpg", split_rule: str = "index"
) -> dict[str, int]:
    """Convert the raw archive to ``OUT_ROOT/<split>/{images,labels}``; return the number of images per split.

    Args:
        raw_root: extracted CelebAMask-HQ archive.
        out_root: output folder.
        overwrite: replace existing output files.
        image_format: ``"jpg"`` or ``"png"``.
        split_rule: ``"index"`` (SEAN's 28,000 / 2,000) or ``"celeba_partition"`` (CelebA's partition file).

    Raises:
        FileExistsError: an output file exists and ``overwrite`` is false (checked before anything is written).
    """
    if split_rule not in SPLITS:
        raise ValueError(f"unknown split rule {split_rule!r}; choose one of {sorted(SPLITS)}")
    split = SPLITS[split_rule](raw_root)
    targets = {
        index: (
            out_root / name / "images" / f"{index}.{image_format}",
            out_root / name / "labels" / f"{index}.png",
        )
        for index, name in split.items()
    }
    if not overwrite:
        for paths in targets.values():
            for path in paths:
                if path.exists():
                    raise FileExistsError(f"{path} already exists; pass --overwrite to replace existing files")
    counts = {"train": 0, "test": 0}
    for index, (image_path, label_path) in sorted(targets.items()):
        label = merge_parts(raw_root / "CelebAMask-HQ-mask-anno" / str(index // IMAGES_PER_MASK_FOLDER), index)
        source = raw_root / IMAGE_DIR / f"{index}.jpg"
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image file {source} (missing or corrupt)")
        image = cv2.resize(image, label.shape[::-1], interpolation=cv2.INTER_AREA)
        for path, array in ((image_path, image), (label_path, label)):
            path.parent.mkdir(parents=True, exist_ok=True)
            params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
            if not cv2.imwrite(str(path), array, params):
                raise OSError(f"could not write {path}")
        counts[split[index]] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_root", type=Path, help="extracted CelebAMask-HQ folder")
    parser.add_argument("out_root", type=Path, help="output folder for <split>/{images,labels}")
    parser.add_argument(
        "--split",
        choices=sorted(SPLITS),
        default="index",
        help="index: images 0-27,999 train, 28,000-29,999 test (SEAN's split, default); celeba_partition: CelebA's "
        "train partition vs val+test (needs list_eval_partition.txt in RAW_ROOT)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg", help="output image format")
    args = parser.parse_args(argv)
    counts = prepare(
        args.raw_root, args.out_root, overwrite=args.overwrite, image_format=args.image_format, split_rule=args.split
    )
    print(f"wrote {counts['train']} train and {counts['test']} test pairs to {args.out_root}")


if __name__ == "__main__":
    main()

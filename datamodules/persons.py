"""Built-in synthetic "persons": stick-figure people with identity-specific clothing, in the DeepFashion GFLA layout.

Each identity has a skin tone, hair colour and style, a shirt (colour, plain or striped, short or long sleeves),
trousers or shorts and shoes; each of its images shows it in a random pose on a light plain background. The tree is
written once by :func:`generate_persons` (``img/id_XXXXX/NN.png`` at 128x88, ``pose/id_XXXXX/NN.txt`` in the official
256-frame with the 40-pixel x offset, ``{train,test}_pairs.txt``, ``{train,test}.lst``, ``manifest.json``) and read
back by :class:`PersonsDataModule` through the same code as real DeepFashion. Its evaluation batches also carry each
target's body-part labels and identity (:class:`PartLabelledPairDataset`), which the appearance-transfer metric
(:mod:`lightning_modules.metrics.appearance`) scores generated images with.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from datamodules.builtin_data import check_generated, generate_once
from datamodules.deepfashion import DeepFashionDataModule
from datamodules.image_files import write_png
from datamodules.keypoints import MISSING, save_keypoints_txt, to_txt_frame
from datamodules.person_base import PairSample, PersonPairDataset, Split

CANVAS_SIZE = (128, 88)  # (H, W): the 256x176 DeepFashion aspect at half scale
GENERATOR_VERSION = 1

_SKIN_TONES = ((255, 224, 196), (234, 192, 134), (198, 134, 66), (141, 85, 36), (95, 60, 35))
_HAIR_COLOURS = ((30, 25, 20), (100, 60, 30), (220, 190, 110), (170, 70, 30), (165, 165, 165))
_STRIPE_COLOURS = ((250, 250, 250), (20, 20, 20), (230, 200, 40))
_IMAGE_NAME = re.compile(r"id_(\d+)/(\d+)\.png$")

#: Body parts with one identity-specific colour each (labels 1..5 of :func:`part_labels`).
PART_NAMES = ("skin", "hair", "shirt", "trousers", "shoes")
# Corners of the RGB cube: anti-aliasing blends (convex combinations) of them and the black background never equal
# one of them exactly, so an exact match marks a pixel painted by that part alone.
_PART_CODES = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255))


@dataclass(frozen=True)
class PersonsSpec:
    """Everything that determines a generated persons tree (stored in its manifest)."""

    seed: int
    num_identities: int
    poses_per_identity: int
    test_fraction: float
    canvas_size: tuple[int, int] = CANVAS_SIZE
    version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        if self.num_identities < 2 or self.poses_per_identity < 2:
            raise ValueError("persons needs num_identities >= 2 and poses_per_identity >= 2 to form train/test pairs")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")

    @property
    def num_test_identities(self) -> int:
        return min(self.num_identities - 1, max(1, round(self.test_fraction * self.num_identities)))


@dataclass(frozen=True)
class Appearance:
    """Identity-specific colours and clothing style (RGB uint8 triples)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    shirt: tuple[int, int, int]
    stripes: str  # "none", "horizontal" or "vertical"
    stripe_colour: tuple[int, int, int]
    stripe_period: int
    long_sleeves: bool
    trousers: tuple[int, int, int]
    shorts: bool
    shoes: tuple[int, int, int]


def _saturated_colour(rng: np.random.Generator, value_range: tuple[float, float]) -> tuple[int, int, int]:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(150, 255), rng.uniform(*value_range)]]], dtype=np.float32)
    return tuple(int(c) for c in cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0])


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Draw one identity's appearance."""
    skin = np.clip(np.array(_SKIN_TONES[rng.integers(len(_SKIN_TONES))]) + rng.integers(-12, 13, 3), 0, 255)
    return Appearance(
        skin=tuple(int(c) for c in skin),
        hair=_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))],
        long_hair=bool(rng.random() < 0.4),
        shirt=_saturated_colour(rng, (120, 255)),
        stripes=("none", "horizontal", "vertical")[rng.integers(3)],
        stripe_colour=_STRIPE_COLOURS[rng.integers(len(_STRIPE_COLOURS))],
        stripe_period=int(rng.integers(10, 17)),
        long_sleeves=bool(rng.random() < 0.5),
        trousers=_saturated_colour(rng, (40, 160)),
        shorts=bool(rng.random() < 0.3),
        shoes=tuple(int(c) for c in rng.integers(10, 90, 3)),
    )


def _polar(origin: np.ndarray, length: float, degrees_from_down: float) -> np.ndarray:
    angle = math.radians(degrees_from_down)
    return origin + length * np.array([math.sin(angle), math.cos(angle)])


def random_pose(rng: np.random.Generator, canvas_size: tuple[int, int] = CANVAS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw a COCO-18 skeleton on the canvas; returns all joints (for drawing) and the annotation (some -1)."""
    height, width = canvas_size
    s = rng.uniform(0.85, 1.0) * height / 128
    facing = rng.uniform(0.55, 1.0)  # < 1 narrows the body, as if turned
    joints = np.zeros((18, 2))
    joints[1] = (width / 2 + rng.uniform(-6, 6) * s, rng.uniform(24, 30) * s)  # neck
    yaw = int(rng.integers(-1, 2))  # -1 / 1: profile to one side, 0: frontal
    joints[0] = joints[1] + (3 * yaw * s, -11 * s)  # nose
    for side, (shoulder, elbow, wrist, hip, knee, ankle, eye, ear) in ((-1, (2, 3, 4, 8, 9, 10, 14, 16)),
                                                                        (1, (5, 6, 7, 11, 12, 13, 15, 17))):
        # The person's right side appears on the image's left.
        joints[shoulder] = joints[1] + (side * 11 * s * facing, 2 * s)
        upper = rng.uniform(-10, 110)
        joints[elbow] = _polar(joints[shoulder], 16 * s, side * upper)
        joints[wrist] = _polar(joints[elbow], 14 * s, side * (upper + rng.uniform(-20, 100)))
        joints[hip] = joints[1] + (side * 6 * s * facing, 36 * s)
        thigh = rng.uniform(-8, 30)
        joints[knee] = _polar(joints[hip], 21 * s, side * thigh)
        joints[ankle] = _polar(joints[knee], 20 * s, side * (thigh + rng.uniform(-25, 15)))
        joints[eye] = joints[0] + (side * 3 * s, -2 * s)
        joints[ear] = joints[0] + ((side * 6 - 2 * yaw) * s, -1 * s)
    joints[:, 0] = np.clip(joints[:, 0], 1, width - 2)
    joints[:, 1] = np.clip(joints[:, 1], 1, height - 2)
    annotation = np.round(joints, 2)
    hidden = [15, 17] if yaw < 0 else [14, 16] if yaw > 0 else []  # the far eye and ear of a profile
    hidden += [j for j in (3, 4, 6, 7, 10, 13) if rng.random() < 0.05]  # occasional detector misses
    annotation[hidden] = MISSING
    return joints, annotation


def _line(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, colour, thickness: float) -> None:
    cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), colour, max(1, round(thickness)), cv2.LINE_AA)


def draw_person(joints: np.ndarray, look: Appearance, background: tuple[int, int, int],
                canvas_size: tuple[int, int] = CANVAS_SIZE) -> np.ndarray:
    """Paint one person (uint8 RGB ``canvas_size``) from its full skeleton."""
    height, width = canvas_size
    s = height / 128
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = background
    head = joints[0] + (0, -2 * s)
    if look.long_hair:
        cv2.rectangle(canvas, tuple(int(v) for v in head - (8 * s, 0)), tuple(int(v) for v in head + (8 * s, 14 * s)),
                      look.hair, -1, cv2.LINE_AA)
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        _line(canvas, joints[hip], joints[knee], look.trousers, 9 * s)
        _line(canvas, joints[knee], joints[ankle], look.skin if look.shorts else look.trousers, 8 * s)
        cv2.circle(canvas, tuple(int(v) for v in joints[ankle]), round(4 * s), look.shoes, -1, cv2.LINE_AA)
    torso = np.array([joints[2], joints[5], joints[11] + (2 * s, 0), joints[8] - (2 * s, 0)]).astype(np.int32)
    torso_mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(torso_mask, torso, 255, cv2.LINE_AA)
    shirt = np.empty_like(canvas)
    shirt[:] = look.shirt
    if look.stripes != "none":
        rows, columns = np.indices((height, width))
        coordinate = rows if look.stripes == "horizontal" else columns
        shirt[coordinate % look.stripe_period < look.stripe_period // 2] = look.stripe_colour
    alpha = torso_mask[..., None].astype(np.float32) / 255
    canvas[:] = np.round(alpha * shirt + (1 - alpha) * canvas).astype(np.uint8)
    for shoulder, elbow, wrist in ((2, 3, 4), (5, 6, 7)):
        _line(canvas, joints[shoulder], joints[elbow], look.shirt, 7 * s)
        _line(canvas, joints[elbow], joints[wrist], look.shirt if look.long_sleeves else look.skin, 6 * s)
        cv2.circle(canvas, tuple(int(v) for v in joints[wrist]), round(3 * s), look.skin, -1, cv2.LINE_AA)
    _line(canvas, joints[1], head, look.skin, 5 * s)
    centre, radius = tuple(int(v) for v in head), round(7 * s)
    cv2.circle(canvas, centre, radius, look.skin, -1, cv2.LINE_AA)
    cv2.ellipse(canvas, centre, (radius + 1, radius + 1), 0, 180, 360, look.hair, -1, cv2.LINE_AA)
    return canvas


def identity_appearance(spec: PersonsSpec, identity: int) -> Appearance:
    """The appearance of person ``identity`` in the tree of ``spec``."""
    return random_appearance(np.random.default_rng([spec.seed, identity]))


def image_scene(
    spec: PersonsSpec, identity: int, pose_index: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The full skeleton, the keypoint annotation and the background colour of one image of the tree."""
    rng = np.random.default_rng([spec.seed, identity, pose_index + 1])
    joints, annotation = random_pose(rng, spec.canvas_size)
    background = tuple(int(c) for c in rng.integers(205, 256, 3))
    return joints, annotation, background


def image_name(identity: int, pose_index: int) -> str:
    """The tree's name of one image, without folder and suffix (``id_00360/05``)."""
    return f"id_{identity:05d}/{pose_index:02d}"


def parse_image_name(path: str) -> tuple[int, int]:
    """``(identity, pose_index)`` of an image path of the tree (``.../id_00360/05.png``)."""
    match = _IMAGE_NAME.search(path)
    if match is None:
        raise ValueError(f"{path} is not a persons image path (expected .../id_NNNNN/NN.png)")
    return int(match[1]), int(match[2])


def part_labels(spec: PersonsSpec, identity: int, pose_index: int, size: tuple[int, int],
                purity: float = 0.9) -> np.ndarray:
    """Body-part labels of one image at ``size`` ``(H, W)``: ``1 + PART_NAMES.index(part)``, 0 elsewhere.

    The person is redrawn with one flat code colour per part on the full canvas; a pixel of the resized map gets a
    part's label only if at least ``purity`` of its canvas area has that part, so anti-aliased borders and
    stripes mixing two colours at the target size stay unlabelled.
    """
    joints, _, _ = image_scene(spec, identity, pose_index)
    return skeleton_part_labels(joints, identity_appearance(spec, identity), spec.canvas_size, size, purity)


def skeleton_part_labels(joints: np.ndarray, look: Appearance, canvas_size: tuple[int, int], size: tuple[int, int],
                         purity: float = 0.9) -> np.ndarray:
    """:func:`part_labels` of the person ``look`` drawn on the full skeleton ``joints`` (e.g. a video frame's)."""
    coded = replace(look, stripes="none", **dict(zip(PART_NAMES, _PART_CODES, strict=True)))
    canvas = draw_person(joints, coded, (0, 0, 0), canvas_size)
    height, width = size
    labels = np.zeros(size, dtype=np.int64)
    for label, code in enumerate(_PART_CODES, start=1):
        exact = np.all(canvas == code, axis=-1).astype(np.float32)
        share = cv2.resize(exact, (width, height), interpolation=cv2.INTER_AREA)
        labels[share >= purity] = label
    return labels


def _write_tree(root: Path, spec: PersonsSpec) -> None:
    lines: dict[str, list[str]] = {"train_pairs": [], "test_pairs": [], "train": [], "test": []}
    first_test = spec.num_identities - spec.num_test_identities
    for identity in range(spec.num_identities):
        look = identity_appearance(spec, identity)
        names = []
        for pose_index in range(spec.poses_per_identity):
            joints, annotation, background = image_scene(spec, identity, pose_index)
            name = image_name(identity, pose_index)
            (root / "pose" / name).parent.mkdir(parents=True, exist_ok=True)
            write_png(root / "img" / f"{name}.png", draw_person(joints, look, background, spec.canvas_size))
            save_keypoints_txt(root / "pose" / f"{name}.txt", to_txt_frame(annotation, spec.canvas_size))
            names.append(f"img/{name}.png")
        split = "test" if identity >= first_test else "train"
        lines[split] += names
        if split == "train":  # every image is a target once, with the identity's other images as sources
            lines["train_pairs"] += [",".join([n] + [m for m in names if m != n]) for n in names]
        else:
            lines["test_pairs"] += [f"{n},{names[(i + 1) % len(names)]}" for i, n in enumerate(names)]
    for stem, content in lines.items():
        suffix = ".txt" if stem.endswith("pairs") else ".lst"
        (root / f"{stem}{suffix}").write_text("\n".join(content) + "\n")


def generate_persons(root: str | Path, spec: PersonsSpec) -> bool:
    """Write the persons tree for ``spec`` into ``root`` once; returns False when the same tree is already there."""
    return generate_once(root, asdict(spec), partial(_write_tree, spec=spec), "persons")


class PartLabelledPairDataset(PersonPairDataset):
    """Evaluation pairs of a persons tree, each with its target's body parts and identity.

    Adds ``target_parts`` (``(H, W)`` int64 labels of :func:`part_labels`) and ``target_identity`` (int64) to every
    item, for the appearance-transfer metric. Evaluation items are not augmented, so the labels line up with the
    target image.

    Args:
        spec: the generation arguments of the tree.
        samples: pair lines to draw from.
        **kwargs: the remaining options of :class:`PersonPairDataset` (with ``train=False``).
    """

    def __init__(self, spec: PersonsSpec, samples: list[PairSample], **kwargs: Any) -> None:
        super().__init__(samples, **kwargs)
        if self.train:
            raise ValueError("PartLabelledPairDataset serves evaluation pairs only (train=False): augmentation would "
                             "move the target away from its part labels")
        self.spec = spec

    def load(self, index: int, seed: int | None) -> dict[str, Any]:
        item = super().load(index, seed)
        identity, pose_index = parse_image_name(item["target_path"])
        item["target_parts"] = torch.from_numpy(part_labels(self.spec, identity, pose_index, self.image_size))
        item["target_identity"] = torch.tensor(identity)
        return item


class PersonsDataModule(DeepFashionDataModule):
    """Synthetic stick-figure persons, generated once into ``root`` and read as DeepFashion.

    Args:
        root: folder of the generated tree.
        image_size: side of the square training images (32 or 64 suit a CPU).
        num_identities: number of people; the last ``test_fraction`` of them form the test split.
        poses_per_identity: images (poses) per person.
        test_fraction: share of identities held out for testing.
        seed: generation seed; the tree is a pure function of the generation arguments.
        **kwargs: the remaining options of ``PersonPairDataModule`` (batch size, pose encoding, augmentation, ...).
    """

    def __init__(
        self,
        root: str = "data/persons",
        image_size: int = 32,
        num_identities: int = 400,
        poses_per_identity: int = 6,
        test_fraction: float = 0.1,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, image_size=image_size, **kwargs)
        self.spec = PersonsSpec(seed, num_identities, poses_per_identity, test_fraction)

    def prepare_data(self) -> None:
        generate_persons(self.root, self.spec)

    def setup(self, stage: str | None = None) -> None:
        if not check_generated(self.root, asdict(self.spec), "persons"):
            raise FileNotFoundError(f"{self.root} has no persons data yet; call prepare_data() first")
        super().setup(stage)

    def make_dataset(self, split: Split) -> PersonPairDataset:
        """DeepFashion's datasets; the evaluation split also carries part labels and identities."""
        if split == "train":
            return super().make_dataset(split)
        return PartLabelledPairDataset(self.spec, self.read_pairs(split), **self.dataset_options(split))

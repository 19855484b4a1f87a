"""Label maps as the SDM page shows and paints them: raw dataset ids <-> class ids <-> palette colours.

The page paints on an enlarged copy of the map (``scale`` screen pixels per label pixel); a painting is read back by
giving each screen pixel the class of its nearest palette colour (brush edges are anti-aliased) and each label pixel
the majority class of its block.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datamodules.shapes_render import render_layout
from experiments.demo.jobs import DemoInputError

CANVAS_PIXELS = 320  # the painting canvas is enlarged by an integer factor to at least this long side


def enlarged(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` (H, W[, C]) with every pixel repeated ``scale`` times down and across (shown as pixels)."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


@dataclass(frozen=True)
class LabelCodec:
    """What an SDM model's label maps mean and how the page draws them.

    Attributes:
        num_classes: Classes of the model (one-hot channels without the instance-edge channel).
        size: ``(H, W)`` of the maps the model was trained on.
        palette: ``(num_classes, 3)`` uint8 colours.
        class_names: One name per class (``class k`` where the dataset names none).
        raw_lut: Class id of every raw file value (-1: none), or None when files hold class ids.
    """

    num_classes: int
    size: tuple[int, int]
    palette: np.ndarray
    class_names: tuple[str, ...]
    raw_lut: np.ndarray | None = None

    @property
    def scale(self) -> int:
        """Screen pixels per label pixel on the painting canvas."""
        return max(1, -(-CANVAS_PIXELS // max(self.size)))

    def hex_colours(self) -> list[str]:
        """The palette as ``#rrggbb`` strings (the brush colours)."""
        return ["#{:02x}{:02x}{:02x}".format(*colour) for colour in self.palette.tolist()]

    def legend(self) -> str:
        """Markdown list of every class with its colour, as the brush offers them."""
        return "\n".join(f"- <span style='color:{hex_colour}'>&#9632;</span> {k}: {name} ({hex_colour})"
                         for k, (name, hex_colour) in enumerate(zip(self.class_names, self.hex_colours())))

    def to_classes(self, raw: np.ndarray, source: str) -> np.ndarray:
        """Raw file ids (H, W) of ``source`` as class ids; wrong sizes and ids that are no class are errors."""
        if raw.ndim != 2:
            raise DemoInputError(f"{source}: a label map has one channel of ids, got shape {raw.shape}")
        if tuple(raw.shape) != self.size:
            raise DemoInputError(f"{source} is {raw.shape[0]}x{raw.shape[1]}; this model takes "
                                 f"{self.size[0]}x{self.size[1]} label maps")
        if self.raw_lut is None:
            classes = raw.astype(np.int64)
            invalid = (classes < 0) | (classes >= self.num_classes)
        else:
            inside = (raw >= 0) & (raw < len(self.raw_lut))
            classes = np.where(inside, self.raw_lut[np.clip(raw, 0, len(self.raw_lut) - 1)], -1)
            invalid = classes < 0
        if invalid.any():
            values = np.unique(raw[invalid])
            valid = self.raw_ids()
            raise DemoInputError(f"{source} holds ids {values[:10].tolist()}{' ...' if len(values) > 10 else ''} that "
                                 f"are no class of this model; valid ids are {valid.tolist()} (raw dataset ids)")
        return classes

    def raw_ids(self) -> np.ndarray:
        """The raw file id written for each class (the smallest one the dataset maps to it)."""
        if self.raw_lut is None:
            return np.arange(self.num_classes)
        ids = np.full(self.num_classes, -1, dtype=np.int64)
        raws = np.nonzero(self.raw_lut >= 0)[0]
        classes, first = np.unique(self.raw_lut[raws], return_index=True)  # raws ascend: first = smallest raw id
        ids[classes] = raws[first]
        return ids

    def to_raw(self, classes: np.ndarray) -> np.ndarray:
        """Class ids (H, W) as the raw ids a label PNG holds (uint8, or uint16 above 255)."""
        raw = self.raw_ids()[classes]
        if (raw < 0).any():
            missing = sorted(set(classes[raw < 0].tolist()))
            raise DemoInputError(f"classes {missing} have no raw id in this dataset's label files")
        return raw.astype(np.uint8 if raw.max(initial=0) < 256 else np.uint16)

    def colourise(self, classes: np.ndarray) -> np.ndarray:
        """Class ids (H, W) as the enlarged RGB canvas (H·scale, W·scale, 3)."""
        return enlarged(self.palette[classes], self.scale)

    def from_painting(self, painting: np.ndarray) -> np.ndarray:
        """Class ids (H, W) of an RGB(A) painting of the enlarged canvas (any size is resized to it first)."""
        rgb = np.asarray(painting)[..., :3].astype(np.float32)
        height, width = self.size[0] * self.scale, self.size[1] * self.scale
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)
        distances = ((rgb[:, :, None, :] - self.palette[None, None].astype(np.float32)) ** 2).sum(-1)
        nearest = distances.argmin(-1)
        if self.scale == 1:
            return nearest
        blocks = nearest.reshape(self.size[0], self.scale, self.size[1], self.scale).transpose(0, 2, 1, 3)
        counts = np.eye(self.num_classes, dtype=np.int32)[blocks.reshape(*self.size, -1)].sum(2)
        return counts.argmax(-1)


def builtin_layout(codec: LabelCodec, shapes_data: bool) -> np.ndarray:
    """A label map to start painting from when no dataset is reachable: a generated shapes layout for models of the
    built-in shapes data, else bands of the classes named sky / ground-like (classes 0 and 1 when unnamed)."""
    height, width = codec.size
    if shapes_data:
        raw = render_layout(height, width, np.random.default_rng(0)).label.astype(np.int64)
        return codec.to_classes(raw, "the built-in shapes layout")
    names = [name.lower() for name in codec.class_names]

    def named(candidates: tuple[str, ...], fallback: int) -> int:
        return next((names.index(name) for name in candidates if name in names), fallback)

    top = named(("sky",), 0)
    bottom = named(("road", "ground", "grass", "floor", "earth", "skin", "background"), min(1, codec.num_classes - 1))
    classes = np.full(codec.size, bottom, dtype=np.int64)
    classes[: height // 2] = top
    return classes

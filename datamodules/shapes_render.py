"""Procedural semantic layouts and matching images for the built-in ``shapes`` dataset.

Label files follow the ADE20K convention: file id 0 is "other" (never drawn), ids 1..6 are the classes below.
Instance ids are ``file_id * 1000`` for the background regions and ``file_id * 1000 + k`` (k >= 1) for the k-th
object of a class, so touching objects of one class differ by a few units and every id exceeds 8 bits.
"""

from dataclasses import dataclass

import numpy as np

SKY, GROUND, WATER, DISC, SQUARE, TRIANGLE = 1, 2, 3, 4, 5, 6
SHAPES_CLASS_NAMES = ("sky", "ground", "water", "disc", "square", "triangle", "other")
OBJECT_CLASSES = (DISC, SQUARE, TRIANGLE)

# Base RGB colour (0..1) of each file id.
BASE_COLOURS = {
    SKY: (0.35, 0.55, 0.92),
    GROUND: (0.32, 0.55, 0.20),
    WATER: (0.10, 0.30, 0.62),
    DISC: (0.88, 0.22, 0.15),
    SQUARE: (0.95, 0.80, 0.20),
    TRIANGLE: (0.58, 0.25, 0.72),
}


@dataclass
class ShapesSample:
    """One rendered layout: uint8 RGB image (H, W, 3), uint8 label file ids and uint16 instance ids (H, W)."""

    image: np.ndarray
    label: np.ndarray
    instance: np.ndarray


def _object_mask(kind: int, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    if kind == DISC:
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2
    if kind == SQUARE:
        return (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    # Upward triangle: apex at (cx, cy - r), base of half-width 1.2 r at cy + r.
    return (ys <= cy + r) & (np.abs(xs - cx) <= 0.6 * (ys - cy + r))


def _jittered(kind: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.asarray(BASE_COLOURS[kind]) * (1.0 + rng.normal(0.0, 0.12, 3)), 0.0, 1.0)


def _paint_object(
    canvas: np.ndarray,
    mask: np.ndarray,
    kind: int,
    grid: tuple[np.ndarray, np.ndarray],
    centre: tuple[float, float],
    r: float,
    rng: np.random.Generator,
) -> None:
    (xs, ys), (cx, cy) = grid, centre
    colour = _jittered(kind, rng)
    if kind == DISC:  # radial shading
        shade = 1.0 - 0.45 * ((xs - cx) ** 2 + (ys - cy) ** 2) / r**2
    elif kind == SQUARE:  # diagonal stripes with a random period
        shade = 0.8 + 0.2 * np.sign(np.sin((xs + ys) * np.pi / rng.uniform(1.5, 3.0)))
    else:  # vertical gradient
        shade = 0.6 + 0.4 * (ys - (cy - r)) / (2 * r)
    canvas[mask] = (shade[..., None] * colour)[mask]


def _paint_background(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    label = np.full((height, width), GROUND, dtype=np.uint8)
    horizon = height * rng.uniform(0.25, 0.5) + height * 0.06 * np.sin(
        2 * np.pi * xs / (width * rng.uniform(0.5, 1.5)) + rng.uniform(0, 2 * np.pi)
    )
    label[ys < horizon] = SKY
    if rng.random() < 0.7:
        top = horizon + height * rng.uniform(0.1, 0.3)
        top = top + height * 0.04 * np.sin(2 * np.pi * xs / (width * rng.uniform(0.3, 0.8)) + rng.uniform(0, 6.3))
        label[(ys >= top) & (ys < top + height * rng.uniform(0.12, 0.3))] = WATER

    canvas = np.zeros((height, width, 3))
    sky = _jittered(SKY, rng)
    canvas[label == SKY] = (sky * (0.8 + 0.35 * ys / height)[..., None]).clip(0, 1)[label == SKY]
    ground = _jittered(GROUND, rng)
    texture = 0.85 + 0.15 * np.sin(xs * rng.uniform(0.8, 1.6)) * np.cos(ys * rng.uniform(0.8, 1.6))
    canvas[label == GROUND] = (texture[..., None] * ground)[label == GROUND]
    water = _jittered(WATER, rng)
    waves = 0.8 + 0.2 * np.sin(ys * rng.uniform(1.5, 2.5) + 0.3 * np.sin(xs))
    canvas[label == WATER] = (waves[..., None] * water)[label == WATER]
    return canvas, label


def render_layout(height: int, width: int, rng: np.random.Generator) -> ShapesSample:
    """Draw one layout: wavy sky/ground/water bands and 2-5 objects, the first always with a touching twin of
    the same class (drawn overlapping slightly, so the pair shares a boundary)."""
    canvas, label = _paint_background(height, width, rng)
    instance = label.astype(np.uint16) * 1000
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    counts = dict.fromkeys(OBJECT_CLASSES, 0)
    for index in range(int(rng.integers(2, 6))):
        kind = int(rng.choice(OBJECT_CLASSES))
        r = min(height, width) * rng.uniform(0.1, 0.2)
        cx, cy = rng.uniform(r, width - 3 * r), rng.uniform(r, height - r)
        placements = [(cx, cy)]
        if index == 0 or rng.random() < 0.3:
            placements.append((cx + 1.8 * r, cy))  # objects are ~2r wide: the twin overlaps by ~0.2r
        for px, py in placements:
            mask = _object_mask(kind, xs, ys, px, py, r)
            counts[kind] += 1
            label[mask] = kind
            instance[mask] = kind * 1000 + counts[kind]
            _paint_object(canvas, mask, kind, (xs, ys), (px, py), r, rng)
    noisy = canvas + rng.normal(0.0, 0.02, canvas.shape)
    image = np.round(np.clip(noisy, 0.0, 1.0) * 255).astype(np.uint8)
    return ShapesSample(image=image, label=label, instance=instance)

"""Render scenes to images with an exact pixel mask per object and per concept.

Drawing works on a palette-index map: the background writes its pattern levels, each object
overwrites the pixels it covers, and a label map records which object owns each pixel. The image
is the palette looked up once, and the masks are the label map compared to each object, so a
mask always covers exactly the pixels drawn in its object's colours (no antialiasing).

>>> from lightning_maia.world._scene import Background, Scene, SceneObject
>>> scene = Scene((SceneObject("circle", "red", size="large"),), Background("plain", "grey"))
>>> rendering = render_scene(scene, 64)
>>> rendering.image.shape, rendering.image.dtype
(torch.Size([3, 64, 64]), torch.uint8)
>>> int(rendering.object_masks[0].sum()) + int(rendering.background_mask.sum()) == 64 * 64
True
>>> rendering.image[:, 32, 32].tolist(), rendering.image[:, 0, 0].tolist()
([220, 40, 40], [128, 128, 128])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lightning_maia.errors import bad_option
from lightning_maia.world._scene import Concept, Scene, SceneObject
from lightning_maia.world._vocabulary import COLOURS, NAMED_BACKGROUNDS, SIZES

FloatArray = np.ndarray
Size = int | tuple[int, int]


@dataclass(frozen=True, eq=False)
class Rendering:
    """A rendered scene with the exact visible pixels of every object and of the background."""

    #: uint8 image, shape (3, H, W).
    image: torch.Tensor
    #: One bool (H, W) mask per scene object: its pixels left visible by later objects.
    object_masks: tuple[torch.Tensor, ...]
    #: bool (H, W): the pixels no object covers.
    background_mask: torch.Tensor
    #: The scene that was drawn.
    scene: Scene

    @property
    def height(self) -> int:
        return int(self.image.shape[1])

    @property
    def width(self) -> int:
        return int(self.image.shape[2])

    def concept_mask(self, concept: Concept) -> torch.Tensor:
        """The visible pixels that show ``concept``; all False where the scene lacks it."""
        if concept.is_background:
            if self.scene.background.has(concept):
                return self.background_mask.clone()
            return torch.zeros_like(self.background_mask)
        mask = torch.zeros_like(self.background_mask)
        for obj, obj_mask in zip(self.scene.objects, self.object_masks, strict=True):
            if obj.has(concept):
                mask |= obj_mask
        return mask

    def masks(self) -> dict[Concept, torch.Tensor]:
        """A mask for every concept of the scene, in concept order."""
        return {concept: self.concept_mask(concept) for concept in sorted(self.scene.concepts())}

    def float_image(self) -> torch.Tensor:
        """The image as float32 in [0, 1]."""
        return self.image.float() / 255.0

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.image.permute(1, 2, 0).numpy())


# --- palette -------------------------------------------------------------------------------

#: Levels per palette colour: the colour itself, then three steps towards its shade.
LEVELS = 4


def _shade_steps(rgb: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The colour and three shades of it that a viewer still names as the same colour."""
    colour = np.array(rgb, dtype=np.float64)
    luminance = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) / 255.0
    # Darkening keeps every hue but black; black brightened past 12% reads as grey or brown.
    target, strength = (255.0, 0.12) if luminance < 0.15 else (0.0, 0.18)
    steps = [colour + strength * k / (LEVELS - 1) * (target - colour) for k in range(LEVELS)]
    return [(int(r), int(g), int(b)) for r, g, b in np.round(steps)]


#: Named backgrounds draw from four hand-picked tones each (base first).
_NAMED_TONES: dict[str, list[tuple[int, int, int]]] = {
    "snow": [(245, 245, 245), (250, 250, 252), (230, 232, 238), (205, 207, 212)],
    "grass": [(50, 165, 60), (38, 130, 45), (72, 185, 70), (45, 150, 52)],
    "sand": [(225, 200, 120), (232, 210, 100), (215, 190, 105), (205, 180, 90)],
    "water": [(40, 90, 220), (30, 70, 190), (90, 135, 235), (55, 105, 228)],
}

_PALETTE_ROWS: list[tuple[int, int, int]] = []
#: Palette offset of the first level of every colour and named background.
COLOUR_OFFSETS: dict[str, int] = {}
NAMED_OFFSETS: dict[str, int] = {}
for _name, _rgb in COLOURS.items():
    COLOUR_OFFSETS[_name] = len(_PALETTE_ROWS)
    _PALETTE_ROWS.extend(_shade_steps(_rgb))
for _name in NAMED_BACKGROUNDS:
    NAMED_OFFSETS[_name] = len(_PALETTE_ROWS)
    _PALETTE_ROWS.extend(_NAMED_TONES[_name])

#: Every RGB value the renderer can draw, shape (K, 3).
PALETTE: np.ndarray = np.array(_PALETTE_ROWS, dtype=np.uint8)
_PALETTE_T = np.ascontiguousarray(PALETTE.T)
_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_VALUES = np.array([COLOURS[name] for name in _COLOUR_NAMES], dtype=np.int32)


def nearest_colours(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The vocabulary colour nearest to every pixel of a uint8 (3, H, W) image, as (H, W) names.

    >>> nearest_colours(torch.tensor([[[200]], [[60]], [[50]]], dtype=torch.uint8)).tolist()
    [['red']]
    """
    pixels = np.asarray(image, dtype=np.int32).reshape(3, -1).T
    distances = ((pixels[:, None, :] - _COLOUR_VALUES[None, :, :]) ** 2).sum(axis=2)
    names = np.array(_COLOUR_NAMES)[distances.argmin(axis=1)]
    return names.reshape(np.asarray(image).shape[1:])


# --- shapes: inside tests in the object's frame (units of its radius, b pointing up) -------

_SQRT3_2 = math.sqrt(3.0) / 2.0
_TRIANGLE_R = 1.15
_STAR_OUTER, _STAR_INNER = 1.1, 0.47
_STAR_SECTOR = 2.0 * math.pi / 5.0
_STAR_DX = _STAR_INNER * math.cos(_STAR_SECTOR / 2) - _STAR_OUTER
_STAR_DY = _STAR_INNER * math.sin(_STAR_SECTOR / 2)


def _circle(a: FloatArray, b: FloatArray) -> np.ndarray:
    return np.asarray(a * a + b * b <= 1.0)


def _ring(a: FloatArray, b: FloatArray) -> np.ndarray:
    radius2 = a * a + b * b
    return np.asarray((radius2 <= 1.0) & (radius2 >= 0.36))


def _square(a: FloatArray, b: FloatArray) -> np.ndarray:
    return np.asarray(np.maximum(np.abs(a), np.abs(b)) <= 0.82)


def _diamond(a: FloatArray, b: FloatArray) -> np.ndarray:
    return np.asarray(np.abs(a) * (1 / 0.72) + np.abs(b) * (1 / 1.02) <= 1.0)


def _hexagon(a: FloatArray, b: FloatArray) -> np.ndarray:
    abs_a = np.abs(a)
    return np.asarray((abs_a <= _SQRT3_2) & (0.5 * abs_a + _SQRT3_2 * np.abs(b) <= _SQRT3_2))


def _triangle(a: FloatArray, b: FloatArray) -> np.ndarray:
    half_r, half_b = _TRIANGLE_R / 2.0, 0.5 * b
    slant = _SQRT3_2 * a
    return np.asarray((b >= -half_r) & (slant + half_b <= half_r) & (half_b - slant <= half_r))


def _cross(a: FloatArray, b: FloatArray) -> np.ndarray:
    abs_a, abs_b = np.abs(a), np.abs(b)
    return np.asarray((np.minimum(abs_a, abs_b) <= 0.3) & (np.maximum(abs_a, abs_b) <= 0.95))


def _star(a: FloatArray, b: FloatArray) -> np.ndarray:
    # Fold every point into half a point's sector, then test the one edge that bounds it.
    angle = np.abs(np.mod(np.arctan2(a, b) + _STAR_SECTOR / 2, _STAR_SECTOR) - _STAR_SECTOR / 2)
    radius = np.hypot(a, b)
    u, v = radius * np.cos(angle), radius * np.sin(angle)
    return np.asarray(_STAR_DX * v - _STAR_DY * (u - _STAR_OUTER) >= 0.0)


def _heart(a: FloatArray, b: FloatArray) -> np.ndarray:
    x, y = a * 1.1, b * 1.1 + 0.12
    x2, y2 = x * x, y * y
    bulge = x2 + y2 - 1.0
    return np.asarray(bulge * bulge * bulge - x2 * y2 * y <= 0.0)


ShapeTest = Callable[[FloatArray, FloatArray], np.ndarray]

#: shape -> (inside test, radius of the smallest disc holding the shape, in object radii).
SHAPE_TESTS: dict[str, tuple[ShapeTest, float]] = {
    "circle": (_circle, 1.0),
    "square": (_square, 1.17),
    "triangle": (_triangle, _TRIANGLE_R),
    "star": (_star, _STAR_OUTER),
    "cross": (_cross, 1.0),
    "heart": (_heart, 1.2),
    "ring": (_ring, 1.0),
    "diamond": (_diamond, 1.02),
    "hexagon": (_hexagon, 1.0),
}


# --- textures: which covered pixels take the shade -----------------------------------------


def _striped(a: FloatArray, b: FloatArray) -> np.ndarray:
    return np.asarray(((b * 2.5 + 64.0).astype(np.int32) & 1).astype(bool))


def _dotted(a: FloatArray, b: FloatArray) -> np.ndarray:
    fa, fb = np.mod(a * 1.8, 1.0) - 0.5, np.mod(b * 1.8, 1.0) - 0.5
    return np.asarray(fa * fa + fb * fb <= 0.1)


def _checked(a: FloatArray, b: FloatArray) -> np.ndarray:
    cells = (a * 2.2 + 64.0).astype(np.int32) + (b * 2.2 + 64.0).astype(np.int32)
    return np.asarray((cells & 1).astype(bool))


TEXTURE_TESTS: dict[str, ShapeTest | None] = {
    "solid": None,
    "striped": _striped,
    "dotted": _dotted,
    "checked": _checked,
}


# --- backgrounds: level maps (0..3) at twice the image size, cut at a seed-driven offset --


@functools.lru_cache(maxsize=64)
def _background_levels(texture: str, height: int, width: int) -> np.ndarray:
    """Pattern levels for ``texture`` on a (2H, 2W) canvas; read-only and cached per size."""
    rows, cols = 2 * height, 2 * width
    y = np.arange(rows)[:, None]
    x = np.arange(cols)[None, :]
    period = max(4, round(min(height, width) / 8))
    # A fixed seed per texture: the scene's seed only picks where to cut the canvas.
    rng = np.random.default_rng(sum(map(ord, texture)) * 7919 + 17)
    top = LEVELS - 1
    if texture == "plain":
        levels = np.zeros((rows, cols), dtype=np.int64)
    elif texture == "stripes":
        levels = ((x + y) // (period // 2) % 2) * top
    elif texture == "dots":
        fy, fx = (y % period) - period / 2 + 0.5, (x % period) - period / 2 + 0.5
        levels = (fx * fx + fy * fy <= (0.3 * period) ** 2) * top
    elif texture == "checker":
        levels = ((x // period + y // period) % 2) * top
    elif texture == "noise":
        levels = rng.integers(0, LEVELS, size=(rows, cols))
    elif texture == "snow":
        levels = rng.choice(LEVELS, size=(rows, cols), p=[0.72, 0.12, 0.1, 0.06])
    elif texture == "grass":
        # Vertical blades: coarse noise stretched down the column, with staggered blade ends.
        blade = max(3, round(min(height, width) / 10))
        noise = rng.integers(0, LEVELS, size=(rows // blade + 2, cols))
        stagger = rng.integers(0, blade, size=cols)[None, :]
        levels = noise[(y + stagger) // blade, x]
    elif texture == "sand":
        levels = rng.choice(LEVELS, size=(rows, cols), p=[0.55, 0.2, 0.15, 0.1])
    elif texture == "water":
        wave = np.sin(2 * np.pi * (y / (period * 1.5) + 0.2 * np.sin(2 * np.pi * x / (period * 4))))
        levels = np.clip(((wave + 1.0) * 2.0).astype(np.int64), 0, top)
    else:
        raise bad_option("background", "a known background texture", texture)
    levels = np.ascontiguousarray(np.broadcast_to(levels, (rows, cols)), dtype=np.uint8)
    levels.flags.writeable = False
    return levels


def _background_index(scene: Scene, height: int, width: int) -> np.ndarray:
    background = scene.background
    levels = _background_levels(background.texture, height, width)
    seed = scene.seed * 2654435761 + 12345
    top, left = (seed >> 3) % height, (seed >> 17) % width
    offset = NAMED_OFFSETS.get(background.texture, COLOUR_OFFSETS[background.colour])
    return levels[top : top + height, left : left + width] + np.uint8(offset)


# --- objects -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _pixel_centres(count: int) -> np.ndarray:
    return np.arange(count, dtype=np.float64) + 0.5


def _paint_object(
    index: np.ndarray, labels: np.ndarray, obj: SceneObject, label: int, height: int, width: int
) -> None:
    """Write ``obj``'s palette indices and its label over the pixels it covers."""
    radius = SIZES[obj.size] * min(height, width) / 2.0
    inside_test, extent = SHAPE_TESTS[obj.shape]
    centre_x, centre_y = obj.x * width, obj.y * height
    reach = extent * radius + 1.0
    x0, x1 = max(int(centre_x - reach), 0), min(int(centre_x + reach) + 1, width)
    y0, y1 = max(int(centre_y - reach), 0), min(int(centre_y + reach) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    # Object frame: units of the radius, b pointing up, rotated counter-clockwise on screen.
    xs = (_pixel_centres(width)[x0:x1] - centre_x) / radius
    ys = (centre_y - _pixel_centres(height)[y0:y1]) / radius
    cos, sin = math.cos(math.radians(obj.rotation)), math.sin(math.radians(obj.rotation))
    a = (cos * xs)[None, :] + (sin * ys)[:, None]
    b = (cos * ys)[:, None] - (sin * xs)[None, :]
    inside = inside_test(a, b)
    base = COLOUR_OFFSETS[obj.colour]
    texture_test = TEXTURE_TESTS[obj.texture]
    index_crop = index[y0:y1, x0:x1]
    if texture_test is None:
        np.copyto(index_crop, np.uint8(base), where=inside)
    else:
        values = np.where(texture_test(a, b), np.uint8(base + LEVELS - 1), np.uint8(base))
        np.copyto(index_crop, values, where=inside)
    np.copyto(labels[y0:y1, x0:x1], np.int8(label), where=inside)


def _image_size(size: Size) -> tuple[int, int]:
    sides = (size, size) if isinstance(size, int | np.integer) else size
    if (
        not isinstance(sides, tuple | list)
        or len(sides) != 2
        or not all(
            isinstance(side, int | np.integer) and not isinstance(side, bool) for side in sides
        )
        or min(sides) < 8
    ):
        raise bad_option("size", "an int or (height, width) of at least 8 pixels", size)
    return int(sides[0]), int(sides[1])


def _render_arrays(scene: Scene, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 (3, H, W) image and the int8 (H, W) label map (-1 for background)."""
    index = _background_index(scene, height, width)
    labels = np.full((height, width), -1, dtype=np.int8)
    for label, obj in enumerate(scene.objects):
        _paint_object(index, labels, obj, label, height, width)
    return _PALETTE_T[:, index], labels


def render_scene(scene: Scene, size: Size = 64) -> Rendering:
    """Draw ``scene`` at ``size`` (a side, or (height, width)); same scene, same pixels."""
    height, width = _image_size(size)
    image, labels = _render_arrays(scene, height, width)
    object_masks = tuple(torch.from_numpy(labels == label) for label in range(len(scene.objects)))
    return Rendering(
        image=torch.from_numpy(image),
        object_masks=object_masks,
        background_mask=torch.from_numpy(labels < 0),
        scene=scene,
    )


def render_scenes(scenes: Sequence[Scene], size: Size = 64) -> list[Rendering]:
    """Render many scenes at one size."""
    return [render_scene(scene, size) for scene in scenes]


def render_batch(scenes: Sequence[Scene], size: Size = 64) -> torch.Tensor:
    """Images only, as a float (N, 3, H, W) batch in [0, 1], without building masks.

    >>> from lightning_maia.world._scene import Scene
    >>> render_batch([Scene(), Scene(seed=1)], 16).shape
    torch.Size([2, 3, 16, 16])
    """
    height, width = _image_size(size)
    batch = np.empty((len(scenes), 3, height, width), dtype=np.uint8)
    for position, scene in enumerate(scenes):
        batch[position] = _render_arrays(scene, height, width)[0]
    return torch.from_numpy(batch).float().div_(255.0)

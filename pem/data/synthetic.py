"""A synthetic street-scene dataset in the exact Cityscapes layout, generated from a seed.

Each image is a procedurally drawn street scene in perspective: sky (clear or overcast, with
clouds), a row of buildings with windows, trees, a road with lane markings running to a vanishing
point, sidewalks with tiles and grass; then cars (rear and side views, random paint) and persons
(random clothes) of sizes that follow the perspective, drawn far to near so that nearer objects
occlude farther ones, sometimes a crowd of distant persons annotated as one region, and some
``static`` / ``ego vehicle`` regions that the evaluation ignores. Colours, textures, illumination
and noise vary per image, so that colour alone does not give the class.

Written files (``N`` = ``000000``, ``F`` = frame):

- ``leftImg8bit/{split}/{city}/{city}_N_F_leftImg8bit.png``
- ``gtFine/{split}/{city}/{city}_N_F_gtFine_{labelIds,instanceIds,color}.png``
- ``gtFine/cityscapes_panoptic_{split}.json`` and ``gtFine/cityscapes_panoptic_{split}/*.png``,
  made by ``cityscapesscripts``' own ``createPanopticImgs`` converter.

Label ids come from ``cityscapesscripts.helpers.labels``. Image ``i`` of a split depends only on
``(seed, split, i)``, so sets of different sizes share their first images.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from contract.resources import check_memory
from pem.data.cityscapes import COLOR_SUFFIX, IMAGE_SUFFIX, INSTANCE_SUFFIX, LABEL_SUFFIX, _labels
from pem.data.common import DatasetError, atomic_directory, write_png

GENERATOR_VERSION = 1
"""Bumped whenever the generated images change (part of cache keys)."""

CITIES = {"train": "synthtrain", "val": "synthval"}
_SPLIT_CODES = {"train": 0, "val": 1}

# Classes drawn (Cityscapes label names); their ids come from cityscapesscripts.
STUFF_CLASSES = ("road", "sidewalk", "building", "vegetation", "terrain", "sky")
THING_CLASSES = ("person", "car")
VOID_CLASSES = ("static", "ego vehicle")


@dataclass(frozen=True)
class SyntheticConfig:
    """What :func:`make_synthetic` generates: image counts per split, (H, W) and the seed."""

    train: int = 300
    val: int = 50
    size: tuple[int, int] = (256, 512)
    seed: int = 0
    crowd_prob: float = 0.15

    def __post_init__(self) -> None:
        h, w = self.size
        if self.train < 0 or self.val < 0 or self.train + self.val == 0:
            raise DatasetError(f"synthetic: need at least one image (train={self.train}, val={self.val})")
        if h < 32 or w < 32:
            raise DatasetError(f"synthetic: size {h}x{w} is too small (at least 32x32)")


def _ids() -> dict[str, int]:
    name2label = _labels().name2label
    return {name: name2label[name].id for name in (*STUFF_CLASSES, *THING_CLASSES, *VOID_CLASSES)}


# ---------------------------------------------------------------------------------------------
# Drawing helpers


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in about [-1, 1], feature size ``cell`` pixels: (H, W) float32."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _jitter(rng: np.random.Generator, colour: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _poly_mask(shape: tuple[int, int], points: list[tuple[float, float]]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points)).astype(np.int32)], 1)
    return mask.astype(bool)


def _ellipse_mask(
    shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float]
) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cx, cy = centre
    cv2.ellipse(
        mask, (round(cx), round(cy)), (max(1, round(axes[0])), max(1, round(axes[1]))), 0, 0, 360, 1, -1
    )
    return mask.astype(bool)


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


class _Canvas:
    """Image, label ids and instance ids being drawn; later paint occludes earlier paint."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.image = np.zeros((h, w, 3), np.float32)
        self.labels = np.zeros((h, w), np.uint8)
        self.instances = np.zeros((h, w), np.int32)

    def paint(
        self, mask: np.ndarray, label: int, colour: np.ndarray | _Texture, instance: int | None = None
    ) -> None:
        """Paint ``mask`` (H, W) bool with ``colour`` and give it ``label`` (and ``instance``)."""
        self.recolour(mask, colour)
        self.labels[mask] = label
        self.instances[mask] = label if instance is None else instance

    def recolour(self, mask: np.ndarray, colour: np.ndarray | _Texture) -> None:
        """Change the colour of ``mask`` without touching its labels (windows, wheels, lights).

        ``colour``: (3,), (H, W, 3) or a :class:`_Texture`.
        """
        if isinstance(colour, _Texture):
            self.image[mask] = colour.base + colour.brightness[mask][:, None]
        else:
            self.image[mask] = colour[mask] if colour.ndim == 3 else colour


@dataclass(frozen=True)
class _Texture:
    """A (3,) base colour plus an (H, W) brightness offset."""

    base: np.ndarray
    brightness: np.ndarray


def _shade(base: np.ndarray, *layers: np.ndarray | float) -> _Texture:
    """(3,) base colour plus (H, W) brightness layers."""
    return _Texture(np.asarray(base, np.float32), np.asarray(sum(layers), np.float32))


# ---------------------------------------------------------------------------------------------
# The scene


def render_scene(rng: np.random.Generator, size: tuple[int, int], crowd_prob: float = 0.15):
    """Draw one street scene.

    Returns:
        image (H, W, 3) uint8 RGB, label ids (H, W) uint8, instance ids (H, W) uint16
        (Cityscapes convention: ``label_id * 1000 + k`` for thing instances, else the label id).
    """
    # The steps draw from ``rng`` in this order; the default model's training data depends on it.
    h, w = size
    cv = _Canvas(h, w)
    rows = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    scene = _Scene(_ids(), cv, rows, horizon=rng.uniform(0.36, 0.55) * h, vx=rng.uniform(0.3, 0.7) * w)
    _paint_sky(rng, scene)
    _paint_buildings(rng, scene)
    street = _paint_street(rng, scene)
    _paint_trees(rng, scene, street)
    _paint_objects(rng, scene, street, crowd_prob)
    _paint_hood(rng, scene)
    return _camera(rng, cv.image), cv.labels.copy(), cv.instances.astype(np.uint16)


@dataclass(frozen=True)
class _Scene:
    """What every step of :func:`render_scene` draws with: label ids, the canvas, each pixel's row,
    the horizon's row and the vanishing point's column."""

    ids: dict[str, int]
    cv: _Canvas
    rows: np.ndarray
    horizon: float
    vx: float


@dataclass(frozen=True)
class _Street:
    """The road and sidewalks: half widths at the bottom and at the horizon, the sidewalk mask."""

    road_half: float
    walk_half: float
    top_half: float
    walk: np.ndarray

    def half_widths(self, t: float) -> tuple[float, float]:
        """Road and sidewalk half widths at depth ``t`` (0 at the horizon, 1 at the bottom)."""
        top_half = self.top_half
        return top_half + (self.road_half - top_half) * t, top_half * 2 + (self.walk_half - top_half * 2) * t


def _paint_sky(rng: np.random.Generator, scene: _Scene) -> None:
    """Clear (blue gradient, clouds) or overcast (grey)."""
    h, w = scene.cv.h, scene.cv.w
    rows, horizon = scene.rows, scene.horizon
    if rng.random() < 0.25:
        sky = _jitter(rng, (185, 188, 192), 18)
        grad = (rows / max(horizon, 1)) * rng.uniform(0, 25)
    else:
        sky = _jitter(rng, (95, 145, 215), 22)
        grad = (rows / max(horizon, 1)) * rng.uniform(25, 60)
    clouds = np.clip(_noise(rng, h, w, rng.uniform(20, 60) * w / 512) - rng.uniform(0.1, 0.6), 0, 1) * 120
    full = np.ones((h, w), bool)
    scene.cv.paint(full, scene.ids["sky"], _shade(sky, grad, clouds, 3 * _noise(rng, h, w, 4)))


def _paint_buildings(rng: np.random.Generator, scene: _Scene) -> None:
    """Buildings along the horizon, with window grids."""
    h, w = scene.cv.h, scene.cv.w
    horizon = scene.horizon
    x = -rng.uniform(0, 0.1) * w
    while x < w:
        bw = rng.uniform(0.08, 0.3) * w
        if rng.random() < 0.15:
            x += bw * 0.5
            continue
        top = horizon - rng.uniform(0.1, 0.45) * h
        base = _jitter(
            rng,
            [(180, 160, 130), (150, 85, 65), (118, 118, 124), (200, 195, 185), (110, 90, 72)][
                rng.integers(5)
            ],
            18,
        )
        mask = _poly_mask((h, w), _rect(x, top, x + bw, horizon + 3))
        if rng.random() < 0.3:  # pitched roof
            roof = [(x, top), (x + bw / 2, top - rng.uniform(0.05, 0.3) * bw), (x + bw, top)]
            mask |= _poly_mask((h, w), roof)
        scene.cv.paint(
            mask, scene.ids["building"], _shade(base, 8 * _noise(rng, h, w, 3), 12 * _noise(rng, h, w, 30))
        )
        _paint_windows(rng, scene.cv, mask, (x, top, bw), horizon)
        x += bw


def _paint_windows(
    rng: np.random.Generator, cv: _Canvas, mask: np.ndarray, box: tuple[float, float, float], horizon: float
) -> None:
    """A grid of windows on the building ``mask`` (``box``: its left edge, top and width)."""
    x, top, bw = box
    win_w = bw / rng.uniform(5, 10)
    win_h = win_w * rng.uniform(1.0, 1.8)
    win_colour = _jitter(rng, (60, 70, 85), 25)
    windows = np.zeros((cv.h, cv.w), np.float32)  # 0 = wall, else 1 + brightness offset
    wy = top + win_h * 0.6
    while wy + win_h < horizon - 2:
        wx = x + win_w * 0.6
        while wx + win_w < x + bw - 2:
            if rng.random() < 0.9:
                p0 = (round(wx), round(wy))
                p1 = (round(wx + win_w * 0.7) - 1, round(wy + win_h * 0.7) - 1)
                cv2.rectangle(windows, p0, p1, float(1 + rng.uniform(0, 35)), -1)
            wx += win_w
        wy += win_h
    glass = (windows > 0) & mask
    cv.recolour(glass, _shade(win_colour, windows - 11))


def _paint_street(rng: np.random.Generator, scene: _Scene) -> _Street:
    """Grass everywhere below the horizon, then sidewalks and the road to the vanishing point, with
    a dashed lane marking."""
    cv, ids, rows, horizon, vx = scene.cv, scene.ids, scene.rows, scene.horizon, scene.vx
    h, w = cv.h, cv.w
    ground = rows >= horizon
    terrain = _jitter(rng, [(130, 170, 95), (150, 135, 95)][int(rng.random() < 0.3)], 15)
    cv.paint(ground, ids["terrain"], _shade(terrain, 14 * _noise(rng, h, w, 6), 8 * _noise(rng, h, w, 2)))
    depth = np.clip((rows - horizon) / max(h - horizon, 1), 0, None)
    road_half = rng.uniform(0.25, 0.5) * w
    walk_half = road_half + rng.uniform(0.12, 0.45) * w
    top_half = rng.uniform(0.01, 0.04) * w
    walk_colour = _jitter(rng, (155, 140, 148), 15)
    tiles = rng.uniform(10, 20) * w / 512
    tile_lines = ((np.arange(w)[None, :] % tiles < 1.2) | (rows % (tiles * 0.6) < 1.0)) & (depth > 0.15)
    walk = _poly_mask(
        (h, w),
        [
            (vx - top_half * 2, horizon),
            (vx + top_half * 2, horizon),
            (vx + walk_half, h),
            (vx - walk_half, h),
        ],
    )
    cv.paint(walk, ids["sidewalk"], _shade(walk_colour, 7 * _noise(rng, h, w, 3), -28.0 * tile_lines))
    road_colour = _jitter(rng, (85, 85, 92), 14)
    road = _poly_mask(
        (h, w), [(vx - top_half, horizon), (vx + top_half, horizon), (vx + road_half, h), (vx - road_half, h)]
    )
    cv.paint(road, ids["road"], _shade(road_colour, 6 * _noise(rng, h, w, 2), 10 * _noise(rng, h, w, 40)))
    # Lane markings (road): a dashed line from the vanishing point.
    lane_x = vx + rng.uniform(-0.3, 0.3) * road_half
    dash = rng.uniform(0.04, 0.08)
    on = (np.floor(np.sqrt(depth) / dash) % 2 == 0) & (depth > 0.03)
    lane_line = np.abs(np.arange(w)[None, :] - (vx + (lane_x - vx) * depth)) < (0.5 + 5 * depth * w / 512)
    cv.recolour(road & lane_line & on, _jitter(rng, (225, 225, 215), 15))
    return _Street(road_half, walk_half, top_half, walk)


def _paint_trees(rng: np.random.Generator, scene: _Scene, street: _Street) -> None:
    """Trees (vegetation, trunks included) standing beyond the sidewalks, and maybe a hedge."""
    cv, ids, rows, horizon, vx = scene.cv, scene.ids, scene.rows, scene.horizon, scene.vx
    h, w = cv.h, cv.w
    veg = _jitter(rng, (75, 120, 45), 15)
    veg_tex = _shade(veg, 30 * _noise(rng, h, w, 2.5), 15 * _noise(rng, h, w, 10))
    for _ in range(rng.integers(1, 7)):
        tx = rng.uniform(0, w)
        side = -1 if tx < vx else 1
        foot = horizon + rng.uniform(0, 0.4) ** 1.5 * (h - horizon)
        tx = vx + side * max(
            abs(tx - vx), (street.walk_half - 1.0 * w * 0.05) * (foot - horizon) / max(h - horizon, 1)
        )
        scale = 0.35 + (foot - horizon) / max(h - horizon, 1)
        crown_r = rng.uniform(0.05, 0.13) * w * scale
        crown_y = foot - rng.uniform(1.6, 2.4) * crown_r
        mask = _poly_mask((h, w), _rect(tx - crown_r * 0.12, crown_y, tx + crown_r * 0.12, foot))
        for _ in range(rng.integers(2, 5)):
            c = (tx + rng.uniform(-0.6, 0.6) * crown_r, crown_y + rng.uniform(-0.6, 0.3) * crown_r)
            mask |= _ellipse_mask(
                (h, w), c, (crown_r * rng.uniform(0.6, 1.0), crown_r * rng.uniform(0.5, 0.9))
            )
        cv.paint(mask, ids["vegetation"], veg_tex)
    if rng.random() < 0.4:  # a hedge along the far edge of the sidewalk
        hedge_h = rng.uniform(0.02, 0.06) * h
        cv.paint((rows < horizon + 2) & (rows > horizon - hedge_h) & ~street.walk, ids["vegetation"], veg_tex)


def _paint_objects(rng: np.random.Generator, scene: _Scene, street: _Street, crowd_prob: float) -> None:
    """Things and void objects (cars, people, maybe a crowd and a static object), far to near."""
    cv, ids, horizon, vx = scene.cv, scene.ids, scene.horizon, scene.vx
    h, w = cv.h, cv.w
    objects: list[tuple[float, Callable[[int], None], str]] = []
    for _ in range(rng.integers(1, 7)):
        t = 0.06 + 0.99 * rng.random() ** 1.5
        rhalf, _ = street.half_widths(t)
        cx = vx + rng.uniform(-0.85, 0.85) * rhalf
        objects.append((t, _car_painter(rng, cv, ids["car"], horizon, h, w, t, cx, rhalf), "car"))
    for _ in range(rng.integers(1, 7)):
        t = 0.08 + 0.92 * rng.random() ** 1.3
        rhalf, whalf = street.half_widths(t)
        side = rng.choice([-1, 1])
        cx = vx + side * rng.uniform(rhalf, max(whalf, rhalf + 1) + 0.1 * w)
        objects.append((t, _person_painter(rng, cv, ids["person"], horizon, h, w, t, cx), "person"))
    if rng.random() < crowd_prob:
        t = rng.uniform(0.05, 0.2)
        rhalf, whalf = street.half_widths(t)
        cx = vx + rng.choice([-1, 1]) * (rhalf + whalf) / 2
        objects.append((t, _crowd_painter(rng, cv, ids["person"], horizon, h, w, t, cx), "crowd"))
    if rng.random() < 0.4:
        t = rng.uniform(0.1, 0.9)
        _, whalf = street.half_widths(t)
        cx = vx + rng.choice([-1, 1]) * whalf * rng.uniform(0.7, 1.0)
        objects.append((t, _static_painter(rng, cv, ids["static"], horizon, h, w, t, cx), "static"))

    counters = {"car": 0, "person": 0}
    for _, painter, kind in sorted(objects, key=lambda o: o[0]):
        if kind in counters:
            painter(ids[kind] * 1000 + counters[kind])
            counters[kind] += 1
        else:
            painter(-1)


def _paint_hood(rng: np.random.Generator, scene: _Scene) -> None:
    """Maybe the hood of the ego vehicle at the bottom (ignored)."""
    if rng.random() < 0.25:
        h, w = scene.cv.h, scene.cv.w
        hood_top = h * rng.uniform(0.88, 0.95)
        bulge = rng.uniform(0.02, 0.05) * h
        hood = scene.rows >= hood_top + bulge * ((np.arange(w)[None, :] - w / 2) / (w / 2)) ** 2
        paint = _shade(_jitter(rng, (40, 40, 45), 15), 6 * _noise(rng, h, w, 20))
        scene.cv.paint(hood, scene.ids["ego vehicle"], paint)


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Illumination, sensor noise, slight blur; to uint8."""
    image = image * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)
    image = image + rng.normal(0, rng.uniform(2, 6), size=image.shape).astype(np.float32)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


_CAR_PAINTS = [
    (170, 25, 30),
    (30, 60, 150),
    (225, 225, 225),
    (30, 30, 35),
    (150, 152, 158),
    (40, 90, 50),
    (220, 180, 40),
]


# Car outlines per view in units of the car size ``u``: a point ``(edge, dx, dy)`` stands at
# ``x = (left, right)[edge] + dx * u``, ``y = base - dy * u``; a rectangle is two opposite corners and a
# wheel a centre and its half axes.
_L, _R = 0, 1
_CAR_VIEWS: dict[str, dict[str, Any]] = {
    "side": {
        "body": ((_L, 0.0, 0.3), (_R, 0.0, 0.07)),
        "cabin": ((_L, 0.22, 0.3), (_R, -0.12, 0.3), (_R, -0.3, 0.5), (_L, 0.35, 0.5)),
        "window": ((_L, 0.27, 0.32), (_R, -0.18, 0.32), (_R, -0.32, 0.47), (_L, 0.37, 0.47)),
        "wheels": (((_L, 0.2, 0.08), (0.085, 0.085)), ((_R, -0.2, 0.08), (0.085, 0.085))),
        "lights": (((_R, -0.04, 0.27), (_R, 0.0, 0.2)),),
    },
    "rear": {
        "body": ((_L, 0.0, 0.5), (_R, 0.0, 0.06)),
        "cabin": ((_L, 0.08, 0.5), (_R, -0.08, 0.5), (_R, -0.17, 0.78), (_L, 0.17, 0.78)),
        "window": ((_L, 0.14, 0.53), (_R, -0.14, 0.53), (_R, -0.21, 0.74), (_L, 0.21, 0.74)),
        "wheels": (((_L, 0.12, 0.04), (0.08, 0.05)), ((_R, -0.12, 0.04), (0.08, 0.05))),
        "lights": (((_L, 0.03, 0.45), (_L, 0.18, 0.36)), ((_R, -0.18, 0.45), (_R, -0.03, 0.36))),
    },
}


def _car_painter(
    rng, cv: _Canvas, label: int, horizon: float, h: int, w: int, t: float, cx: float, rhalf: float
):
    side_view = rng.random() < 0.35
    u = rng.uniform(0.4, 0.55) * rhalf * (2.2 if side_view else 1.0)  # width (rear) / length (side)
    yb = horizon + t * (h - horizon)
    paint = _jitter(rng, _CAR_PAINTS[rng.integers(len(_CAR_PAINTS))], 20)
    glass = _jitter(rng, (45, 55, 70), 12)
    noise = _noise(rng, h, w, 3) * 5
    shadow_w = u * 0.55
    road_id = _ids()["road"]

    def draw(instance: int) -> None:
        shadow = _ellipse_mask((h, w), (cx, yb), (shadow_w, max(1.0, u * 0.05)))
        cv.image[shadow & (cv.labels == road_id)] *= 0.55
        view = _CAR_VIEWS["side" if side_view else "rear"]
        edges = (cx - u / 2, cx + u / 2)

        def at(point: tuple[int, float, float]) -> tuple[float, float]:
            edge, dx, dy = point
            return edges[edge] + dx * u, yb - dy * u

        def rect(corners: tuple[tuple[int, float, float], ...]) -> list[tuple[float, float]]:
            (x0, y0), (x1, y1) = (at(c) for c in corners)
            return _rect(x0, y0, x1, y1)

        body = rect(view["body"])
        cabin = [at(p) for p in view["cabin"]]
        window = [at(p) for p in view["window"]]
        wheels = [(at(c), (ax * u, ay * u)) for c, (ax, ay) in view["wheels"]]
        lights = [rect(c) for c in view["lights"]]
        wheel_masks = [_ellipse_mask((h, w), c, a) for c, a in wheels]
        mask = _poly_mask((h, w), body) | _poly_mask((h, w), cabin)
        for wm in wheel_masks:
            mask |= wm
        cv.paint(mask, label, _shade(paint, noise, -25 * (cv_rows(h, w) > yb - 0.2 * u)), instance)
        cv.recolour(_poly_mask((h, w), window) & mask, glass)
        for wm in wheel_masks:
            cv.recolour(wm, np.array([22, 22, 24], np.float32))
        for light in lights:
            cv.recolour(_poly_mask((h, w), light) & mask, _jitter(rng, (200, 40, 30), 20))

    return draw


def cv_rows(h: int, w: int) -> np.ndarray:
    """(H, W) float32 row index of every pixel."""
    return np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w))


def _person_mask(h: int, w: int, cx: float, yb: float, ph: float, lean: float, stride: float) -> np.ndarray:
    head = _ellipse_mask((h, w), (cx + lean * 0.1 * ph, yb - 0.92 * ph), (0.07 * ph, 0.08 * ph))
    torso = _poly_mask(
        (h, w),
        [
            (cx - 0.13 * ph, yb - 0.82 * ph),
            (cx + 0.13 * ph, yb - 0.82 * ph),
            (cx + 0.11 * ph, yb - 0.45 * ph),
            (cx - 0.11 * ph, yb - 0.45 * ph),
        ],
    )
    legs = _poly_mask(
        (h, w),
        [
            (cx - 0.1 * ph, yb - 0.47 * ph),
            (cx - 0.02 * ph, yb - 0.47 * ph),
            (cx - stride * ph, yb),
            (cx - stride * ph - 0.07 * ph, yb),
        ],
    ) | _poly_mask(
        (h, w),
        [
            (cx + 0.02 * ph, yb - 0.47 * ph),
            (cx + 0.1 * ph, yb - 0.47 * ph),
            (cx + stride * ph + 0.07 * ph, yb),
            (cx + stride * ph, yb),
        ],
    )
    return head, torso, legs


def _person_painter(rng, cv: _Canvas, label: int, horizon: float, h: int, w: int, t: float, cx: float):
    ph = t * rng.uniform(0.45, 0.65) * h
    yb = horizon + t * (h - horizon)
    lean, stride = rng.uniform(-0.3, 0.3), rng.uniform(0.0, 0.12)
    skin = _jitter(rng, [(230, 190, 160), (170, 120, 90), (110, 75, 55)][rng.integers(3)], 12)
    shirt = np.asarray(rng.uniform(20, 235, 3), np.float32)
    pants = _jitter(rng, [(40, 45, 70), (30, 30, 30), (110, 100, 80)][rng.integers(3)], 15)

    def draw(instance: int) -> None:
        head, torso, legs = _person_mask(h, w, cx, yb, ph, lean, stride)
        cv.paint(head | torso | legs, label, skin, instance)
        cv.recolour(torso, shirt)
        cv.recolour(legs & ~torso, pants)

    return draw


def _crowd_painter(rng, cv: _Canvas, label: int, horizon: float, h: int, w: int, t: float, cx: float):
    members = [
        (cx + rng.uniform(-1.5, 1.5) * t * 0.2 * h, t * rng.uniform(0.45, 0.6) * h, rng.uniform(20, 235, 3))
        for _ in range(rng.integers(3, 7))
    ]
    yb = horizon + t * (h - horizon)

    def draw(_: int) -> None:
        mask = np.zeros((h, w), bool)
        for x, ph, _ in members:
            head, torso, legs = _person_mask(h, w, x, yb, ph, 0.0, 0.05)
            mask |= head | torso | legs
        cv.paint(mask, label, _shade(np.asarray(members[0][2], np.float32), 30 * _noise(rng, h, w, 2)))

    return draw


def _static_painter(rng, cv: _Canvas, label: int, horizon: float, h: int, w: int, t: float, cx: float):
    size = t * rng.uniform(0.05, 0.12) * w
    yb = horizon + t * (h - horizon)
    colour = _jitter(rng, (120, 100, 80), 30)

    def draw(_: int) -> None:
        cv.paint(_poly_mask((h, w), _rect(cx - size, yb - size * 1.2, cx + size, yb)), label, colour)

    return draw


# ---------------------------------------------------------------------------------------------
# Writing the dataset


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: depends on nothing else."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index, GENERATOR_VERSION])


def _colour_image(label_ids: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for lab in _labels().labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.color
    return lut[label_ids]


def write_split(root: Path, split: str, count: int, config: SyntheticConfig, progress: bool = False) -> None:
    """Render and write the ``count`` images (and label files) of ``split`` under ``root``."""
    from tqdm import tqdm

    city = CITIES[split]
    for i in tqdm(range(count), desc=f"synthetic {split}", disable=None if progress else True, leave=False):
        image, label_ids, instance_ids = render_scene(
            scene_rng(config.seed, split, i), config.size, config.crowd_prob
        )
        name = f"{city}_000000_{i:06d}"
        write_png(root / "leftImg8bit" / split / city / f"{name}{IMAGE_SUFFIX}", image)
        gt = root / "gtFine" / split / city
        write_png(gt / f"{name}{LABEL_SUFFIX}", label_ids)
        write_png(gt / f"{name}{INSTANCE_SUFFIX}", instance_ids)
        write_png(gt / f"{name}{COLOR_SUFFIX}", _colour_image(label_ids))


#: Peak memory per pixel of generating one image with its annotations (measured ~110 B/px at 1024x2048).
SYNTHETIC_BYTES_PER_PIXEL = 160


def make_synthetic(out: str | os.PathLike[str], config: SyntheticConfig, progress: bool = False) -> Path:
    """Generate the dataset into ``out`` (must not exist or be empty); atomic: all or nothing.

    Returns ``out``. The panoptic files are produced by ``cityscapesscripts``' converter.
    """
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    out = Path(out)
    h, w = config.size
    check_memory(f"make-synthetic at {h}x{w}", h * w * SYNTHETIC_BYTES_PER_PIXEL)
    splits = [s for s in ("train", "val") if getattr(config, s) > 0]
    with atomic_directory(out) as tmp:
        for split in splits:
            write_split(tmp, split, getattr(config, split), config, progress)
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                convert2panoptic(str(tmp / "gtFine"), str(tmp / "gtFine"), False, splits)
        except SystemExit:
            raise DatasetError(
                f"{out}: panoptic conversion failed: {log.getvalue().strip()[-200:]}"
            ) from None
    return out

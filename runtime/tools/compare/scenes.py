"""Synthetic street scenes: the deterministic, seeded images every parity verdict is decided on
(:mod:`runtime.tools.compare.inputs`: ``check``, ``verify``, the demo and calibrate's report).

A sky gradient, buildings and a road, then cars and sensor noise (:func:`paint_cars_and_noise`).
"""

from __future__ import annotations

import numpy as np


def paint_cars_and_noise(
    image: np.ndarray, rng: np.random.Generator, horizon: int, cars: int, car_heights: tuple[int, int]
) -> np.ndarray:
    """Paint ``cars`` random-coloured boxes below ``horizon``, add sensor noise; return uint8.

    Args:
        image: ``(H, W, 3)`` float32 scene, painted in place.
        rng: the scene's generator (the draws continue its sequence).
        horizon: first road row; the boxes start at or below it.
        cars: how many boxes.
        car_heights: ``[low, high)`` of a box's height in rows (its width is 1.5 to 2.5 times that).
    """
    height, width = image.shape[:2]
    for _ in range(cars):
        ch = int(rng.integers(*car_heights))
        cw = int(ch * rng.uniform(1.5, 2.5))
        cy = int(rng.integers(horizon, max(horizon + 1, height - ch)))
        cx = int(rng.integers(0, max(1, width - cw)))
        image[cy : cy + ch, cx : cx + cw] = rng.integers(0, 255, 3)
    image += rng.normal(0.0, 6.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def street_scene(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic street-like BGR image: sky, building blocks, road, a few cars, sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = (1 - y) * np.float32([200, 130, 70]) + y * np.float32([190, 170, 150])
    image = np.broadcast_to(image, (height, width, 3)).copy()
    horizon = int(height * rng.uniform(0.4, 0.6))
    x = 0
    while x < width:
        bw = int(rng.integers(max(1, width // 12), max(2, width // 4)))
        image[int(rng.integers(0, max(1, horizon))) : horizon, x : x + bw] = rng.integers(40, 170, 3)
        x += bw
    image[horizon:] = (128, 64, 128)
    cars = int(rng.integers(1, 5))
    return paint_cars_and_noise(image, rng, horizon, cars, (max(1, height // 16), max(2, height // 5)))

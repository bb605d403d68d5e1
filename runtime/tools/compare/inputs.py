"""The images every comparison runs on: one generator for ``check``, ``verify``, the demo and calibrate.

Images are BGR uint8 at the artifact's input size (as OpenCV reads them); each side turns them into
its model input itself (the runtime from the sidecar, PyTorch from its own config), so a wrong
colour order or normalisation in a sidecar shows up as a difference.

Generated street scenes (:func:`runtime.tools.compare.scenes.street_scene`, seeded) decide verdicts,
as do image files. Pure noise is an optional diagnostic only: on noise the class scores are near
ties by construction, so any rounding flips labels there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import InputError
from runtime.io.images import list_images, read_image
from runtime.tools.compare.scenes import street_scene

DEFAULT_SCENES = 4


@dataclass(frozen=True)
class ComparisonImage:
    """One input: its name, the BGR image at the model size, and whether it may decide a verdict."""

    name: str
    image: np.ndarray
    decides: bool = True


def fit_to_model(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Stretch an image to the model size with the runtime's filter (area when shrinking)."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def image_files(folder: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """The image files of a folder (the runtime's listing: recursive, sorted), at most ``limit``."""
    return list_images(folder)[:limit]


def comparison_images(
    height: int,
    width: int,
    *,
    scenes: int = DEFAULT_SCENES,
    noise: int = 0,
    seed: int = 0,
    images: str | os.PathLike[str] | None = None,
    files: Sequence[str | os.PathLike[str]] = (),
    limit: int | None = None,
    require_deciding: bool = True,
) -> list[ComparisonImage]:
    """Seeded street scenes, the image files of ``images`` (a folder) and ``files``, then ``noise``
    diagnostic noise images, all BGR at ``height`` x ``width``.

    Raises:
        InputError: an unreadable image, or (``require_deciding``) no image that may decide.
    """
    out = [
        ComparisonImage(f"scene[{i}]", street_scene(height, width, seed + 1000 + i)) for i in range(scenes)
    ]
    paths = [*(image_files(images, limit) if images is not None else []), *map(Path, files)]
    for path in paths:
        out.append(ComparisonImage(path.name, fit_to_model(read_image(path), height, width)))
    rng = np.random.default_rng(seed)
    for i in range(noise):
        noisy = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out.append(ComparisonImage(f"noise[{i}]", noisy, decides=False))
    if require_deciding and not any(item.decides for item in out):
        raise InputError("nothing decides the verdict: give --scenes N (N >= 1) or image files")
    return out

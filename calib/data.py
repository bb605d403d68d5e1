"""Calibration images: Cityscapes ``leftImg8bit/<split>``, any image folder, or the synthetic set.

Images are sampled deterministically (``num_images`` of them, chosen by a seeded hash of their
relative paths, so the choice does not depend on the file system's listing order and adding
files changes it little) and preprocessed with the runtime's own
:class:`runtime.core.preprocess.Preprocessor`, so that the calibrated ranges are those the deployed
model sees.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from calib.errors import CalibrationError
from runtime.core.preprocess import InputFormat, Preprocessor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SYNTHETIC = "synthetic"


def resolve_root(data: str | os.PathLike[str]) -> Path:
    """``synthetic`` -> the default synthetic set (generated on first use); else the path itself."""
    if str(data) == SYNTHETIC:
        from pem.zoo import default_dataset_path

        return default_dataset_path("default")
    return Path(data)


def list_images(data: str | os.PathLike[str], split: str = "train") -> list[Path]:
    """Candidate calibration images under ``data``, sorted.

    A Cityscapes-layout folder (``leftImg8bit/<split>``; the synthetic set is one) gives its
    ``*_leftImg8bit.png`` files of ``split``; any other folder gives every image file below it.
    """
    root = resolve_root(data)
    if not root.exists():
        raise CalibrationError(f"calibration data {data}: no such folder")
    if not root.is_dir():
        raise CalibrationError(f"calibration data {data}: not a folder")
    cityscapes = root / "leftImg8bit"
    if cityscapes.is_dir():
        folder = cityscapes / split
        if not folder.is_dir():
            raise CalibrationError(f"calibration data {data}: Cityscapes layout without leftImg8bit/{split}")
        paths = sorted(folder.rglob("*_leftImg8bit.png"))
    else:
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise CalibrationError(f"calibration data {data}: no images found")
    return paths


def sample_images(paths: list[Path], num_images: int, seed: int = 0, root: Path | None = None) -> list[Path]:
    """``num_images`` of ``paths`` (all if fewer), chosen by a seeded hash; returned sorted."""
    if num_images < 1:
        raise CalibrationError(f"--calib-images {num_images}: must be >= 1")
    if len(paths) <= num_images:
        return list(paths)

    def key(path: Path) -> str:
        rel = path.relative_to(root).as_posix() if root is not None else path.name
        return hashlib.sha256(f"{seed}:{rel}".encode()).hexdigest()

    return sorted(sorted(paths, key=key)[:num_images])


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR, as the runtime gets images from OpenCV."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CalibrationError(f"{path}: cannot read image")
    return image


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the images' bytes (and their order): the data part of a cache key."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


class CalibrationImages:
    """The sampled images of a calibration set, as model inputs.

    Args:
        data: a Cityscapes-layout folder, any image folder, or ``"synthetic"``.
        fmt: the model input format (size, normalisation) - the runtime's :class:`InputFormat`.
        num_images: how many images to sample.
        seed: sampling seed.
        split: the Cityscapes split (``train``; calibration must not see evaluation images).
        resize: the runtime's resize mode (``stretch`` or ``letterbox``).
    """

    def __init__(
        self,
        data: str | os.PathLike[str],
        fmt: InputFormat,
        num_images: int = 200,
        seed: int = 0,
        split: str = "train",
        resize: str = "stretch",
    ):
        self.data = str(data)
        self.root = resolve_root(data)
        self.fmt = fmt
        self.paths = sample_images(list_images(data, split), num_images, seed, self.root)
        self.preprocessor = Preprocessor(fmt, resize, "BGR")  # type: ignore[arg-type]
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.paths)
        return self._fingerprint

    def __iter__(self) -> Iterator[np.ndarray]:
        """(1, 3, H, W) model inputs, one image at a time."""
        for path in self.paths:
            batch, _ = self.preprocessor([read_image(path)])
            yield batch

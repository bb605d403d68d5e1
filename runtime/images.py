"""Reading and validating images: every rejection is one line that names the input."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from contract.fs import atomic_write_bytes
from runtime.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_MAX_PIXELS = 64_000_000  # 8K x 8K; beyond that a camera frame is almost surely a mistake


def validate_image(image: object, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Check that ``image`` is an (H, W, 3) uint8 array and return it (C-contiguous).

    Raises :class:`InputError` naming ``name`` for anything else: empty, grayscale, RGBA,
    16-bit or float data, or more than ``max_pixels`` pixels.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise InputError(f"{name}: image is empty (shape {image.shape})")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise InputError(
            f"{name}: image is grayscale {image.shape[:2]}; the model needs 3-channel colour images"
        )
    if image.ndim != 3:
        raise InputError(f"{name}: expected an (H, W, 3) image, got shape {image.shape}")
    if image.shape[2] == 4:
        raise InputError(f"{name}: image has an alpha channel (4 channels); drop it before inference")
    if image.shape[2] != 3:
        raise InputError(f"{name}: expected 3 channels, got {image.shape[2]}")
    if image.dtype != np.uint8:
        depth = f"{image.dtype.itemsize * 8}-bit" if image.dtype.kind in "ui" else str(image.dtype)
        raise InputError(f"{name}: image is {depth} ({image.dtype}); only 8-bit images are supported")
    h, w = image.shape[:2]
    if h * w > max_pixels:
        raise InputError(f"{name}: image is {w}x{h} = {h * w} pixels, over the limit of {max_pixels}")
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 **BGR** (OpenCV order), validated."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported format)")
    return validate_image(image, str(path), max_pixels)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files of ``folder`` (recursively), sorted; raises if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Encode and write atomically (temp file + rename); the format follows the suffix."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise InputError(f"{path}: cannot encode image of shape {image.shape} and dtype {image.dtype}")
    atomic_write_bytes(path, buf.tobytes())

"""Reading and validating images: every rejection is one line that names the input.

Limits (pixels per image, bytes per file) are :mod:`runtime.core.image_input`'s, read when a
reader is created; the ``max_pixels`` / ``max_bytes`` arguments override them. Files are checked
from their header (:mod:`runtime.io.image_header`) before anything is decoded. OpenCV's own guard
(``OPENCV_IO_MAX_IMAGE_PIXELS``, read once per process) is left alone: the header check is
stricter, names the limit, and follows the per-call arguments.

What users of ``cv2.imread`` expect is accepted with a one-line note instead of refused:
grayscale is replicated to 3 channels, alpha is dropped, 16-bit samples are scaled to 8 bits
(the high byte, as OpenCV does). Files are decoded exactly as ``cv2.imread(path)`` decodes them
(``IMREAD_COLOR``, which applies the EXIF orientation), so ``pem-deploy infer`` and
``Segmenter.predict(cv2.imread(path))`` see the same pixels.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from contract.fs import atomic_write_bytes
from runtime.core.image_input import MAX_BYTES_ENV, max_bytes_limit, max_pixels_limit, too_many_pixels
from runtime.errors import InputError
from runtime.io.image_header import ImageHeader, check_complete, read_header

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class LoadedImage:
    """An image read from a file: (H, W, 3) uint8 BGR pixels, its header and conversion notes."""

    image: np.ndarray
    header: ImageHeader
    notes: list[str] = field(default_factory=list)


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path}: broken symbolic link (its target does not exist)") from None
        raise InputError(f"{path}: no such image file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: symbolic link loop") from None
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_image(
    path: str | os.PathLike[str], max_pixels: int | None = None, max_bytes: int | None = None
) -> LoadedImage:
    """Read an image file as (H, W, 3) uint8 **BGR**, exactly as ``cv2.imread(path)`` would.

    The header is checked first (format from the content, size, depth, pixel count against
    ``max_pixels``, file size against ``max_bytes``), then the file is checked to be complete and
    decoded. Raises :class:`InputError` with one line naming the file.
    """
    path = Path(path)
    info = _stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (device, pipe or socket)")
    if info.st_size == 0:
        raise InputError(f"{path}: file is empty")
    limit_bytes = max_bytes_limit(max_bytes)
    if info.st_size > limit_bytes:
        raise InputError(
            f"{path}: file is {info.st_size} bytes, over the limit of {limit_bytes} "
            f"(raise it with {MAX_BYTES_ENV}=N or max_bytes=N)"
        )
    try:
        with open(path, "rb") as f:
            header = read_header(f, str(path))
            _check_header(header, str(path), max_pixels)
            f.seek(0)
            data = f.read(info.st_size + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit_bytes:
        raise InputError(f"{path}: file grew past the limit of {limit_bytes} bytes while being read")
    return _decode_checked(data, header, str(path))


def decode_image_bytes(data: bytes, name: str = "image", max_pixels: int | None = None) -> LoadedImage:
    """An encoded image held in memory (e.g. a ROS ``CompressedImage``) as :func:`load_image`
    reads a file: header checked first (size against ``max_pixels``, depth, channels), then
    completeness, then decoded to (H, W, 3) uint8 BGR. Raises :class:`InputError` naming ``name``."""
    if not data:
        raise InputError(f"{name}: image data is empty")
    header = read_header(io.BytesIO(data), name)
    _check_header(header, name, max_pixels)
    return _decode_checked(bytes(data), header, name)


def _check_header(header: ImageHeader, name: str, max_pixels: int | None) -> None:
    """Refuse what the header declares before anything is decoded."""
    limit = max_pixels_limit(max_pixels)
    if header.pixels > limit:
        raise too_many_pixels(name, header.width, header.height, limit)
    if header.sample != "uint" or header.depth > 16:
        raise InputError(
            f"{name}: {header.format} with {header.depth}-bit {header.sample} samples; only 8- or "
            "16-bit unsigned images are supported (convert it to 8-bit)"
        )
    if header.channels > 4:
        raise InputError(f"{name}: {header.format} with {header.channels} channels; at most 4")


def _decode_checked(data: bytes, header: ImageHeader, name: str) -> LoadedImage:
    """Decode ``data`` whose header passed :func:`_check_header`, as ``cv2.imread`` would."""
    check_complete(data, header, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        message = " ".join(str(exc).split())[-160:]
        raise InputError(f"{name}: OpenCV cannot decode this {header.format} ({message})") from None
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{name}: not a readable image (corrupt or unsupported {header.format})")
    if image.shape[:2] not in ((header.height, header.width), (header.width, header.height)):
        raise InputError(
            f"{name}: decoded {image.shape[1]}x{image.shape[0]} but the header declares "
            f"{header.width}x{header.height} (corrupt file)"
        )
    parts = []
    if header.channels in (1, 2):
        parts.append("grayscale replicated to 3 channels")
    if header.channels in (2, 4):
        parts.append("alpha channel dropped")
    if header.depth == 16:
        parts.append("16-bit values scaled to 8-bit")
    if header.format == "JPEG" and header.orientation != 1:
        parts.append(f"EXIF orientation {header.orientation} applied (as cv2.imread does)")
    notes = [f"{name}: {', '.join(parts)}"] if parts else []
    return LoadedImage(np.ascontiguousarray(image), header, notes)


def read_image(
    path: str | os.PathLike[str], max_pixels: int | None = None, max_bytes: int | None = None
) -> np.ndarray:
    """:func:`load_image` without the notes: (H, W, 3) uint8 BGR pixels."""
    return load_image(path, max_pixels, max_bytes).image


def list_images(folder: str | os.PathLike[str], errors: list[tuple[str, str]] | None = None) -> list[Path]:
    """Image files of ``folder`` (recursively, by suffix), sorted by relative path.

    Symbolic links to folders are not followed (no loops); links named like images are listed
    (a broken one is then reported by the reader). Sub-folders that cannot be listed are
    appended to ``errors`` as ``(relative path, message)`` when given, else raise. Raises if
    nothing is found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")

    def failed(exc: OSError) -> None:
        where = Path(exc.filename or folder)
        message = f"{where}: cannot list folder ({exc.strerror or exc})"
        if errors is None:
            raise InputError(message)
        errors.append((str(where.relative_to(folder)) if where != folder else ".", message))

    files = []
    for root, _, names in os.walk(folder, onerror=failed):
        files += [Path(root, n) for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    files.sort(key=lambda p: p.relative_to(folder).as_posix())
    if not files and not errors:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Encode and write atomically (temp file + rename); the format follows the suffix."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise InputError(f"{path}: cannot encode image of shape {image.shape} and dtype {image.dtype}")
    atomic_write_bytes(path, buf.tobytes())

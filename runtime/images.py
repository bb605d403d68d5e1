"""Reading and validating images: every rejection is one line that names the input.

Limits: an image may have at most ``PEM_DEPLOY_MAX_PIXELS`` pixels (default 100 million) and an
image file at most ``PEM_DEPLOY_MAX_IMAGE_BYTES`` bytes (default 1 GiB); both are read from the
environment when a reader or :class:`~runtime.segmenter.Segmenter` is created, and the
``max_pixels`` / ``max_bytes`` arguments override them. Files are checked from their header
(:mod:`runtime.image_header`) before anything is decoded. OpenCV's own guard
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
from runtime.errors import InputError
from runtime.image_header import ImageHeader, check_complete, read_header

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_MAX_PIXELS = 100_000_000  # 10000 x 10000
DEFAULT_MAX_BYTES = 1 << 30
MAX_PIXELS_ENV = "PEM_DEPLOY_MAX_PIXELS"
MAX_BYTES_ENV = "PEM_DEPLOY_MAX_IMAGE_BYTES"


def _limit(value: int | None, env: str, default: int, what: str) -> int:
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise InputError(f"{env}={text!r}: not an integer ({what})") from None
        source = env
    else:
        source = what
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{source}: must be a positive integer, got {value!r}")
    return value


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """``max_pixels`` if given, else ``$PEM_DEPLOY_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    return _limit(max_pixels, MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "max_pixels")


def max_bytes_limit(max_bytes: int | None = None) -> int:
    """``max_bytes`` if given, else ``$PEM_DEPLOY_MAX_IMAGE_BYTES``, else :data:`DEFAULT_MAX_BYTES`."""
    return _limit(max_bytes, MAX_BYTES_ENV, DEFAULT_MAX_BYTES, "max_bytes")


def _too_many_pixels(name: str, w: int, h: int, limit: int) -> InputError:
    return InputError(
        f"{name}: image is {w}x{h} = {w * h} pixels, over the limit of {limit} "
        f"(raise it with {MAX_PIXELS_ENV}=N or max_pixels=N)"
    )


def prepare_image(
    image: object, name: str = "image", max_pixels: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """Check an array and bring it to the model's (H, W, 3) uint8 form; return it and notes.

    Accepted: (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) arrays of uint8 or uint16 (any byte
    order or strides). Grayscale is replicated to 3 channels, a 4th (alpha) channel dropped and
    16-bit values scaled to 8 bits (``v >> 8``); each conversion adds a one-line note. Anything
    else (other dtypes, ranks or channel counts, empty, over ``max_pixels``) raises
    :class:`InputError` naming ``name``.
    """
    if not isinstance(image, np.ndarray):
        hint = " (for several images use predict_batch)" if isinstance(image, (list, tuple)) else ""
        raise InputError(f"{name}: expected a numpy array, got {type(image).__name__}{hint}")
    image = np.asarray(image)
    if image.dtype.fields is not None or image.dtype.kind not in "biufcOSUmMV":
        raise InputError(f"{name}: unsupported array dtype {image.dtype}")
    if image.dtype.kind != "u" or image.dtype.itemsize not in (1, 2):
        raise InputError(
            f"{name}: image dtype is {image.dtype}; only uint8 or uint16 images are accepted "
            "(convert floats in [0, 1] with (x * 255).round().astype(np.uint8))"
        )
    if image.ndim == 4:
        raise InputError(
            f"{name}: got a 4-D array {image.shape}; pass one (H, W, C) image, or a list to predict_batch"
        )
    if image.ndim not in (2, 3):
        raise InputError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if image.size == 0:
        raise InputError(f"{name}: image is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        hint = " (looks channels-first: transpose to (H, W, C))" if image.shape[0] in (1, 3, 4) else ""
        raise InputError(f"{name}: expected 1, 3 or 4 channels, got shape {image.shape}{hint}")
    h, w = image.shape[:2]
    limit = max_pixels_limit(max_pixels)
    if h * w > limit:
        raise _too_many_pixels(name, w, h, limit)
    notes: list[str] = []
    if image.dtype.itemsize == 2:
        image = (image.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
        notes.append("16-bit values scaled to 8-bit")
    elif not image.dtype.isnative:
        image = image.astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(h, w, 1), 3, axis=2)
        notes.append("grayscale replicated to 3 channels")
    elif image.shape[2] == 4:
        image = image[:, :, :3]
        notes.append("alpha channel dropped")
    note = [f"{name}: {', '.join(notes)}"] if notes else []
    return np.ascontiguousarray(image), note


def validate_image(image: object, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """:func:`prepare_image` without the notes: the (H, W, 3) uint8 C-contiguous array."""
    return prepare_image(image, name, max_pixels)[0]


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
        raise _too_many_pixels(name, header.width, header.height, limit)
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

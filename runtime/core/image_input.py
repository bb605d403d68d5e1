"""The check every image goes through before the model, whatever its source, and the size limits.

:func:`prepare_image` brings an array to the model's (H, W, 3) uint8 form (or refuses it in one
line that names it). Limits: an image may have at most ``PEM_DEPLOY_MAX_PIXELS`` pixels (default
100 million) and an image file at most ``PEM_DEPLOY_MAX_IMAGE_BYTES`` bytes (default 1 GiB); both
are read from the environment when a reader or :class:`~runtime.core.segmenter.Segmenter` is created,
and the ``max_pixels`` / ``max_bytes`` arguments override them. File reading lives in
:mod:`runtime.io.images`.
"""

from __future__ import annotations

import os

import numpy as np

from runtime.errors import InputError

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


def too_many_pixels(name: str, w: int, h: int, limit: int) -> InputError:
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
        raise too_many_pixels(name, w, h, limit)
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

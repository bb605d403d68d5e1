"""Image -> model input: colour order, resizing (stretch or letterbox), normalisation, layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

ResizeMode = Literal["stretch", "letterbox"]


@dataclass(frozen=True)
class InputFormat:
    """What the model's input tensor expects (read from the artifact's sidecar).

    ``normalize_in_graph``: the graph takes raw 0-255 values (``dtype`` uint8 or float32) and
    normalises itself; otherwise we apply ``(x - mean) / std`` here.
    """

    height: int
    width: int
    color: Literal["RGB", "BGR"] = "RGB"
    dtype: Literal["uint8", "float32", "float16"] = "float32"
    normalize_in_graph: bool = False
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Geometry:
    """How an original image maps into the model input (to undo it afterwards).

    The resized image occupies ``[0, resized_h) x [0, resized_w)`` of the input; the rest is padding.
    """

    original_h: int
    original_w: int
    resized_h: int
    resized_w: int


def fit_size(h: int, w: int, fmt: InputFormat, mode: ResizeMode) -> tuple[int, int]:
    """Size the image is resized to before padding."""
    if mode == "stretch":
        return fmt.height, fmt.width
    scale = min(fmt.height / h, fmt.width / w)
    return max(1, min(fmt.height, round(h * scale))), max(1, min(fmt.width, round(w * scale)))


class Preprocessor:
    """Turns (H, W, 3) uint8 images into the model's (B, 3, height, width) input.

    Args:
        fmt: the model input format.
        resize: ``stretch`` (ignore aspect ratio) or ``letterbox`` (keep it, pad bottom/right).
        input_color: channel order of the images given to :meth:`__call__` (OpenCV gives BGR).
    """

    def __init__(
        self, fmt: InputFormat, resize: ResizeMode = "stretch", input_color: Literal["BGR", "RGB"] = "BGR"
    ):
        if resize not in ("stretch", "letterbox"):
            raise ValueError(f"resize must be 'stretch' or 'letterbox', got {resize!r}")
        if input_color not in ("BGR", "RGB"):
            raise ValueError(f"input_color must be 'BGR' or 'RGB', got {input_color!r}")
        self.fmt = fmt
        self.resize = resize
        self.input_color = input_color
        self._mean = np.asarray(fmt.mean, np.float32).reshape(3, 1, 1)
        self._inv_std = (1.0 / np.asarray(fmt.std, np.float32)).reshape(3, 1, 1)

    def one(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """(H, W, 3) uint8 -> ((3, height, width) model-ready array, geometry)."""
        fmt = self.fmt
        h, w = image.shape[:2]
        rh, rw = fit_size(h, w, fmt, self.resize)
        if (rh, rw) != (h, w):
            interp = cv2.INTER_AREA if rh * rw < h * w else cv2.INTER_LINEAR
            image = cv2.resize(image, (rw, rh), interpolation=interp)
        if self.input_color != fmt.color:
            image = image[:, :, ::-1]  # a view; the copy below makes it contiguous
        chw = image.transpose(2, 0, 1)
        if fmt.normalize_in_graph:
            # The graph normalises: pad with the (rounded) mean so padding still lands near zero.
            out = np.empty((3, fmt.height, fmt.width), dtype=fmt.dtype)
            out[:] = np.round(self._mean) if fmt.dtype == "uint8" else self._mean
            out[:, :rh, :rw] = chw
        else:
            # Normalised padding is exactly zero, as detectron2 pads batches in training.
            out = np.zeros((3, fmt.height, fmt.width), dtype=fmt.dtype)
            out[:, :rh, :rw] = (chw.astype(np.float32) - self._mean) * self._inv_std
        return out, Geometry(h, w, rh, rw)

    def __call__(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[Geometry]]:
        """List of (H_i, W_i, 3) uint8 images -> ((B, 3, height, width) batch, geometries)."""
        tensors, geometries = zip(*(self.one(image) for image in images))
        return np.stack(tensors), list(geometries)

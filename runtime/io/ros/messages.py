"""ROS 2 image messages <-> numpy, shared by the bag path and the live node (numpy + OpenCV only).

Input messages are read by attribute (duck typing), so the same code takes ``rosbags``
dataclasses and ``rclpy`` messages. Outputs are built as plain field records
(:class:`ImageFields`, :class:`CompressedFields`, :class:`StringFields`) and turned into a
concrete message class by :func:`build` with the classes of either library (:class:`MessageTypes`).

Message layout of a segmentation (one per input frame, ``header`` copied from the source):

- ``labels``: ``sensor_msgs/Image``, ``mono8`` class ids (``mono16`` when the model has more than
  255 classes); panoptic artifacts put 255 where no segment is.
- ``panoptic`` (panoptic artifacts): ``sensor_msgs/Image`` ``mono16`` segment ids, 0 = void.
- ``segments`` (panoptic artifacts): ``std_msgs/String`` holding JSON
  ``{"header": {"stamp": {"sec", "nanosec"}, "frame_id"}, "segments": [{"id", "category_id",
  "category", "isthing", "score", "area"}]}``; ``id`` is the value in the panoptic image.
- ``overlay``: ``sensor_msgs/CompressedImage``, format ``jpeg``, the colour map blended on the frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.core.image_input import MAX_PIXELS_ENV, max_pixels_limit
from runtime.core.postprocess import Segment, colorize_labels, colorize_panoptic, overlay
from runtime.errors import InputError
from runtime.io.images import decode_image_bytes

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
STRING_TYPE = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


class MessageError(InputError):
    """An image message cannot be converted (unknown encoding, wrong size, corrupt data)."""


# encoding -> (channels, bytes per channel). Colour conversions are in ``_to_bgr``.
_LAYOUTS: dict[str, tuple[int, int]] = {
    "bgr8": (3, 1),
    "rgb8": (3, 1),
    "8UC3": (3, 1),
    "bgra8": (4, 1),
    "rgba8": (4, 1),
    "8UC4": (4, 1),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "mono16": (1, 2),
    "16UC1": (1, 2),
    "bgr16": (3, 2),
    "rgb16": (3, 2),
    "16UC3": (3, 2),
    "bgra16": (4, 2),
    "rgba16": (4, 2),
    "yuv422": (2, 1),
    "uyvy": (2, 1),
    "yuv422_yuy2": (2, 1),
    "yuyv": (2, 1),
}
# ROS Bayer names give the colours of the top-left 2x2 block; OpenCV's classic codes are named
# after the second row's second and third pixels, hence the apparent mismatch.
_BAYER = {
    "rggb": cv2.COLOR_BayerBG2BGR,
    "bggr": cv2.COLOR_BayerRG2BGR,
    "gbrg": cv2.COLOR_BayerGR2BGR,
    "grbg": cv2.COLOR_BayerGB2BGR,
}
for _pattern in _BAYER:
    _LAYOUTS[f"bayer_{_pattern}8"] = (1, 1)
    _LAYOUTS[f"bayer_{_pattern}16"] = (1, 2)
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
COMPRESSED_FORMATS = ("jpeg", "png")


@dataclass(frozen=True)
class Stamp:
    """``builtin_interfaces/Time``."""

    sec: int
    nanosec: int

    @property
    def ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    @classmethod
    def from_ns(cls, ns: int) -> Stamp:
        return cls(ns // 1_000_000_000, ns % 1_000_000_000)


@dataclass(frozen=True)
class Header:
    """``std_msgs/Header``."""

    stamp: Stamp
    frame_id: str


@dataclass(frozen=True)
class ImageFields:
    """The fields of a ``sensor_msgs/Image``; ``data`` is a 1-D uint8 array of ``step * height``."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


@dataclass(frozen=True)
class CompressedFields:
    """The fields of a ``sensor_msgs/CompressedImage``."""

    header: Header
    format: str
    data: np.ndarray


@dataclass(frozen=True)
class StringFields:
    """The field of a ``std_msgs/String``."""

    data: str


Fields = ImageFields | CompressedFields | StringFields


def header_of(msg: Any) -> Header:
    """The header of any message with ``header.stamp.{sec,nanosec}`` and ``header.frame_id``."""
    return Header(Stamp(int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)), str(msg.header.frame_id))


# -- decoding -------------------------------------------------------------------------------


def decode_image(msg: Any, topic: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """A ``sensor_msgs/Image`` or ``CompressedImage`` -> (H, W, 3) uint8 BGR.

    16-bit data is scaled to 8 bits by keeping the high byte (``value >> 8``); Bayer mosaics are
    demosaiced with OpenCV; alpha is dropped. The declared size, step and data length (Image) or
    the encoded header (CompressedImage) are checked before anything is decoded, with the limits
    of image files (:func:`runtime.core.image_input.max_pixels_limit`). Raises :class:`MessageError` naming
    ``topic``.
    """
    if hasattr(msg, "encoding"):
        return _decode_raw(msg, topic, max_pixels)
    if hasattr(msg, "format"):
        return _decode_compressed(msg, topic, max_pixels)
    raise MessageError(f"{topic}: {type(msg).__name__} is not an Image or CompressedImage message")


# Packed 4:2:2 formats carry one U/V pair per two pixels: the width must be even.
_PACKED_422 = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")


def _declared(msg: Any, field: str, topic: str) -> int:
    """An integer field of an Image message (rclpy / rosbags give ints; duck types may not)."""
    value = getattr(msg, field, None)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MessageError(f"{topic}: Image field {field} must be an integer, got {type(value).__name__}")
    return int(value)


def _decode_raw(msg: Any, topic: str, max_pixels: int | None = None) -> np.ndarray:
    encoding = str(msg.encoding)
    layout = _LAYOUTS.get(encoding) or _LAYOUTS.get(encoding.lower())
    if layout is None:
        raise MessageError(
            f"{topic}: unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, depth = layout
    height, width, step = (_declared(msg, f, topic) for f in ("height", "width", "step"))
    row = width * channels * depth
    if height <= 0 or width <= 0:
        raise MessageError(f"{topic}: empty {encoding} image ({width}x{height})")
    limit = max_pixels_limit(max_pixels)
    if width * height > limit:
        raise MessageError(
            f"{topic}: {encoding} image declares {width}x{height} = {width * height} pixels, over the "
            f"limit of {limit} (raise it with {MAX_PIXELS_ENV}=N)"
        )
    if encoding.lower() in _PACKED_422 and width % 2:
        raise MessageError(
            f"{topic}: {encoding} image has an odd width {width}; packed 4:2:2 needs an even width"
        )
    if step < row:
        raise MessageError(
            f"{topic}: {encoding} image {width}x{height} has step {step} < {row} bytes per row"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != step * height:
        raise MessageError(
            f"{topic}: {encoding} image {width}x{height} with step {step} needs {step * height} bytes, "
            f"message has {buf.size}"
        )
    rows = np.ascontiguousarray(buf.reshape(height, step)[:, :row])
    if depth == 2:
        big = bool(msg.is_bigendian)
        pixels = rows.view(">u2" if big else "<u2").reshape(height, width, channels)
        pixels = (pixels >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, channels)
    return _to_bgr(pixels, encoding.lower() if encoding not in _LAYOUTS else encoding)


def _to_bgr(pixels: np.ndarray, encoding: str) -> np.ndarray:
    if encoding.startswith("bayer_"):
        return cv2.cvtColor(pixels[:, :, 0], _BAYER[encoding[6:10]])
    if encoding in ("yuv422", "uyvy"):
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2BGR_UYVY)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2BGR_YUY2)
    channels = pixels.shape[2]
    if channels == 1:
        return cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2BGR)
    rgb_order = encoding.startswith("rgb")
    if channels == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGR if rgb_order else cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(pixels[:, :, ::-1]) if rgb_order else np.ascontiguousarray(pixels)


def _decode_compressed(msg: Any, topic: str, max_pixels: int | None = None) -> np.ndarray:
    fmt = str(msg.format)
    low = fmt.lower()
    if "compresseddepth" in low or not any(f in low for f in ("jpeg", "jpg", "png")):
        raise MessageError(
            f"{topic}: unsupported CompressedImage format {fmt!r} "
            f"(supported: {', '.join(COMPRESSED_FORMATS)})"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if not data.size:
        raise MessageError(f"{topic}: CompressedImage ({fmt}) data is empty")
    # The header is read first, with the limits of image files: a PNG declaring 65535 x 65535
    # pixels is refused before OpenCV allocates anything.
    try:
        return decode_image_bytes(data.tobytes(), f"{topic}: CompressedImage ({fmt})", max_pixels).image
    except InputError as exc:
        raise MessageError(str(exc)) from None


# -- encoding -------------------------------------------------------------------------------


def image_fields(image: np.ndarray, header: Header, encoding: str = "bgr8") -> ImageFields:
    """An image as ``sensor_msgs/Image`` fields.

    ``image`` is (H, W, 3) uint8 BGR for ``bgr8`` / ``rgb8`` / ``bgra8`` / ``rgba8`` / ``mono8`` /
    ``mono16`` (converted), or an (H, W) integer map for ``mono8`` / ``mono16`` (stored as is).
    16-bit data is little-endian.
    """
    if encoding in ("mono8", "mono16") and image.ndim == 2:
        dtype = np.uint8 if encoding == "mono8" else np.dtype("<u2")
        limit = np.iinfo(dtype).max
        if image.size and (int(image.min()) < 0 or int(image.max()) > limit):
            raise MessageError(f"{encoding}: values {int(image.min())}..{int(image.max())} do not fit")
        plane = np.ascontiguousarray(image.astype(dtype))
    elif image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        conversions = {
            "bgr8": None,
            "rgb8": cv2.COLOR_BGR2RGB,
            "bgra8": cv2.COLOR_BGR2BGRA,
            "rgba8": cv2.COLOR_BGR2RGBA,
            "mono8": cv2.COLOR_BGR2GRAY,
            "mono16": cv2.COLOR_BGR2GRAY,
        }
        if encoding not in conversions:
            raise MessageError(f"cannot encode a BGR image as {encoding!r} (use {', '.join(conversions)})")
        code = conversions[encoding]
        plane = image if code is None else cv2.cvtColor(image, code)
        if encoding == "mono16":
            plane = plane.astype("<u2") << 8
        plane = np.ascontiguousarray(plane)
    else:
        raise MessageError(f"cannot encode an array of shape {image.shape} ({image.dtype}) as {encoding!r}")
    height, width = plane.shape[:2]
    data = plane.reshape(-1).view(np.uint8)
    return ImageFields(header, height, width, encoding, 0, data.size // height, data)


def compressed_fields(
    image: np.ndarray, header: Header, fmt: str = "jpeg", quality: int = 90
) -> CompressedFields:
    """An (H, W, 3) BGR image as ``sensor_msgs/CompressedImage`` fields (``jpeg`` or ``png``)."""
    if fmt not in COMPRESSED_FORMATS:
        raise MessageError(f"cannot compress as {fmt!r} (use {', '.join(COMPRESSED_FORMATS)})")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", image, params)
    if not ok:
        raise MessageError(f"cannot encode image of shape {image.shape} as {fmt}")
    return CompressedFields(header, fmt, buf.reshape(-1))


def segments_json(segments: Sequence[Segment], class_names: Sequence[str], header: Header) -> str:
    """The ``segments`` message's JSON text (layout in the module docstring)."""
    payload = {
        "header": {
            "stamp": {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec},
            "frame_id": header.frame_id,
        },
        "segments": [
            {
                "id": s.id,
                "category_id": s.category_id,
                "category": class_names[s.category_id] if 0 <= s.category_id < len(class_names) else "",
                "isthing": s.isthing,
                "score": round(float(s.score), 4),
                "area": int(s.area),
            }
            for s in segments
        ],
    }
    return json.dumps(payload, separators=(",", ":"))


@dataclass(frozen=True)
class SegmentationMessages:
    """The messages published for one frame (``None`` where not produced)."""

    labels: ImageFields
    panoptic: ImageFields | None = None
    segments: StringFields | None = None
    overlay: CompressedFields | None = None


def segmentation_messages(
    result: Any,
    image_bgr: np.ndarray,
    header: Header,
    class_names: Sequence[str],
    palette_rgb: np.ndarray,
    with_overlay: bool = True,
    alpha: float = 0.5,
    jpeg_quality: int = 90,
) -> SegmentationMessages:
    """A :class:`runtime.Result` for ``image_bgr`` -> its messages, all with ``header``."""
    labels = image_fields(result.labels, header, "mono8" if len(class_names) <= 255 else "mono16")
    panoptic = segments = None
    if result.panoptic is not None:
        panoptic = image_fields(result.panoptic, header, "mono16")
        segments = StringFields(segments_json(result.segments, class_names, header))
    over = None
    if with_overlay:
        colors = (
            colorize_panoptic(result.panoptic, result.segments, palette_rgb)
            if result.panoptic is not None
            else colorize_labels(result.labels, palette_rgb)
        )
        over = compressed_fields(overlay(image_bgr, colors, alpha), header, "jpeg", jpeg_quality)
    return SegmentationMessages(labels, panoptic, segments, over)


def labels_array(fields: Any) -> np.ndarray:
    """A ``mono8`` / ``mono16`` label or id image message -> (H, W) int32 (reading results back)."""
    encoding = str(fields.encoding)
    if encoding not in ("mono8", "mono16", "8UC1", "16UC1"):
        raise MessageError(f"label image has encoding {encoding!r}; expected mono8 or mono16")
    depth = 2 if encoding in ("mono16", "16UC1") else 1
    height, width, step = (_declared(fields, f, "label image") for f in ("height", "width", "step"))
    data = np.frombuffer(fields.data, np.uint8)
    if height <= 0 or width <= 0 or step < width * depth or data.size != step * height:
        raise MessageError(
            f"label image {width}x{height} ({encoding}, step {step}) does not fit its {data.size} bytes"
        )
    rows = data.reshape(height, step)[:, : width * depth]
    rows = np.ascontiguousarray(rows)
    if depth == 1:
        return rows.astype(np.int32)
    return rows.view(">u2" if fields.is_bigendian else "<u2").astype(np.int32)


# -- topics and concrete message classes ----------------------------------------------------


@dataclass(frozen=True)
class OutputTopics:
    """Where the messages of one input topic go."""

    labels: str
    panoptic: str
    segments: str
    overlay: str


def output_topics(input_topic: str, namespace: str = "pem") -> OutputTopics:
    """Default output topics: ``<base>/<namespace>/{labels, panoptic, panoptic/segments,
    overlay/compressed}``, ``<base>`` being the input topic without a trailing ``/compressed``."""
    base = input_topic.rstrip("/")
    if base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    prefix = f"{base}/{namespace}" if namespace else base
    return OutputTopics(
        f"{prefix}/labels",
        f"{prefix}/panoptic",
        f"{prefix}/panoptic/segments",
        f"{prefix}/overlay/compressed",
    )


@dataclass(frozen=True)
class MessageTypes:
    """The message classes of one library (rosbags typestore or rclpy) and how it takes byte arrays."""

    image: type
    compressed_image: type
    string: type
    header: type
    time: type
    data: Callable[[np.ndarray], Any] = lambda array: array


def build(fields: Fields, types: MessageTypes) -> Any:
    """Field record -> message of ``types`` (keyword construction works for rosbags and rclpy)."""
    if isinstance(fields, StringFields):
        return types.string(data=fields.data)
    header = types.header(
        stamp=types.time(sec=fields.header.stamp.sec, nanosec=fields.header.stamp.nanosec),
        frame_id=fields.header.frame_id,
    )
    if isinstance(fields, CompressedFields):
        return types.compressed_image(header=header, format=fields.format, data=types.data(fields.data))
    return types.image(
        header=header,
        height=fields.height,
        width=fields.width,
        encoding=fields.encoding,
        is_bigendian=fields.is_bigendian,
        step=fields.step,
        data=types.data(fields.data),
    )

"""ROS 2 bags in and out (``pem-deploy infer ARTIFACT drive.mcap --topic /camera/image_raw``).

Reads MCAP and sqlite3 bags (a ``.mcap`` / ``.db3`` file or a bag folder with ``metadata.yaml``)
with the pure-Python ``rosbags`` package (the ``ros`` extra), segments the image topics and writes
either a new bag (``--out seg.mcap`` / ``seg.db3``: one storage file, topics and message layout in
:mod:`runtime.ros.messages`) or image files to a folder as ``infer`` does for videos.

The output bag is written into a temporary folder beside the destination and renamed into place
when complete; an existing destination is refused unless ``exist_ok``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.errors import one_line
from runtime.batch_infer import InferSummary
from runtime.errors import InputError, RuntimeToolError
from runtime.ros.messages import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    IMAGE_TYPES,
    STRING_TYPE,
    Header,
    MessageTypes,
    Stamp,
    build,
    decode_image,
    header_of,
    image_fields,
    output_topics,
    segmentation_messages,
)
from runtime.segmenter import Segmenter

BAG_SUFFIXES = (".mcap", ".db3")
Progress = Callable[[int, "int | None"], None]


class BagError(InputError):
    """A bag cannot be read or written: truncated or corrupt file, missing topic, wrong type."""


class RosbagsMissingError(RuntimeToolError):
    """The ``rosbags`` package is not installed."""


def _rosbags() -> Any:
    try:
        import rosbags.rosbag2 as rosbag2
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise RosbagsMissingError(
            "ROS 2 bags need the 'rosbags' package: pip install 'pem-deploy[ros]' (or pip install rosbags)"
        ) from None
    store = Stores.ROS2_JAZZY if hasattr(Stores, "ROS2_JAZZY") else Stores.LATEST
    return rosbag2, get_typestore(store)


def is_bag(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``.mcap`` / ``.db3`` file or a rosbag2 folder (holding ``metadata.yaml``)."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_SUFFIXES


def is_bag_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``--out`` names a bag file (``.mcap`` / ``.db3``) rather than an image folder."""
    return Path(path).suffix.lower() in BAG_SUFFIXES


@dataclass(frozen=True)
class BagFrame:
    """One decoded image message: its topic, bag (log) time in ns, header and BGR image.

    ``raw`` is the serialized source message and ``msgtype`` its type, for copying it to the output.
    """

    topic: str
    timestamp: int
    header: Header
    image: np.ndarray
    msgtype: str = IMAGE_TYPE
    raw: bytes | None = None


class BagReader:
    """The image messages of ``topics`` in a bag, in time order, decoded to BGR.

    ``total`` is the number of frames to expect, from the bag's index (capped by ``max_frames``).
    Use as a context manager; every failure is a one-line :class:`BagError` naming the bag.
    """

    def __init__(self, path: str | os.PathLike[str], topics: Iterable[str], max_frames: int | None = None):
        self.path = Path(path)
        self.topics = list(dict.fromkeys(topics))
        if not self.topics:
            raise BagError(f"{self.path}: give the image topic(s) to segment with --topic")
        if max_frames is not None and max_frames < 1:
            raise BagError(f"--max-frames {max_frames}: must be >= 1")
        self.max_frames = max_frames
        rosbag2, self.typestore = _rosbags()
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag file or folder")
        try:
            self._reader = rosbag2.Reader(self.path)
            self._reader.open()
        except (rosbag2.ReaderError, FileNotFoundError) as exc:
            raise BagError(f"{self.path}: not a readable ROS 2 bag ({exc})") from None
        self._error = rosbag2.ReaderError
        try:
            self.connections = self._select()
        except BaseException:
            self.close()
            raise
        indexed = sum(c.msgcount for c in self.connections)
        self.total = min(indexed, max_frames) if max_frames else indexed

    def _select(self) -> list[Any]:
        available = {c.topic: c for c in self._reader.connections}
        chosen = []
        for topic in self.topics:
            matches = [c for c in self._reader.connections if c.topic == topic]
            if not matches:
                listing = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(available.items())) or "none"
                raise BagError(f"{self.path}: no topic {topic!r} in the bag (topics: {listing})")
            for c in matches:
                if c.msgtype not in IMAGE_TYPES:
                    raise BagError(
                        f"{self.path}: topic {topic} has type {c.msgtype}; "
                        f"expected {' or '.join(IMAGE_TYPES)}"
                    )
            chosen.extend(matches)
        return chosen

    def __iter__(self) -> Iterator[BagFrame]:
        count = 0
        try:
            for connection, timestamp, raw in self._reader.messages(connections=self.connections):
                if self.max_frames is not None and count >= self.max_frames:
                    return
                topic = connection.topic
                try:
                    msg = self.typestore.deserialize_cdr(raw, connection.msgtype)
                except Exception as exc:  # the deserializer raises many types on bad bytes
                    raise BagError(
                        f"{self.path}: message {count} on {topic} cannot be decoded "
                        f"({type(exc).__name__}: {exc}); the bag is corrupt"
                    ) from None
                header, image = self._decode(msg, topic, count, timestamp)
                count += 1
                yield BagFrame(topic, timestamp, header, image, connection.msgtype, bytes(raw))
        except self._error as exc:
            raise BagError(f"{self.path}: bag is truncated or corrupt ({exc})") from None
        if count == 0:
            raise BagError(f"{self.path}: topic(s) {', '.join(self.topics)} have no messages")

    def _decode(self, msg: Any, topic: str, index: int, timestamp: int) -> tuple[Header, np.ndarray]:
        """One message's header and BGR image; any failure is a :class:`BagError` naming the
        bag, the topic, the message's index and its stamp (a bad frame is found in seconds)."""
        where = f"message {index}, bag time {timestamp} ns"
        try:
            header = header_of(msg)
            stamp = f"{header.stamp.sec}.{header.stamp.nanosec:09d}"
            where = f"message {index}, stamp {stamp}, bag time {timestamp} ns"
            return header, decode_image(msg, topic)
        except InputError as exc:
            raise BagError(one_line(f"{self.path}: {exc} ({where})")) from None
        except Exception as exc:  # OpenCV / numpy raise many types on bad data
            raise BagError(
                one_line(f"{self.path}: {topic}: cannot be decoded ({type(exc).__name__}: {exc}) ({where})")
            ) from None

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None and reader.is_open:
            reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _staging_for(out: Path, exist_ok: bool) -> Path:
    if out.is_dir():
        raise BagError(f"{out}: is a folder; give a .mcap or .db3 file name for the output bag")
    if out.exists() and not exist_ok:
        raise BagError(f"{out}: already exists; pass --exist-ok to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def write_bag(
    segmenter: Segmenter,
    frames: Iterable[BagFrame],
    out: str | os.PathLike[str],
    exist_ok: bool = False,
    overlays: bool = True,
    alpha: float = 0.5,
    copy_input: bool = False,
    namespace: str = "pem",
    progress: Progress | None = None,
    total: int | None = None,
) -> InferSummary:
    """Segment ``frames`` and write the result messages to the bag file ``out`` (``.mcap``/``.db3``).

    Per input topic: ``labels``, for panoptic artifacts ``panoptic`` and ``segments``, and with
    ``overlays`` an ``overlay`` topic (see :func:`runtime.ros.messages.output_topics`), each message
    logged at the source message's bag time with its header copied. ``copy_input`` also copies
    the source messages. Nothing appears at ``out`` unless the whole bag was written.
    """
    rosbag2, typestore = _rosbags()
    out = Path(out)
    if out.suffix.lower() not in BAG_SUFFIXES:
        raise BagError(f"{out}: output bag must end in .mcap or .db3")
    plugin = rosbag2.StoragePlugin.MCAP if out.suffix.lower() == ".mcap" else rosbag2.StoragePlugin.SQLITE3
    types = MessageTypes(
        typestore.types[IMAGE_TYPE],
        typestore.types[COMPRESSED_TYPE],
        typestore.types[STRING_TYPE],
        typestore.types["std_msgs/msg/Header"],
        typestore.types["builtin_interfaces/msg/Time"],
    )
    artifact = segmenter.artifact
    names = [c.name for c in artifact.classes]
    panoptic = artifact.head == "panoptic"
    staging = _staging_for(out, exist_ok)
    writer = None
    try:
        bag_dir = staging / "bag"
        writer = rosbag2.Writer(bag_dir, version=9, storage_plugin=plugin)
        writer.open()
        connections: dict[str, dict[str, Any]] = {}

        def connect(frame: BagFrame) -> dict[str, Any]:
            topics = output_topics(frame.topic, namespace)
            conns: dict[str, Any] = {
                "labels": writer.add_connection(topics.labels, IMAGE_TYPE, typestore=typestore)
            }
            if panoptic:
                conns["panoptic"] = writer.add_connection(topics.panoptic, IMAGE_TYPE, typestore=typestore)
                conns["segments"] = writer.add_connection(topics.segments, STRING_TYPE, typestore=typestore)
            if overlays:
                conns["overlay"] = writer.add_connection(topics.overlay, COMPRESSED_TYPE, typestore=typestore)
            if copy_input:
                conns["input"] = writer.add_connection(frame.topic, frame.msgtype, typestore=typestore)
            return conns

        sums, count = {"pre": 0.0, "infer": 0.0, "post": 0.0}, 0
        for frame in frames:
            if frame.topic not in connections:
                connections[frame.topic] = connect(frame)
            conns = connections[frame.topic]
            result = segmenter.predict(frame.image, f"{frame.topic} message {count}")
            messages = segmentation_messages(
                result, frame.image, frame.header, names, artifact.palette, overlays, alpha
            )
            for key, fields, msgtype in (
                ("labels", messages.labels, IMAGE_TYPE),
                ("panoptic", messages.panoptic, IMAGE_TYPE),
                ("segments", messages.segments, STRING_TYPE),
                ("overlay", messages.overlay, COMPRESSED_TYPE),
            ):
                if fields is not None and key in conns:
                    data = typestore.serialize_cdr(build(fields, types), msgtype)
                    writer.write(conns[key], frame.timestamp, data)
            if copy_input:
                raw = frame.raw
                if raw is None:
                    raw = typestore.serialize_cdr(
                        build(image_fields(frame.image, frame.header), types), IMAGE_TYPE
                    )
                writer.write(conns["input"], frame.timestamp, raw)
            for key in sums:
                sums[key] += result.timings.get(key, 0.0)
            count += 1
            if progress:
                progress(count, total)
        if count == 0:
            raise BagError(f"{out}: nothing to segment")
        writer.close()
        storage = bag_dir / f"bag{out.suffix.lower()}"
        os.replace(storage, out)
        return InferSummary(out, count, {k: v / count for k, v in sums.items()})
    except BaseException:
        if writer is not None and writer.storage is not None:
            writer.abort()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def bag_frame_names(frames: Iterable[BagFrame]) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, image)`` pairs for writing a bag's frames as files: ``<topic_as_folder>/<index>``."""
    counters: dict[str, int] = {}
    for frame in frames:
        slug = frame.topic.strip("/").replace("/", "_") or "topic"
        index = counters.get(frame.topic, 0)
        counters[frame.topic] = index + 1
        yield f"{slug}/{index:06d}", frame.image


def camera_bag_frames(
    frames: Iterable[tuple[int, np.ndarray]], topic: str = "/camera/image_raw", frame_id: str = "camera"
) -> Iterator[BagFrame]:
    """Live frames ``(wall-clock ns, BGR image)`` as bag frames on ``topic`` (copied as ``bgr8``)."""
    for stamp_ns, image in frames:
        yield BagFrame(topic, stamp_ns, Header(Stamp.from_ns(stamp_ns), frame_id), image)

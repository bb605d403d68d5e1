"""ROS 2 bags in and out (``pem-deploy infer ARTIFACT drive.mcap --topic /camera/image_raw``).

Reads MCAP and sqlite3 bags (a ``.mcap`` / ``.db3`` file or a bag folder with ``metadata.yaml``)
with the pure-Python ``rosbags`` package (the ``ros`` extra), segments the image topics and writes
either a new bag (``--out seg.mcap`` / ``seg.db3``: one storage file, topics and message layout in
:mod:`runtime.io.ros.messages`) or image files to a folder as ``infer`` does for videos.

The output bag is written by :class:`contract.output.FileOutput`: staged beside the destination
and renamed into place when complete; an existing destination is refused unless ``overwrite``,
and an input of the run (the source bag) never, whatever the flags.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.errors import one_line
from contract.output import FileOutput
from runtime.core.segmenter import Segmenter
from runtime.errors import InputError, RuntimeToolError, import_optional
from runtime.io.batch_infer import InferSummary
from runtime.io.ros.messages import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    IMAGE_TYPES,
    STRING_TYPE,
    Header,
    MessageTypes,
    OutputTopics,
    Stamp,
    build,
    decode_image,
    header_of,
    image_fields,
    output_topics,
    segmentation_messages,
)

BAG_SUFFIXES = (".mcap", ".db3")
Progress = Callable[[int, "int | None"], None]


class BagError(InputError):
    """A bag cannot be read or written: truncated or corrupt file, missing topic, wrong type."""


class RosbagsMissingError(RuntimeToolError):
    """The ``rosbags`` package is not installed."""


def _rosbags() -> Any:
    message = "ROS 2 bags need the 'rosbags' package: pip install 'pem-deploy[ros]' (or pip install rosbags)"
    rosbag2 = import_optional("rosbags.rosbag2", RosbagsMissingError, message)
    typesys = import_optional("rosbags.typesys", RosbagsMissingError, message)
    stores = typesys.Stores
    store = stores.ROS2_JAZZY if hasattr(stores, "ROS2_JAZZY") else stores.LATEST
    return rosbag2, typesys.get_typestore(store)


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


CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo beside an image topic: ``/x/image_raw`` and ``/x/image_raw/compressed`` ->
    ``/x/camera_info`` (image_transport's layout)."""
    base = image_topic.rstrip("/")
    if base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    folder = base.rsplit("/", 1)[0] if "/" in base else ""
    return f"{folder}/camera_info"


@dataclass(frozen=True)
class BagPassthrough:
    """A message copied to the output bag as it is (CameraInfo beside a segmented image topic)."""

    topic: str
    timestamp: int
    msgtype: str
    raw: bytes


class BagReader:
    """The image messages of ``topics`` in a bag, in time order, decoded to BGR.

    ``total`` is the number of frames to expect, from the bag's index (capped by ``max_frames``).
    With ``camera_info``, the CameraInfo topic beside each image topic (:func:`camera_info_topic`),
    where the bag has one, is read too and yielded as :class:`BagPassthrough`.

    A truncated MCAP file (a recorder that died: no index at the end) is read up to its last
    complete message (:class:`runtime.io.ros.mcap_recovery.McapRecovery`); :attr:`note` then says how
    many messages were recovered and where the file stopped. Use as a context manager; every
    failure is a one-line :class:`BagError` naming the bag.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        topics: Iterable[str],
        max_frames: int | None = None,
        camera_info: bool = False,
    ):
        self.path = Path(path)
        self.topics = list(dict.fromkeys(topics))
        self.note = ""
        if not self.topics:
            raise BagError(f"{self.path}: give the image topic(s) to segment with --topic")
        if max_frames is not None and max_frames < 1:
            raise BagError(f"--max-frames {max_frames}: must be >= 1")
        self.max_frames = max_frames
        rosbag2, self.typestore = _rosbags()
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag file or folder")
        self._error: type[BaseException] | tuple[type[BaseException], ...] = rosbag2.ReaderError
        try:
            self._reader = rosbag2.Reader(self.path)
            self._reader.open()
        except (rosbag2.ReaderError, FileNotFoundError) as exc:
            self._reader = self._recover(exc)
        try:
            self.connections = self._select()
            self.extra = self._camera_infos() if camera_info else []
        except BaseException:
            self.close()
            raise
        indexed = sum(c.msgcount for c in self.connections)
        self.total = min(indexed, max_frames) if max_frames else indexed

    def _recover(self, exc: BaseException) -> Any:
        """The stream-recovery reader for a truncated MCAP file, else the one-line refusal."""
        from runtime.io.ros.mcap_recovery import McapRecovery, RecoveryError

        refusal = BagError(f"{self.path}: not a readable ROS 2 bag ({exc})")
        files = [self.path] if self.path.is_file() else sorted(self.path.glob("*.mcap"))
        if len(files) != 1 or files[0].suffix.lower() != ".mcap":
            raise refusal from None
        try:
            reader = McapRecovery(files[0])
        except (RecoveryError, OSError):
            raise refusal from None
        self.note = (
            f"{files[0]}: the file is truncated or has no index ({exc}); read it up to its last complete "
            f"message: {reader.recovered} message(s) recovered, stopped at byte {reader.stopped_at} "
            f"of {files[0].stat().st_size} ({reader.reason})"
        )
        return reader

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

    def _camera_infos(self) -> list[Any]:
        wanted = {camera_info_topic(topic) for topic in self.topics}
        return [c for c in self._reader.connections if c.topic in wanted and c.msgtype == CAMERA_INFO_TYPE]

    def __iter__(self) -> Iterator[BagFrame | BagPassthrough]:
        count = 0
        extra = {c.topic for c in self.extra}
        try:
            for connection, timestamp, raw in self._reader.messages(
                connections=[*self.connections, *self.extra]
            ):
                if connection.topic in extra:
                    yield BagPassthrough(connection.topic, timestamp, connection.msgtype, bytes(raw))
                    continue
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


COMPRESSIONS = ("zstd", "lz4", "none")


def bag_output_topics(input_topics: Iterable[str], namespace: str = "pem") -> dict[str, OutputTopics]:
    """Output topics per input topic, distinct for every input: ``/x/image_raw`` and
    ``/x/image_raw/compressed`` (the usual recorded pair) would both map to ``/x/image_raw/pem/...``,
    so when both are segmented the compressed one keeps its ``/compressed``:
    ``/x/image_raw/compressed/pem/...``."""
    topics = list(dict.fromkeys(input_topics))
    plain = {topic: output_topics(topic, namespace) for topic in topics}
    result = {}
    for topic in topics:
        clash = any(other != topic and plain[other] == plain[topic] for other in topics)
        if clash and topic.rstrip("/").endswith("/compressed"):
            prefix = f"{topic.rstrip('/')}/{namespace}" if namespace else topic.rstrip("/")
            result[topic] = OutputTopics(
                f"{prefix}/labels",
                f"{prefix}/panoptic",
                f"{prefix}/panoptic/segments",
                f"{prefix}/overlay/compressed",
            )
        else:
            result[topic] = plain[topic]
    return result


def _compress(writer: Any, rosbag2: Any, plugin: Any, compression: str) -> None:
    """MCAP chunk compression (``zstd`` through rosbags; ``lz4`` by swapping the chunk compressor,
    both readable by every MCAP reader). sqlite3 bags are written uncompressed."""
    if compression == "none" or plugin != rosbag2.StoragePlugin.MCAP:
        return
    writer.set_compression(rosbag2.CompressionMode.STORAGE, rosbag2.CompressionFormat.ZSTD)


def _use_lz4(writer: Any) -> None:
    import lz4.frame  # a dependency of rosbags (it reads lz4 chunks)

    storage = writer.storage
    if not hasattr(storage, "compressor"):
        raise BagError("this rosbags version cannot write lz4 MCAP chunks; use --compression zstd")
    storage.compression, storage.compressor = "lz4", lz4.frame.compress


def write_bag(
    segmenter: Segmenter,
    frames: Iterable[BagFrame | BagPassthrough],
    out: str | os.PathLike[str],
    overwrite: bool = False,
    overlays: bool = True,
    alpha: float = 0.5,
    copy_input: bool = False,
    namespace: str = "pem",
    progress: Progress | None = None,
    total: int | None = None,
    inputs: Iterable[str | os.PathLike[str]] = (),
    compression: str = "zstd",
    input_topics: Iterable[str] = (),
    on_note: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> InferSummary:
    """Segment ``frames`` and write the result messages to the bag file ``out`` (``.mcap``/``.db3``).

    Per input topic: ``labels``, for panoptic artifacts ``panoptic`` and ``segments``, and with
    ``overlays`` an ``overlay`` topic (:func:`bag_output_topics`: distinct for every input topic
    among ``input_topics``), each message logged at the source message's bag time with its header
    copied. ``copy_input`` also copies the source messages and the :class:`BagPassthrough` ones
    (CameraInfo). MCAP chunks are compressed with ``compression`` (``zstd``, ``lz4``, ``none``).

    Nothing appears at ``out`` unless a valid bag was closed: when the run is interrupted
    (Ctrl-C) or fails after the first frame, the bag is closed with the frames done so far and
    installed, ``on_note`` says so, and the interruption or error is raised again. ``stop`` (set by
    a SIGINT handler, :func:`runtime.io.sources.stop_on_interrupt`) is checked between frames, so an
    interrupted bag holds whole frames only; it ends the run as a Ctrl-C. ``inputs`` (the
    source bag, the artifact) are never written, ``overwrite`` replaces an existing ``out``.
    """
    rosbag2, typestore = _rosbags()
    out = Path(out)
    plugin = _storage_plugin(rosbag2, out, compression)
    artifact = segmenter.artifact
    read = [*inputs, artifact.model_path, artifact.sidecar_path]
    output = FileOutput(out, overwrite=overwrite, inputs=read)
    staging = output.open().parent
    writer = None
    try:
        # The storage file is named after its folder and recorded by that name in the bag's
        # embedded metadata: name the folder after the final file so the metadata is right.
        bag_dir = staging / out.stem
        writer = rosbag2.Writer(bag_dir, version=9, storage_plugin=plugin)
        _compress(writer, rosbag2, plugin, compression)
        writer.open()
        if compression == "lz4" and plugin == rosbag2.StoragePlugin.MCAP:
            _use_lz4(writer)
        topics = bag_output_topics(input_topics, namespace)
        bag = _SegmentationBag(writer, typestore, segmenter, topics, namespace, overlays, alpha, copy_input)
        try:
            for frame in frames:
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                if isinstance(frame, BagPassthrough):
                    bag.pass_through(frame)
                    continue
                bag.segment(frame)
                if progress:
                    progress(bag.count, total)
        except (KeyboardInterrupt, Exception) as exc:
            if bag.count == 0 or output.write_error(exc) is not exc:  # nothing done, or the bag itself failed
                raise
            _install(writer, bag_dir, output)
            if on_note:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped by an error"
                on_note(f"{why} after {bag.count} frame(s): {out} holds them (a complete, readable bag)")
            raise
        if bag.count == 0:
            raise BagError(f"{out}: nothing to segment")
        _install(writer, bag_dir, output)
        return InferSummary(out, bag.count, {k: v / bag.count for k, v in bag.sums.items()})
    except BaseException as exc:
        if writer is not None and writer.storage is not None:
            writer.abort()
        converted = output.write_error(exc)
        if converted is not exc:
            raise converted from None
        raise
    finally:
        output.discard()


def _storage_plugin(rosbag2: Any, out: Path, compression: str) -> Any:
    """The storage plugin of the output bag ``out`` (by its suffix), once both it and
    ``compression`` are known to be valid."""
    if out.suffix.lower() not in BAG_SUFFIXES:
        raise BagError(f"{out}: output bag must end in .mcap or .db3")
    if compression not in COMPRESSIONS:
        raise BagError(f"--compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    return rosbag2.StoragePlugin.MCAP if out.suffix.lower() == ".mcap" else rosbag2.StoragePlugin.SQLITE3


def _install(writer: Any, bag_dir: Path, output: FileOutput) -> None:
    """Close the bag and install its storage file at the output's target."""
    out = output.target
    writer.close()
    os.replace(bag_dir / f"{out.stem}{out.suffix.lower()}", output.staged)
    output.commit()


class _SegmentationBag:
    """An open output bag: one set of connections per input topic, made at its first frame."""

    def __init__(
        self,
        writer: Any,
        typestore: Any,
        segmenter: Segmenter,
        planned: dict[str, OutputTopics],
        namespace: str,
        overlays: bool,
        alpha: float,
        copy_input: bool,
    ):
        self.writer, self.typestore, self.segmenter = writer, typestore, segmenter
        self.planned, self.namespace = planned, namespace
        self.overlays, self.alpha, self.copy_input = overlays, alpha, copy_input
        self.types = MessageTypes(
            typestore.types[IMAGE_TYPE],
            typestore.types[COMPRESSED_TYPE],
            typestore.types[STRING_TYPE],
            typestore.types["std_msgs/msg/Header"],
            typestore.types["builtin_interfaces/msg/Time"],
        )
        artifact = segmenter.artifact
        self.names = [c.name for c in artifact.classes]
        self.panoptic = artifact.head == "panoptic"
        self.connections: dict[str, dict[str, Any]] = {}
        self.used: set[str] = set()
        self.passthrough: dict[str, Any] = {}
        self.sums = {"pre": 0.0, "infer": 0.0, "post": 0.0}
        self.count = 0

    def connect(self, frame: BagFrame) -> dict[str, Any]:
        """The output connections of ``frame``'s topic (distinct from every other topic's)."""
        writer, typestore, namespace = self.writer, self.typestore, self.namespace
        topics = self.planned.get(frame.topic) or output_topics(frame.topic, namespace)
        if topics.labels in self.used:  # a topic not announced in input_topics that collides
            topics = bag_output_topics([frame.topic, topics.labels.rsplit("/", 2)[0]], namespace)[frame.topic]
        self.used.add(topics.labels)
        conns: dict[str, Any] = {
            "labels": writer.add_connection(topics.labels, IMAGE_TYPE, typestore=typestore)
        }
        if self.panoptic:
            conns["panoptic"] = writer.add_connection(topics.panoptic, IMAGE_TYPE, typestore=typestore)
            conns["segments"] = writer.add_connection(topics.segments, STRING_TYPE, typestore=typestore)
        if self.overlays:
            conns["overlay"] = writer.add_connection(topics.overlay, COMPRESSED_TYPE, typestore=typestore)
        if self.copy_input:
            conns["input"] = writer.add_connection(frame.topic, frame.msgtype, typestore=typestore)
        return conns

    def pass_through(self, frame: BagPassthrough) -> None:
        """With ``copy_input``: the message as it was (CameraInfo)."""
        if self.copy_input:
            if frame.topic not in self.passthrough:
                self.passthrough[frame.topic] = self.writer.add_connection(
                    frame.topic, frame.msgtype, typestore=self.typestore
                )
            self.writer.write(self.passthrough[frame.topic], frame.timestamp, frame.raw)

    def segment(self, frame: BagFrame) -> None:
        """Segment one frame and write its result messages (and with ``copy_input`` the frame)."""
        writer, typestore = self.writer, self.typestore
        if frame.topic not in self.connections:
            self.connections[frame.topic] = self.connect(frame)
        conns = self.connections[frame.topic]
        result = self.segmenter.predict(frame.image, f"{frame.topic} message {self.count}")
        artifact = self.segmenter.artifact
        messages = segmentation_messages(
            result, frame.image, frame.header, self.names, artifact.palette, self.overlays, self.alpha
        )
        for key, fields, msgtype in (
            ("labels", messages.labels, IMAGE_TYPE),
            ("panoptic", messages.panoptic, IMAGE_TYPE),
            ("segments", messages.segments, STRING_TYPE),
            ("overlay", messages.overlay, COMPRESSED_TYPE),
        ):
            if fields is not None and key in conns:
                data = typestore.serialize_cdr(build(fields, self.types), msgtype)
                writer.write(conns[key], frame.timestamp, data)
        if self.copy_input:
            raw = frame.raw
            if raw is None:
                raw = typestore.serialize_cdr(
                    build(image_fields(frame.image, frame.header), self.types), IMAGE_TYPE
                )
            writer.write(conns["input"], frame.timestamp, raw)
        for key in self.sums:
            self.sums[key] += result.timings.get(key, 0.0)
        self.count += 1


def bag_frame_names(frames: Iterable[BagFrame | BagPassthrough]) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, image)`` pairs for writing a bag's frames as files, keeping each frame's timing:
    ``<topic_as_folder>/<index>_<sec>.<nanosec>_<frame_id>`` (header stamp, 9-digit nanoseconds;
    the frame id with characters other than letters, digits, ``-`` and ``.`` as ``_``), e.g.
    ``front_image_raw/000003_1700000003.000003003_front_cam``."""
    counters: dict[str, int] = {}
    for frame in frames:
        if isinstance(frame, BagPassthrough):
            continue
        slug = frame.topic.strip("/").replace("/", "_") or "topic"
        index = counters.get(frame.topic, 0)
        counters[frame.topic] = index + 1
        stamp = frame.header.stamp
        frame_id = re.sub(r"[^A-Za-z0-9.\-]", "_", frame.header.frame_id) or "_"
        yield f"{slug}/{index:06d}_{stamp.sec}.{stamp.nanosec:09d}_{frame_id}", frame.image


def camera_bag_frames(
    frames: Iterable[tuple[int, np.ndarray]], topic: str = "/camera/image_raw", frame_id: str = "camera"
) -> Iterator[BagFrame]:
    """Frames ``(stamp ns, BGR image)`` of :func:`runtime.io.sources.camera_frames` (capture time, or a
    video's container timestamps) as bag frames on ``topic``, logged and stamped at that time."""
    for stamp_ns, image in frames:
        yield BagFrame(topic, stamp_ns, Header(Stamp.from_ns(stamp_ns), frame_id), image)

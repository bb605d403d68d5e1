"""A ROS 2 node (``pem-deploy ros2 ARTIFACT --input /camera/image_raw``): subscribe, segment, publish.

Subscribes to a ``sensor_msgs/Image`` or ``CompressedImage`` topic with sensor-data QoS (best
effort, keep last 1; a topic ending in ``/compressed`` is a ``CompressedImage``) and publishes (reliable,
keep last 1) the messages of :mod:`runtime.ros.messages` (labels,
panoptic + segments for panoptic artifacts, overlay) with the source header. Frames are handed
to one worker thread through a one-slot mailbox (:class:`LatestFrame`): when inference is slower
than the camera, older frames are dropped and the newest is segmented, so latency never grows.

Needs ``rclpy`` (a sourced ROS 2 Humble / Jazzy install); everything except :func:`run_node`
works without it, which is how the message handling is tested.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import RuntimeToolError
from runtime.ros.messages import (
    MessageTypes,
    OutputTopics,
    SegmentationMessages,
    build,
    decode_image,
    header_of,
    output_topics,
    segmentation_messages,
)
from runtime.segmenter import Segmenter


class RclpyMissingError(RuntimeToolError):
    """``rclpy`` cannot be imported (ROS 2 not installed or not sourced)."""


def import_rclpy() -> Any:
    """``rclpy`` or a one-line :class:`RclpyMissingError` saying how to get it."""
    try:
        import rclpy
    except ImportError:
        raise RclpyMissingError(
            "rclpy is not importable: install ROS 2 (Humble or Jazzy) and source it first, e.g. "
            "'source /opt/ros/humble/setup.bash', in the Python environment pem-deploy runs in"
        ) from None
    return rclpy


class LatestFrame:
    """A one-slot mailbox: :meth:`put` replaces an unprocessed frame (counted in ``dropped``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.dropped = 0
        self.received = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """The newest frame, waiting up to ``timeout`` s; ``None`` on timeout or after :meth:`close`."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class NodeConfig:
    """The node's parameters (each is also a ROS parameter of the same name)."""

    artifact: str
    input: str = "/camera/image_raw"
    labels_topic: str = ""
    panoptic_topic: str = ""
    segments_topic: str = ""
    overlay_topic: str = ""
    namespace: str = "pem"
    overlay: bool = True
    alpha: float = 0.5
    resize: str = "stretch"

    def topics(self) -> OutputTopics:
        """Output topics: the explicit ones, else the defaults derived from ``input``."""
        default = output_topics(self.input, self.namespace)
        return OutputTopics(
            self.labels_topic or default.labels,
            self.panoptic_topic or default.panoptic,
            self.segments_topic or default.segments,
            self.overlay_topic or default.overlay,
        )


@dataclass
class FrameProcessor:
    """Message in -> messages out, without any ROS dependency (the node's whole data path)."""

    segmenter: Segmenter
    topic: str
    with_overlay: bool = True
    alpha: float = 0.5
    frames: int = 0
    seconds: float = 0.0
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [c.name for c in self.segmenter.artifact.classes]

    def __call__(self, msg: Any) -> SegmentationMessages:
        start = time.perf_counter()
        image = decode_image(msg, self.topic)
        result = self.segmenter.predict(image, f"{self.topic} message")
        out = segmentation_messages(
            result,
            image,
            header_of(msg),
            self.names,
            self.segmenter.artifact.palette,
            self.with_overlay,
            self.alpha,
        )
        self.frames += 1
        self.seconds += time.perf_counter() - start
        return out


def _rclpy_types() -> MessageTypes:
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header, String

    return MessageTypes(
        Image, CompressedImage, String, Header, Time, data=lambda a: array.array("B", a.tobytes())
    )


def run_node(config: NodeConfig, args: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    """Spin the node until Ctrl-C / shutdown. ROS parameters (``--ros-args -p input:=...``) override
    ``config``; the artifact is opened once at start."""
    rclpy = import_rclpy()
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    rclpy.init(args=args)
    node = Node("pem_segmentation")
    try:
        for name, value in vars(config).items():
            node.declare_parameter(name, value)
        params = {name: node.get_parameter(name).value for name in vars(config)}
        config = NodeConfig(**params)
        topics = config.topics()
        segmenter = Segmenter.open(config.artifact, resize=config.resize)  # type: ignore[arg-type]
        panoptic = segmenter.artifact.head == "panoptic"
        process = FrameProcessor(segmenter, config.input, config.overlay, config.alpha)
        types = _rclpy_types()
        # In: best effort, keep last 1 (matches every camera driver, never queues stale frames).
        # Out: reliable, keep last 1, which best-effort and reliable subscribers (RViz, Foxglove) both take.
        sensor_in = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        publishers = {"labels": node.create_publisher(Image, topics.labels, qos)}
        if panoptic:
            publishers["panoptic"] = node.create_publisher(Image, topics.panoptic, qos)
            publishers["segments"] = node.create_publisher(String, topics.segments, qos)
        if config.overlay:
            publishers["overlay"] = node.create_publisher(CompressedImage, topics.overlay, qos)
        in_type = CompressedImage if config.input.rstrip("/").endswith("/compressed") else Image
        mailbox = LatestFrame()
        node.create_subscription(in_type, config.input, mailbox.put, sensor_in)
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                msg = mailbox.take(timeout=0.5)
                if msg is None:
                    continue
                try:
                    out = process(msg)
                except RuntimeToolError as exc:  # one bad frame must not stop the node
                    node.get_logger().error(str(exc))
                    continue
                for key, publisher in publishers.items():
                    fields = getattr(out, key)
                    if fields is not None:
                        publisher.publish(build(fields, types))

        def report() -> None:
            fps = process.frames / process.seconds if process.seconds else 0.0
            node.get_logger().info(
                f"{process.frames} frames segmented ({fps:.1f} FPS), {mailbox.dropped} dropped under load"
            )

        node.create_timer(10.0, report)
        worker = threading.Thread(target=work, name="pem-segment", daemon=True)
        worker.start()
        log(f"pem-deploy ros2: {config.input} -> {', '.join(p.topic_name for p in publishers.values())}")
        try:
            rclpy.spin(node)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            mailbox.close()
            worker.join(timeout=5)
            segmenter.close()
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()

"""A ROS 2 node (``pem-deploy ros2 ARTIFACT --input /camera/image_raw``): subscribe, segment, publish.

Topics (``<base>`` is the input topic without a trailing ``/compressed``, ``<prefix>`` is
``<base>/<namespace>``, namespace ``pem`` by default; every output can be renamed by a parameter):

======================================  ==========================  ===================================
topic                                   type                        content
======================================  ==========================  ===================================
``<input>`` (in)                        ``Image`` / ``CompressedImage``  the camera (``.../compressed``:
                                                                    ``CompressedImage`` jpeg/png)
``<base dir>/camera_info`` (in)         ``CameraInfo``              the camera's intrinsics (optional)
``<prefix>/labels``                     ``Image`` ``mono8``         class id per pixel (``mono16`` over
                                                                    255 classes); Isaac ROS's
                                                                    ``raw_segmentation_mask``
``<prefix>/colored_mask``               ``Image`` ``rgb8``          class colours (sidecar palette or
                                                                    ``color_palette``); Isaac ROS's
                                                                    ``colored_segmentation_mask``
``<prefix>/overlay/compressed``         ``CompressedImage`` jpeg    colours blended on the frame
``<prefix>/panoptic``                   ``Image`` ``mono16``        segment ids (panoptic artifacts)
``<prefix>/panoptic/segments``          ``String`` (JSON)           segment list (panoptic artifacts)
``<prefix>/camera_info``                ``CameraInfo``              the input's, re-stamped per output
``/diagnostics``                        ``DiagnosticArray``         FPS, latency, dropped / failed
======================================  ==========================  ===================================

Every output carries the input message's header (stamp and frame id), so outputs line up with
the image (and with each other) in RViz and Foxglove. Outputs are at the input's size, so the
camera's intrinsics apply unchanged to ``<prefix>/camera_info``.

Frames are handed to one worker thread through a one-slot mailbox (:class:`LatestFrame`): when
inference is slower than the camera, older frames are dropped and the newest is segmented, so
latency never grows. A frame that fails for any reason is counted, logged (throttled) and
reported on ``/diagnostics``; the worker goes on with the next one. Nothing is computed while no
output has a subscriber, and the overlay / colour mask are only drawn for their subscribers.

Parameters (:data:`PARAMETERS`): ``alpha``, ``overlay``, ``colored_mask``, ``color_palette`` and
``resize`` change at run time; the others are read-only after start (a change is refused with
the reason). Integers are accepted for double parameters (``-p alpha:=1``); a bad value at start
is one line and exit status 2, at run time a refusal with the reason.

SIGINT and SIGTERM stop the node cleanly (exit status 0): the worker finishes its frame, the
node is destroyed and ROS is shut down.

Needs ``rclpy`` (a sourced ROS 2 Humble / Jazzy install, or the Jazzy wheels on PyPI for
Python 3.12); everything except :func:`run_node` works without it.
"""

from __future__ import annotations

import array
import contextlib
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from contract.errors import one_line
from runtime.core.postprocess import colorize_labels
from runtime.core.preprocess import Preprocessor
from runtime.core.segmenter import Segmenter
from runtime.errors import RuntimeToolError, import_optional
from runtime.io.ros import messages as ros_msgs
from runtime.io.ros.bags import camera_info_topic

NODE_NAME = "pem_segmentation"
RESIZE_MODES = ("stretch", "letterbox")
RELIABILITIES = ("best_effort", "reliable")


class RclpyMissingError(RuntimeToolError):
    """``rclpy`` cannot be imported (ROS 2 not installed or not sourced)."""


class NodeParameterError(RuntimeToolError):
    """A node parameter has the wrong type or an invalid value at start."""


def import_rclpy() -> Any:
    """``rclpy`` or a one-line :class:`RclpyMissingError` saying how to get it."""
    return import_optional(
        "rclpy",
        RclpyMissingError,
        "rclpy is not importable: install ROS 2 (Humble or Jazzy) and source it first, e.g. "
        "'source /opt/ros/humble/setup.bash', or on Python 3.12 pip install the Jazzy wheels "
        "('ros-jazzy-rclpy[fastrtps]' ros-jazzy-sensor-msgs ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs)",
    )


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


# -- parameters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: its ROS type, whether it changes at run time, and what it does."""

    kind: type
    dynamic: bool
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


PARAMETERS: dict[str, ParameterSpec] = {
    "artifact": ParameterSpec(str, False, "Model artifact: .onnx / .engine file or its folder."),
    "input": ParameterSpec(str, False, "Image topic; a topic ending in /compressed is a CompressedImage."),
    "camera_info_topic": ParameterSpec(
        str,
        False,
        "CameraInfo input; empty: camera_info beside the input topic (/x/image_raw -> /x/camera_info).",
    ),
    "namespace": ParameterSpec(str, False, "Outputs go to <input without /compressed>/<namespace>/..."),
    "labels_topic": ParameterSpec(str, False, "Class-id image (mono8/mono16); empty: <prefix>/labels."),
    "colored_mask_topic": ParameterSpec(str, False, "Colour mask (rgb8); empty: <prefix>/colored_mask."),
    "overlay_topic": ParameterSpec(str, False, "Blended JPEG; empty: <prefix>/overlay/compressed."),
    "panoptic_topic": ParameterSpec(str, False, "Segment-id image (mono16); empty: <prefix>/panoptic."),
    "segments_topic": ParameterSpec(str, False, "Segment list (JSON); empty: <prefix>/panoptic/segments."),
    "camera_info_out_topic": ParameterSpec(str, False, "Re-stamped CameraInfo; empty: <prefix>/camera_info."),
    "overlay": ParameterSpec(bool, True, "Publish the overlay (drawn only while it has subscribers)."),
    "colored_mask": ParameterSpec(
        bool, True, "Publish the colour mask (drawn only while it has subscribers)."
    ),
    "alpha": ParameterSpec(float, True, "Overlay opacity of the colours, 0..1.", minimum=0.0, maximum=1.0),
    "color_palette": ParameterSpec(
        str,
        True,
        "Colours of the colour mask and overlay: empty for the sidecar's class colours, else a "
        "comma-separated list of '#rrggbb' (by class id) and/or 'class_name=#rrggbb' entries.",
    ),
    "resize": ParameterSpec(
        str, True, "How frames are fitted to the model: stretch | letterbox.", RESIZE_MODES
    ),
    "input_qos_depth": ParameterSpec(
        int, False, "Input queue depth (sensor data: 1).", minimum=1, maximum=1000
    ),
    "input_qos_reliability": ParameterSpec(
        str, False, "Input reliability: best_effort (sensor data) | reliable.", RELIABILITIES
    ),
    "output_qos_depth": ParameterSpec(int, False, "Output queue depth.", minimum=1, maximum=1000),
    "output_qos_reliability": ParameterSpec(
        str,
        False,
        "Output reliability: reliable (taken by reliable and best-effort subscribers) | best_effort.",
        RELIABILITIES,
    ),
    "diagnostics_period": ParameterSpec(
        float, False, "Seconds between /diagnostics messages.", minimum=0.05, maximum=3600.0
    ),
}


@dataclass
class NodeConfig:
    """The node's parameters (each is also a ROS parameter of the same name, see :data:`PARAMETERS`)."""

    artifact: str
    input: str = "/camera/image_raw"
    camera_info_topic: str = ""
    namespace: str = "pem"
    labels_topic: str = ""
    colored_mask_topic: str = ""
    overlay_topic: str = ""
    panoptic_topic: str = ""
    segments_topic: str = ""
    camera_info_out_topic: str = ""
    overlay: bool = True
    colored_mask: bool = True
    alpha: float = 0.5
    color_palette: str = ""
    resize: str = "stretch"
    input_qos_depth: int = 1
    input_qos_reliability: str = "best_effort"
    output_qos_depth: int = 1
    output_qos_reliability: str = "reliable"
    diagnostics_period: float = 1.0

    def topics(self) -> ros_msgs.OutputTopics:
        """Output topics: the explicit ones, else the defaults derived from ``input``."""
        default = ros_msgs.output_topics(self.input, self.namespace)
        return ros_msgs.OutputTopics(
            self.labels_topic or default.labels,
            self.panoptic_topic or default.panoptic,
            self.segments_topic or default.segments,
            self.overlay_topic or default.overlay,
        )

    def colored_mask_out(self) -> str:
        return self.colored_mask_topic or f"{_prefix(self)}/colored_mask"

    def camera_info_out(self) -> str:
        return self.camera_info_out_topic or f"{_prefix(self)}/camera_info"

    def camera_info_in(self) -> str:
        """The CameraInfo input: explicit, else ``camera_info`` in the input topic's folder."""
        return self.camera_info_topic or camera_info_topic(self.input)

    def validate(self) -> None:
        """Raise :class:`NodeParameterError` (one line) for the first invalid value."""
        for name, spec in PARAMETERS.items():
            problem = check_parameter(name, getattr(self, name), spec)
            if problem:
                raise NodeParameterError(f"parameter {name!r}: {problem}")
        if not self.artifact:
            raise NodeParameterError("parameter 'artifact': give the model artifact")
        if not self.input.strip("/"):
            raise NodeParameterError(f"parameter 'input': {self.input!r} is not a topic name")


def _prefix(config: NodeConfig) -> str:
    return ros_msgs.output_topics(config.input, config.namespace).labels.rsplit("/", 1)[0]


_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}


def coerce_parameter(name: str, value: Any) -> Any:
    """A parameter value as its declared type: integers are taken for doubles (``alpha:=1``).

    Raises :class:`NodeParameterError` naming the parameter for any other type mismatch."""
    spec = PARAMETERS[name]
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not spec.kind:
        raise NodeParameterError(
            f"parameter {name!r}: expected a {_TYPE_NAMES[spec.kind]}, got "
            f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {value!r}"
        )
    return value


def check_parameter(name: str, value: Any, spec: ParameterSpec | None = None) -> str:
    """Why ``value`` is not acceptable for parameter ``name`` (empty string when it is)."""
    spec = spec or PARAMETERS[name]
    if spec.choices and value not in spec.choices:
        return f"{value!r} is not one of {', '.join(spec.choices)}"
    if spec.minimum is not None and not spec.minimum <= value <= (spec.maximum or float("inf")):
        return f"{value!r} is outside {spec.minimum}..{spec.maximum}"
    if name == "color_palette":
        try:
            parse_palette(value, np.zeros((0, 3), np.uint8), [])
        except ValueError as exc:
            return str(exc)
    return ""


_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


def parse_palette(text: str, base_rgb: np.ndarray, class_names: list[str]) -> np.ndarray:
    """The (K, 3) RGB palette from ``color_palette``: ``base_rgb`` with the listed colours in place.

    ``text``: comma-separated entries, ``#rrggbb`` (the next class id, from 0) or
    ``class_name=#rrggbb``; empty keeps ``base_rgb``. Raises ``ValueError`` naming a bad entry.
    """
    palette = np.array(base_rgb, np.uint8).reshape(-1, 3).copy()
    if not text.strip():
        return palette
    position = 0
    for entry in (e.strip() for e in text.split(",")):
        name, _, colour = entry.rpartition("=")
        match = _HEX.fullmatch(colour.strip())
        if not match:
            raise ValueError(f"palette entry {entry!r} is not '#rrggbb' or 'class_name=#rrggbb'")
        rgb = [int(match.group(1)[i : i + 2], 16) for i in (0, 2, 4)]
        if name:
            if class_names and name.strip() not in class_names:
                raise ValueError(f"palette entry {entry!r}: no class {name.strip()!r} in the model")
            index = class_names.index(name.strip()) if class_names else None
        else:
            index, position = position, position + 1
        if index is None:
            continue
        if index >= len(palette):
            if class_names:
                raise ValueError(f"palette has more colours than the model's {len(class_names)} classes")
            continue
        palette[index] = rgb
    return palette


def config_from_parameters(values: Mapping[str, Any]) -> NodeConfig:
    """A validated :class:`NodeConfig` from parameter values (types coerced as :func:`coerce_parameter`)."""
    config = NodeConfig(**{name: coerce_parameter(name, value) for name, value in values.items()})
    config.validate()
    return config


# -- the data path, without ROS -------------------------------------------------------------


@dataclass(frozen=True)
class FrameOutputs:
    """What one frame produced: the shared messages plus the node-only colour mask."""

    messages: ros_msgs.SegmentationMessages
    colored_mask: ros_msgs.ImageFields | None = None


@dataclass
class FrameProcessor:
    """Message in -> messages out, without any ROS dependency (the node's whole data path)."""

    segmenter: Segmenter
    topic: str
    with_overlay: bool = True
    alpha: float = 0.5
    palette: np.ndarray | None = None
    frames: int = 0
    seconds: float = 0.0
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [c.name for c in self.segmenter.artifact.classes]
        if self.palette is None:
            self.palette = self.segmenter.artifact.palette

    def __call__(self, msg: Any) -> ros_msgs.SegmentationMessages:
        return self.segment(msg).messages

    def segment(self, msg: Any, overlay: bool | None = None, colored_mask: bool = False) -> FrameOutputs:
        """Segment one image message; ``overlay`` / ``colored_mask`` say which drawings to make."""
        start = time.perf_counter()
        image = ros_msgs.decode_image(msg, self.topic)
        result = self.segmenter.predict(image, f"{self.topic} message")
        header = ros_msgs.header_of(msg)
        palette = self.palette if self.palette is not None else self.segmenter.artifact.palette
        messages = ros_msgs.segmentation_messages(
            result,
            image,
            header,
            self.names,
            palette,
            self.with_overlay if overlay is None else overlay,
            self.alpha,
        )
        mask = (
            ros_msgs.image_fields(colorize_labels(result.labels, palette), header, "rgb8")
            if colored_mask
            else None
        )
        self.frames += 1
        self.seconds += time.perf_counter() - start
        return FrameOutputs(messages, mask)


@dataclass
class NodeStats:
    """Counters and recent latencies of the node, for the log line and ``/diagnostics``."""

    window: int = 300
    segmented: int = 0
    failed: int = 0
    idle: int = 0
    last_error: str = ""
    latencies: deque[float] = field(default_factory=deque)
    done_times: deque[float] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self, latency_s: float, now: float | None = None) -> None:
        with self.lock:
            self.segmented += 1
            self.latencies.append(latency_s)
            self.done_times.append(time.monotonic() if now is None else now)
            while len(self.latencies) > self.window:
                self.latencies.popleft()
            while len(self.done_times) > self.window:
                self.done_times.popleft()

    def failure(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {one_line(exc)}"

    def fps(self, now: float | None = None, horizon: float = 5.0) -> float:
        """Frames segmented per second over the last ``horizon`` seconds."""
        now = time.monotonic() if now is None else now
        with self.lock:
            recent = [t for t in self.done_times if t >= now - horizon]
        if len(recent) < 2:
            return 0.0
        span = now - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def latency_ms(self) -> dict[str, float]:
        """Receive -> publish latency percentiles (p50, p90, p99, max) in ms of the recent frames."""
        with self.lock:
            values = np.asarray(self.latencies, np.float64) * 1000.0
        if not values.size:
            return {}
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def diagnostic_values(stats: NodeStats, mailbox: LatestFrame) -> list[tuple[str, str]]:
    """The key/value pairs of the node's ``/diagnostics`` status."""
    values = [
        ("frames_received", str(mailbox.received)),
        ("frames_segmented", str(stats.segmented)),
        ("frames_dropped", str(mailbox.dropped)),
        ("frames_failed", str(stats.failed)),
        ("frames_skipped_no_subscribers", str(stats.idle)),
        ("fps", f"{stats.fps():.2f}"),
    ]
    values += [(f"latency_ms_{k}", f"{v:.2f}") for k, v in stats.latency_ms().items()]
    values.append(("last_error", stats.last_error))
    return values


# -- rclpy wiring ---------------------------------------------------------------------------


def _rclpy_types() -> ros_msgs.MessageTypes:
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header, String

    return ros_msgs.MessageTypes(
        Image, CompressedImage, String, Header, Time, data=lambda a: array.array("B", a.tobytes())
    )


def _descriptor(name: str, spec: ParameterSpec) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    types = {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }
    extra = f" One of: {', '.join(spec.choices)}." if spec.choices else ""
    descriptor = ParameterDescriptor(
        name=name,
        type=types[spec.kind],
        description=spec.description + extra,
        read_only=not spec.dynamic,
        additional_constraints="" if spec.dynamic else "read-only: restart the node to change it",
    )
    if spec.kind is float and spec.minimum is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)
        ]
    if spec.kind is int and spec.minimum is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)
        ]
    return descriptor


def _declare_parameters(node: Any, config: NodeConfig) -> NodeConfig:
    """Declare every parameter (typed, described, read-only where static) and return the values
    the node starts with. Overrides of the wrong type are fixed (int for double) or refused in one
    line; unknown ones are logged as a warning."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.parameter import Parameter

    overrides = getattr(node, "_parameter_overrides", None)  # rclpy keeps -p / --params-file values here
    if isinstance(overrides, dict):
        for name, param in list(overrides.items()):
            if name in PARAMETERS:
                overrides[name] = Parameter(name, value=coerce_parameter(name, param.value))
        unknown = sorted(set(overrides) - set(PARAMETERS) - {"use_sim_time"})
        if unknown:  # rclpy ignores them silently: a typo (alpa:=0.3) would go unnoticed
            node.get_logger().warning(
                f"unknown parameter(s) ignored: {', '.join(unknown)} (known: {', '.join(PARAMETERS)})"
            )
    values: dict[str, Any] = {}
    for name, spec in PARAMETERS.items():
        try:
            param = node.declare_parameter(name, getattr(config, name), _descriptor(name, spec))
        except InvalidParameterTypeException as exc:
            raise NodeParameterError(f"parameter {name!r}: {one_line(exc)}") from None
        except InvalidParameterValueException as exc:
            raise NodeParameterError(f"parameter {name!r}: {one_line(exc)}") from None
        values[name] = param.value
    return config_from_parameters(values)


def _qos(depth: int, reliability: str) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.BEST_EFFORT
        if reliability == "best_effort"
        else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


@dataclass(frozen=True)
class _Live:
    """The run-time-changeable settings, replaced as a whole so the worker sees one consistent set."""

    overlay: bool
    colored_mask: bool
    alpha: float
    palette: np.ndarray
    resize: str


def run_node(
    config: NodeConfig,
    args: list[str] | None = None,
    log: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Spin the node until SIGINT / SIGTERM / shutdown, then return (exit status 0).

    ROS parameters (``--ros-args -p input:=...`` or ``--params-file``) override ``config``; the
    artifact is opened once at start. Invalid parameters raise :class:`NodeParameterError`.
    ``stop``: an event the caller's SIGINT / SIGTERM handlers set (:func:`stop_on_signals`);
    without it the node installs its own handlers while it runs.
    """
    rclpy = import_rclpy()
    from rclpy.node import Node

    with _ros_session(rclpy, args, stop) as stop:
        node = None
        try:
            node = Node(NODE_NAME)
            config = _declare_parameters(node, config)
            segmenter = Segmenter.open(config.artifact, resize=config.resize)  # type: ignore[arg-type]
            try:
                active = threading.Event()
                active.set()
                close = _wire(node, config, segmenter, log, active)
                try:
                    _spin(node, stop)
                finally:
                    close()
            finally:
                segmenter.close()
        finally:
            if node is not None:
                node.destroy_node()


def run_lifecycle_node(
    config: NodeConfig,
    args: list[str] | None = None,
    log: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """The managed (lifecycle) variant of :func:`run_node` (``pem-deploy ros2 --lifecycle``).

    Starts *unconfigured* with its parameters declared and checked (a bad one is one line, exit 2).
    ``configure`` opens the model and creates the topics, ``activate`` starts segmenting,
    ``deactivate`` stops taking frames (topics stay), ``cleanup`` closes the model and removes the
    topics; a model that cannot be opened fails ``configure`` with the reason in the log. Drive it
    with ``ros2 lifecycle set /pem_segmentation configure`` (then ``activate``) or a lifecycle
    manager. SIGINT / SIGTERM stop it cleanly in any state (exit status 0)."""
    rclpy = import_rclpy()
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    class SegmentationLifecycleNode(LifecycleNode):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(NODE_NAME)
            self.config = _declare_parameters(self, config)
            self.segmenter: Segmenter | None = None
            self.release: Callable[[], None] | None = None
            self.active = threading.Event()

        def on_configure(self, state: Any) -> Any:
            try:
                self.config = config_from_parameters({n: self.get_parameter(n).value for n in PARAMETERS})
                self.segmenter = Segmenter.open(self.config.artifact, resize=self.config.resize)  # type: ignore[arg-type]
                self.release = _wire(self, self.config, self.segmenter, log, self.active)
            except RuntimeToolError as exc:
                self.get_logger().error(f"configure failed: {one_line(exc)}")
                self.teardown()
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: Any) -> Any:
            self.active.set()
            return super().on_activate(state)

        def on_deactivate(self, state: Any) -> Any:
            self.active.clear()
            return super().on_deactivate(state)

        def on_cleanup(self, state: Any) -> Any:
            self.teardown()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: Any) -> Any:
            self.teardown()
            return TransitionCallbackReturn.SUCCESS

        def teardown(self) -> None:
            self.active.clear()
            release, self.release = self.release, None
            if release is not None:
                release()
            segmenter, self.segmenter = self.segmenter, None
            if segmenter is not None:
                segmenter.close()

    with _ros_session(rclpy, args, stop) as stop:
        node = None
        try:
            node = SegmentationLifecycleNode()
            log(
                f"pem-deploy ros2: lifecycle node /{NODE_NAME} unconfigured; "
                "configure and activate it to start"
            )
            _spin(node, stop)
        finally:
            if node is not None:
                node.teardown()
                node.destroy_node()


@contextlib.contextmanager
def _ros_session(
    rclpy: Any, args: list[str] | None, stop: threading.Event | None
) -> Iterator[threading.Event]:
    """ROS initialised (its own signal handlers off) for the block, then shut down. Yields the
    event that stops the node: ``stop``, or one that SIGINT / SIGTERM set while the block runs."""
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = _handle_signals(stop := threading.Event()) if stop is None else {}
    try:
        yield stop
    finally:
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Within the block SIGINT and SIGTERM set the yielded event instead of ending the process
    (installed before the slow imports of rclpy and the model, so an early signal is clean too)."""
    stop = threading.Event()
    previous = _handle_signals(stop)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _handle_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT and SIGTERM set ``stop`` (main thread only: Python sets handlers there); returns
    the previous handlers. rclpy's own handlers would shut the context down under the executor
    and end in ExternalShutdownException (exit 1, what ``ros2 launch`` reports as a crash)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}


def _spin(node: Any, stop: threading.Event) -> None:
    """Spin ``node`` until ``stop`` is set (SIGINT / SIGTERM) or ROS is shut down."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def _wire(
    node: Any,
    config: NodeConfig,
    segmenter: Segmenter,
    log: Callable[[str], None],
    active: threading.Event,
) -> Callable[[], None]:
    """Wire ``node``: publishers, subscriptions, parameter callbacks, timers and the worker thread.

    Frames are taken only while ``active`` is set (always for the plain node; between activate
    and deactivate for the lifecycle node). Returns the function that undoes it all (the worker
    finishes its frame and is joined, every entity is destroyed)."""
    return _Wiring(node, config, segmenter, log, active).close


class _Wiring:
    """What :func:`_wire` made on one node: its callbacks, entities and the worker thread."""

    def __init__(
        self,
        node: Any,
        config: NodeConfig,
        segmenter: Segmenter,
        log: Callable[[str], None],
        active: threading.Event,
    ):
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        from rcl_interfaces.msg import SetParametersResult
        from sensor_msgs.msg import CameraInfo

        self.node, self.config, self.segmenter, self.log, self.active = node, config, segmenter, log, active
        self.set_result = SetParametersResult
        self.diagnostic_types = (DiagnosticArray, DiagnosticStatus, KeyValue)
        self.camera_info_type = CameraInfo
        self.types = _rclpy_types()
        self.stop = threading.Event()
        artifact = segmenter.artifact
        self.names = [c.name for c in artifact.classes]
        try:
            palette = parse_palette(config.color_palette, artifact.palette, self.names)
        except ValueError as exc:
            raise NodeParameterError(f"parameter 'color_palette': {exc}") from None
        self.live = _Live(config.overlay, config.colored_mask, config.alpha, palette, config.resize)
        self.process = FrameProcessor(segmenter, config.input, config.overlay, config.alpha, palette)
        self.stats = NodeStats()
        self.mailbox = LatestFrame()
        self.logger = node.get_logger()
        self.failed_before = 0  # failures at the last diagnostics report
        # The very objects registered, so that close() removes what was added.
        self.pre_set, self.on_set = self._integers_as_doubles, self._apply_parameters
        if hasattr(node, "add_pre_set_parameters_callback"):  # rclpy >= Iron; Humble refuses with a reason
            node.add_pre_set_parameters_callback(self.pre_set)
        node.add_on_set_parameters_callback(self.on_set)
        self._create_topics(artifact.head == "panoptic")
        self.timers = [
            node.create_timer(config.diagnostics_period, self._report_diagnostics),
            node.create_timer(10.0, self._report),
        ]
        self.worker = threading.Thread(target=self._work, name="pem-segment", daemon=True)
        self.worker.start()
        outputs = ", ".join(p.topic_name for p in self.publishers.values())
        log(f"pem-deploy ros2: {config.input} (+ {config.camera_info_in()}) -> {outputs}, /diagnostics")

    def _create_topics(self, panoptic: bool) -> None:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from std_msgs.msg import String

        node, config = self.node, self.config
        topics = config.topics()
        out_qos = _qos(config.output_qos_depth, config.output_qos_reliability)
        in_qos = _qos(config.input_qos_depth, config.input_qos_reliability)
        self.publishers: dict[str, Any] = {
            "labels": node.create_publisher(Image, topics.labels, out_qos),
            "colored_mask": node.create_publisher(Image, config.colored_mask_out(), out_qos),
            "overlay": node.create_publisher(CompressedImage, topics.overlay, out_qos),
            "camera_info": node.create_publisher(CameraInfo, config.camera_info_out(), out_qos),
        }
        if panoptic:
            self.publishers["panoptic"] = node.create_publisher(Image, topics.panoptic, out_qos)
            self.publishers["segments"] = node.create_publisher(String, topics.segments, out_qos)
        self.diagnostics = node.create_publisher(self.diagnostic_types[0], "/diagnostics", 10)
        self.camera_info: Any = None
        in_type = CompressedImage if config.input.rstrip("/").endswith("/compressed") else Image
        self.subscriptions = [
            node.create_subscription(in_type, config.input, self._on_image, in_qos),
            node.create_subscription(CameraInfo, config.camera_info_in(), self._on_camera_info, in_qos),
        ]

    def _apply_parameters(self, params: list[Any]) -> Any:
        """Check and apply a parameter change at run time (all or none, with a reason)."""
        set_result, artifact = self.set_result, self.segmenter.artifact
        changes: dict[str, Any] = {}
        for param in params:
            spec = PARAMETERS.get(param.name)
            if spec is None:
                continue
            try:
                value = coerce_parameter(param.name, param.value)
            except NodeParameterError as exc:
                return set_result(successful=False, reason=str(exc))
            problem = check_parameter(param.name, value, spec)
            if param.name == "color_palette" and not problem:
                try:
                    changes["palette"] = parse_palette(value, artifact.palette, self.names)
                except ValueError as exc:
                    problem = str(exc)
            if problem:
                return set_result(successful=False, reason=f"parameter {param.name!r}: {problem}")
            if param.name in ("overlay", "colored_mask", "alpha", "resize"):
                changes[param.name] = value
        if "resize" in changes and changes["resize"] != self.live.resize:
            self.segmenter.preprocessor = Preprocessor(artifact.input_format, changes["resize"])  # type: ignore[arg-type]
        self.live = replace(self.live, **changes)
        return set_result(successful=True, reason="applied")

    @staticmethod
    def _integers_as_doubles(params: list[Any]) -> list[Any]:
        """``ros2 param set ... alpha 1`` sends an integer; rclpy would refuse it for a double."""
        from rclpy.parameter import Parameter

        return [
            Parameter(p.name, value=float(p.value))
            if p.name in PARAMETERS
            and PARAMETERS[p.name].kind is float
            and isinstance(p.value, int)
            and not isinstance(p.value, bool)
            else p
            for p in params
        ]

    def _on_image(self, msg: Any) -> None:
        if self.active.is_set():
            self.mailbox.put((msg, time.monotonic()))

    def _on_camera_info(self, msg: Any) -> None:
        self.camera_info = msg

    def _wanted(self, key: str) -> bool:
        publisher = self.publishers.get(key)
        return publisher is not None and publisher.get_subscription_count() > 0

    def _publish_frame(self, msg: Any, received: float) -> None:
        settings, publishers, process = self.live, self.publishers, self.process
        want = {key for key in publishers if self._wanted(key)}
        if not want - {"camera_info"}:  # the CameraInfo goes with segmentation outputs, not alone
            self.stats.idle += 1
            return
        process.alpha = settings.alpha
        process.palette = settings.palette
        out = process.segment(
            msg,
            overlay=settings.overlay and "overlay" in want,
            colored_mask=settings.colored_mask and "colored_mask" in want,
        )
        for key in ("labels", "panoptic", "segments", "overlay"):
            fields_ = getattr(out.messages, key)
            if fields_ is not None and key in want:
                publishers[key].publish(ros_msgs.build(fields_, self.types))
        if out.colored_mask is not None:
            publishers["colored_mask"].publish(ros_msgs.build(out.colored_mask, self.types))
        info = self.camera_info
        if info is not None and "camera_info" in want:
            publishers["camera_info"].publish(_restamped(info, msg.header, self.camera_info_type))
        self.stats.success(time.monotonic() - received)

    def _work(self) -> None:
        while not self.stop.is_set():
            item = self.mailbox.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._publish_frame(*item)
            except Exception as exc:  # any one frame's failure must not stop the node
                self.stats.failure(exc)
                self.logger.error(f"frame failed: {self.stats.last_error}", throttle_duration_sec=5.0)

    def _report_diagnostics(self) -> None:
        diagnostic_array, diagnostic_status, key_value = self.diagnostic_types
        stats, mailbox, node = self.stats, self.mailbox, self.node
        values = diagnostic_values(stats, mailbox)
        recent_failures = stats.failed - self.failed_before
        self.failed_before = stats.failed
        if not self.active.is_set():
            level, message = diagnostic_status.OK, "inactive (lifecycle node not activated)"
        elif recent_failures:
            level, message = diagnostic_status.WARN, f"{recent_failures} frame(s) failed: {stats.last_error}"
        elif mailbox.received == 0:
            level, message = diagnostic_status.OK, f"waiting for images on {self.config.input}"
        else:
            level, message = diagnostic_status.OK, f"segmenting at {stats.fps():.1f} FPS"
        status = diagnostic_status(
            level=level,
            name=f"{node.get_name()}: segmentation",
            message=message,
            hardware_id=str(self.segmenter.artifact.model_path.name),
            values=[key_value(key=k, value=v) for k, v in values],
        )
        array_ = diagnostic_array(status=[status])
        array_.header.stamp = node.get_clock().now().to_msg()
        self.diagnostics.publish(array_)

    def _report(self) -> None:
        stats = self.stats
        self.logger.info(
            f"{stats.segmented} frames segmented ({stats.fps():.1f} FPS), "
            f"{self.mailbox.dropped} dropped under load, {stats.failed} failed, "
            f"{stats.idle} skipped (no subscribers)"
        )

    def close(self) -> None:
        node = self.node
        self.stop.set()
        self.mailbox.close()
        self.worker.join(timeout=10)
        if hasattr(node, "remove_pre_set_parameters_callback"):
            node.remove_pre_set_parameters_callback(self.pre_set)
        node.remove_on_set_parameters_callback(self.on_set)
        for timer in self.timers:
            node.destroy_timer(timer)
        for subscription in self.subscriptions:
            node.destroy_subscription(subscription)
        for publisher in [*self.publishers.values(), self.diagnostics]:
            node.destroy_publisher(publisher)
        self.log(
            f"pem-deploy ros2: stopped after {self.stats.segmented} frame(s), {self.stats.failed} failed"
        )


def _restamped(info: Any, header: Any, camera_info_type: type) -> Any:
    """A copy of ``info`` carrying ``header`` (the output's stamp and frame id)."""
    copy = camera_info_type()
    for name in camera_info_type.get_fields_and_field_types():
        setattr(copy, name, getattr(info, name))
    copy.header = header
    return copy


__all__ = [
    "PARAMETERS",
    "FrameOutputs",
    "FrameProcessor",
    "LatestFrame",
    "NodeConfig",
    "NodeParameterError",
    "NodeStats",
    "ParameterSpec",
    "RclpyMissingError",
    "check_parameter",
    "coerce_parameter",
    "config_from_parameters",
    "diagnostic_values",
    "import_rclpy",
    "parse_palette",
    "run_lifecycle_node",
    "run_node",
    "stop_on_signals",
]

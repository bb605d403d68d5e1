"""The ROS 2 node's data path (shared message module, frame mailbox) without rclpy; rclpy wiring
where it is installed."""

import importlib.util
import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from runtime import Segmenter
from runtime.io.ros.messages import (
    Header,
    MessageError,
    MessageTypes,
    Stamp,
    build,
    decode_image,
    image_fields,
    labels_array,
    segmentation_messages,
)
from runtime.io.ros.node import FrameProcessor, LatestFrame, NodeConfig
from tests.helpers.runtime_models import constant_panoptic_artifact, semantic_model, write_artifact

HAS_RCLPY = importlib.util.find_spec("rclpy") is not None


def _msg(image, encoding="bgr8", sec=5, nanosec=6, frame_id="cam"):
    """An rclpy-like message (attributes only; data as bytes like rclpy's array('B'))."""
    header = SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id=frame_id)
    if encoding in ("jpeg", "png"):
        import cv2

        _, buf = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", image)
        return SimpleNamespace(header=header, format=encoding, data=buf.tobytes())
    h, w = image.shape[:2]
    return SimpleNamespace(
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3, data=image.tobytes()
    )


def test_frame_processor_semantic(tmp_path):
    seg = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))
    rng = np.random.default_rng(0)
    process = FrameProcessor(seg, "/cam/image_raw")
    for i in range(3):
        image = rng.integers(0, 256, (30 + i, 50, 3), dtype=np.uint8)
        out = process(_msg(image, sec=i, nanosec=7))
        np.testing.assert_array_equal(labels_array(out.labels), seg.predict(image).labels)
        assert out.labels.encoding == "mono8" and out.labels.header.stamp.sec == i
        assert out.labels.header.frame_id == "cam" and out.panoptic is None and out.segments is None
        assert out.overlay is not None and out.overlay.format == "jpeg"
    png = process(_msg(image, "png"))
    np.testing.assert_array_equal(labels_array(png.labels), seg.predict(image).labels)
    assert process.frames == 4
    with pytest.raises(MessageError, match=r"/cam/image_raw: unsupported image encoding 'nv21'"):
        process(_msg(image, "nv21"))


def test_frame_processor_panoptic_and_message_classes(tmp_path):
    seg = Segmenter.open(constant_panoptic_artifact(tmp_path))
    out = FrameProcessor(seg, "/cam/image_raw", with_overlay=False)(_msg(np.zeros((64, 128, 3), np.uint8)))
    assert out.overlay is None and out.panoptic.encoding == "mono16"
    ids = labels_array(out.panoptic)
    assert ids.shape == (64, 128) and set(np.unique(ids)) == {1, 2}
    payload = json.loads(out.segments.data)
    assert payload["header"] == {"stamp": {"sec": 5, "nanosec": 6}, "frame_id": "cam"}
    assert [s["category"] for s in payload["segments"]] == ["road", "car"]
    # build() fills whatever classes a library provides (here plain keyword records, as in rclpy).
    types = MessageTypes(*(lambda **kw: SimpleNamespace(**kw) for _ in range(5)), data=bytes)
    msg = build(out.panoptic, types)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (64, 128, "mono16", 256)
    assert msg.header.stamp.nanosec == 6 and isinstance(msg.data, bytes)
    np.testing.assert_array_equal(labels_array(msg), ids)
    assert build(out.segments, types).data == out.segments.data


def test_labels_are_mono16_beyond_255_classes():
    header = Header(Stamp(1, 2), "f")
    labels = np.array([[0, 299], [256, 3]], np.int32)
    result = SimpleNamespace(labels=labels, panoptic=None, segments=[])
    names = [f"c{i}" for i in range(300)]
    out = segmentation_messages(
        result, np.zeros((2, 2, 3), np.uint8), header, names, np.zeros((300, 3)), False
    )
    assert out.labels.encoding == "mono16"
    np.testing.assert_array_equal(labels_array(out.labels), labels)
    with pytest.raises(MessageError, match="do not fit"):
        image_fields(labels, header, "mono8")


def test_latest_frame_drops_old_frames_under_load():
    box = LatestFrame()
    seen = []

    def slow_consumer():
        while (item := box.take(timeout=1.0)) is not None:
            seen.append(item)
            time.sleep(0.02)

    worker = threading.Thread(target=slow_consumer)
    worker.start()
    for i in range(50):
        box.put(i)
        time.sleep(0.001)
    time.sleep(0.1)
    box.close()
    worker.join(timeout=5)
    assert seen[-1] == 49 and seen == sorted(seen)
    assert box.dropped == 50 - len(seen) and box.dropped > 20
    assert decode_image(_msg(np.zeros((4, 4, 3), np.uint8))).shape == (4, 4, 3)


def test_node_config_topics():
    config = NodeConfig("m.onnx", "/cam/image_raw/compressed", overlay_topic="/viz")
    topics = config.topics()
    assert topics.labels == "/cam/image_raw/pem/labels" and topics.overlay == "/viz"
    assert topics.segments == "/cam/image_raw/pem/panoptic/segments"


@pytest.mark.skipif(HAS_RCLPY, reason="rclpy is installed here; the missing-rclpy message is not reachable")
def test_ros2_command_without_rclpy_is_one_line(tmp_path):
    from cli import app

    result = CliRunner().invoke(app, ["ros2", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: rclpy is not importable")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.skipif(not HAS_RCLPY, reason="rclpy (a sourced ROS 2 Humble/Jazzy install) is not available")
def test_rclpy_node_publishes_labels(tmp_path):  # pragma: no cover - needs ROS 2
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from runtime.io.ros.node import run_node

    model = write_artifact(tmp_path, semantic_model(32, 64))
    config = NodeConfig(str(model), "/pem_test/image_raw")
    thread = threading.Thread(target=run_node, args=(config, ["x"]), daemon=True)
    thread.start()
    time.sleep(2.0)
    node = Node("pem_test_probe")
    got = []
    node.create_subscription(Image, "/pem_test/image_raw/pem/labels", got.append, qos_profile_sensor_data)
    pub = node.create_publisher(Image, "/pem_test/image_raw", qos_profile_sensor_data)
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :, 2] = 200
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        pub.publish(Image(height=20, width=30, encoding="bgr8", step=90, data=image.tobytes()))
        rclpy.spin_once(node, timeout_sec=0.2)
    assert got and got[0].encoding == "mono8"
    assert (labels_array(got[0]) == 0).all()
    rclpy.shutdown()


def test_parameters_coerced_validated_in_one_line():
    from runtime.io.ros.node import PARAMETERS, NodeParameterError, config_from_parameters, parse_palette

    base = {name: getattr(NodeConfig("m.onnx"), name) for name in PARAMETERS}
    config = config_from_parameters(base | {"alpha": 1, "diagnostics_period": 2})  # integers for doubles
    assert config.alpha == 1.0 and isinstance(config.alpha, float) and config.diagnostics_period == 2.0
    for bad, message in [
        ({"resize": "bogus"}, "parameter 'resize': 'bogus' is not one of stretch, letterbox"),
        ({"alpha": 1.5}, "parameter 'alpha': 1.5 is outside 0.0..1.0"),
        ({"overlay": "yes"}, "parameter 'overlay': expected a bool, got string 'yes'"),
        ({"input_qos_reliability": "sometimes"}, "not one of best_effort, reliable"),
        ({"input_qos_depth": 0}, "parameter 'input_qos_depth'"),
        ({"color_palette": "#zzzzzz"}, "palette entry '#zzzzzz'"),
    ]:
        with pytest.raises(NodeParameterError, match=message):
            config_from_parameters(base | bad)
    palette = parse_palette("#ff0000, car=#00ff00", np.zeros((3, 3), np.uint8), ["road", "sky", "car"])
    assert palette.tolist() == [[255, 0, 0], [0, 0, 0], [0, 255, 0]]
    with pytest.raises(ValueError, match="no class 'bus'"):
        parse_palette("bus=#ffffff", np.zeros((3, 3), np.uint8), ["road", "sky", "car"])


def test_node_topics_camera_info_and_colored_mask(tmp_path):
    config = NodeConfig("m.onnx", "/x/image_raw/compressed")
    assert config.camera_info_in() == "/x/camera_info"
    assert config.colored_mask_out() == "/x/image_raw/pem/colored_mask"
    assert config.camera_info_out() == "/x/image_raw/pem/camera_info"
    assert NodeConfig("m.onnx", "/image").camera_info_in() == "/camera_info"
    seg = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))
    image = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    out = FrameProcessor(seg, "/x/image_raw").segment(_msg(image), overlay=False, colored_mask=True)
    labels = seg.predict(image).labels
    rgb = out.colored_mask.data.reshape(24, 40, 3)
    assert out.colored_mask.encoding == "rgb8" and out.messages.overlay is None
    np.testing.assert_array_equal(rgb, seg.artifact.palette[labels])


def test_node_stats_percentiles_and_failures():
    from runtime.io.ros.node import NodeStats, diagnostic_values

    stats = NodeStats()
    for i in range(100):
        stats.success((i + 1) / 1000, now=100.0 + i * 0.05)
    stats.failure(ValueError("bad\nframe"))
    assert stats.fps(now=105.0) == pytest.approx(20.0, rel=0.05)
    lat = stats.latency_ms()
    assert lat["p50"] == pytest.approx(50.5) and lat["max"] == pytest.approx(100.0)
    values = dict(diagnostic_values(stats, LatestFrame()))
    assert values["frames_failed"] == "1" and values["last_error"].startswith("ValueError: bad")
    assert "\n" not in values["last_error"]


def test_launch_file_and_parameters_yaml_match_the_node():
    """ros2 launch cannot run here: the launch file is executed against recording stand-ins of the
    launch API, and the YAML is checked against the node's parameters (rclpy parses it for real
    in test_ros_node_live)."""
    import ast
    import sys
    from pathlib import Path

    from ruamel.yaml import YAML

    from runtime.io.ros.node import PARAMETERS, config_from_parameters

    root = Path(__file__).resolve().parents[2]
    params = YAML(typ="safe").load((root / "ros/config/pem_segmentation.params.yaml").read_text())
    values = params["pem_segmentation"]["ros__parameters"]
    assert set(values) <= set(PARAMETERS) and "alpha" in values
    defaults = {name: getattr(NodeConfig("m.onnx"), name) for name in PARAMETERS}
    assert config_from_parameters(defaults | values) == NodeConfig("m.onnx", **values)

    source = (root / "ros/launch/pem_segmentation.launch.py").read_text()
    ast.parse(source)
    recorded = {}

    class Record:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
            recorded.setdefault(type(self).__name__, []).append(self)

    stand_ins = {
        "launch": {"LaunchDescription": type("LaunchDescription", (Record,), {})},
        "launch.actions": {
            "DeclareLaunchArgument": type("DeclareLaunchArgument", (Record,), {}),
            "ExecuteProcess": type("ExecuteProcess", (Record,), {}),
        },
        "launch.substitutions": {"LaunchConfiguration": type("LaunchConfiguration", (Record,), {})},
    }
    saved = {name: sys.modules.get(name) for name in stand_ins}
    try:
        for name, attrs in stand_ins.items():
            sys.modules[name] = type(sys)(name)
            vars(sys.modules[name]).update(attrs)
        namespace = {"__file__": str(root / "ros/launch/pem_segmentation.launch.py")}
        exec(compile(source, "pem_segmentation.launch.py", "exec"), namespace)
        description = namespace["generate_launch_description"]()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    process = recorded["ExecuteProcess"][0]
    assert description.args[0][-1] is process
    cmd = process.kwargs["cmd"]
    words = [w if isinstance(w, str) else f"${w.args[0]}" for w in cmd]
    assert (
        " ".join(words)
        == "$pem_deploy ros2 $artifact --input $input -- --ros-args --params-file $params_file"
    )
    declared = {a.args[0]: a.kwargs.get("default_value") for a in recorded["DeclareLaunchArgument"]}
    assert set(declared) == {"artifact", "input", "params_file", "pem_deploy"}
    assert Path(declared["params_file"]) == root / "ros/config/pem_segmentation.params.yaml"

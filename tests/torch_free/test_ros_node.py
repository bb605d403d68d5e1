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
from runtime.ros.messages import (
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
from runtime.ros.node import FrameProcessor, LatestFrame, NodeConfig
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

    from runtime.ros.node import run_node

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

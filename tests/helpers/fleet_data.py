"""Inputs for the fleet tests, generated from seeds: a raw-head ONNX model (so frames have a
confidence margin), ROS 2 bags, a video and an image folder."""

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.helpers.runtime_models import write_artifact

TOPICS = ("/front/image_raw", "/side/image/compressed")


def raw_model(h: int = 32, w: int = 64) -> onnx.ModelProto:
    """A ``raw`` head (pred_logits, pred_masks at H/4 x W/4) computed from the image, any batch:
    three queries whose masks are a 1x1 conv of the 4x4-pooled image, each query leaning to one
    class by a logit that grows with its mean mask value; class scores vary per pixel and frame."""
    q, k = 3, 3
    weights = np.array([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]], np.float32) / 64.0
    bias = np.full((1, q, k + 1), -1.0, np.float32)
    for i in range(q):
        bias[0, i, i] = 1.0
    scale = np.zeros((1, q, k + 1), np.float32)
    for i in range(q):
        scale[0, i, i] = 2.0
    inits = [
        numpy_helper.from_array(weights.reshape(q, 3, 1, 1), "Wm"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    n = helper.make_node
    nodes = [
        n("AveragePool", ["images"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        n("Conv", ["pooled", "Wm"], ["pred_masks"]),
        n("ReduceMean", ["pred_masks", "axes23"], ["mean"], keepdims=0),
        n("Unsqueeze", ["mean", "axis2"], ["mean3"]),
        n("Mul", ["mean3", "scale"], ["scaled"]),
        n("Add", ["scaled", "bias"], ["pred_logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "raw",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, h, w])],
        [
            helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, ["B", q, k + 1]),
            helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, ["B", q, h // 4, w // 4]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def raw_artifact(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return write_artifact(folder, raw_model(), head="raw", shape=("B", 3, 32, 64))


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocks of strong colours with noise (so each frame's margin differs)."""
    colours = np.array([(0, 0, 220), (220, 0, 0), (0, 220, 0), (120, 90, 200)], np.int16)
    grid = rng.integers(0, len(colours), ((h + 7) // 8, (w + 7) // 8))
    image = colours[grid].repeat(8, 0).repeat(8, 1)[:h, :w] + rng.integers(-30, 30, (h, w, 3))
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))


def write_bag(path, storage, frames: int, seed: int):
    """A bag with a raw bgr8 topic, a compressed PNG topic and a non-image topic."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    image_t, comp_t, string_t = (
        ts.types["sensor_msgs/msg/Image"],
        ts.types["sensor_msgs/msg/CompressedImage"],
        ts.types["std_msgs/msg/String"],
    )
    header_t, time_t = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    rng = np.random.default_rng(seed)
    with Writer(path, version=9, storage_plugin=storage) as writer:
        raw = writer.add_connection(TOPICS[0], image_t.__msgtype__, typestore=ts)
        comp = writer.add_connection(TOPICS[1], comp_t.__msgtype__, typestore=ts)
        other = writer.add_connection("/chatter", string_t.__msgtype__, typestore=ts)
        for i in range(frames):
            t = 1_000_000_000 * (i + 1) + seed
            header = header_t(stamp=time_t(sec=1_700_000_000 + i, nanosec=1000 * i + seed), frame_id="front")
            image = scene(rng, 40, 72)
            msg = image_t(
                header=header,
                height=40,
                width=72,
                encoding="bgr8",
                is_bigendian=0,
                step=72 * 3,
                data=image.reshape(-1),
            )
            writer.write(raw, t, ts.serialize_cdr(msg, image_t.__msgtype__))
            _, buf = cv2.imencode(".png", scene(rng, 30, 50))
            side = header_t(stamp=time_t(sec=1_700_000_000 + i, nanosec=7), frame_id="side")
            cmsg = comp_t(header=side, format="png", data=buf.reshape(-1))
            writer.write(comp, t + 500, ts.serialize_cdr(cmsg, comp_t.__msgtype__))
            writer.write(other, t + 7, ts.serialize_cdr(string_t(data="hi"), string_t.__msgtype__))
    return path


def write_video(path, frames: int, seed: int):
    """An MJPG .avi (decodes the same every time)."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for _ in range(frames):
        writer.write(scene(rng, 48, 64))
    writer.release()
    return path


def write_images(folder, count: int, seed: int):
    """PNG and JPEG files in a folder and a sub-folder."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / ("a" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"img{i:02d}.{'png' if i % 3 else 'jpg'}"), scene(rng, 36 + 4 * (i % 3), 64))
    return folder


def read_bag(path) -> dict[str, list[tuple[int, bytes]]]:
    """{topic: [(bag time, serialized message bytes)]}."""
    from rosbags.rosbag2 import Reader

    out: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, bytes(raw)))
    return out

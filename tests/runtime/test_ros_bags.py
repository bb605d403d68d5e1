"""ROS 2 bags in and out of ``pem-deploy infer``: real MCAP / sqlite3 bags written with rosbags."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("rosbags", reason="the 'ros' extra (rosbags) is not installed")
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from cli import app
from runtime import Segmenter
from runtime.io.ros.messages import decode_image, labels_array, output_topics
from tests.helpers.ros_types import TS, CompressedImage, Header, Image, String, Time
from tests.helpers.runtime_models import semantic_model, write_artifact

RAW_ENCODINGS = ["rgb8", "bgr8", "mono8", "bgra8", "rgba8", "mono16", "bayer_rggb8"]


def _raw(image: np.ndarray, encoding: str) -> tuple[np.ndarray, int, int]:
    """Independent (test-side) packing of a BGR image: (bytes, step, is_bigendian)."""
    if encoding == "rgb8":
        plane = image[:, :, ::-1]
    elif encoding == "bgr8":
        plane = image
    elif encoding == "bgra8":
        plane = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    elif encoding == "rgba8":
        plane = np.dstack([image[:, :, ::-1], np.full(image.shape[:2], 7, np.uint8)])
    elif encoding == "mono8":
        plane = image[:, :, 1]
    elif encoding == "mono16":
        plane = (image[:, :, 1].astype(np.uint16) * 256 + 17).astype(">u2")  # big-endian; low byte noise
        data = np.ascontiguousarray(plane).view(np.uint8).reshape(-1)
        return data, image.shape[1] * 2, 1
    elif encoding.startswith("bayer_"):  # the 2x2 block's colours, row by row (BGR channel indices)
        h, w = image.shape[:2]
        plane = np.zeros((h, w), np.uint8)
        channel = {"r": 2, "g": 1, "b": 0}
        for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            plane[dy::2, dx::2] = image[dy::2, dx::2, channel[encoding[6 + k]]]
    elif encoding == "32FC1":
        data = np.ascontiguousarray(image[:, :, 1].astype(np.float32)).view(np.uint8).reshape(-1)
        return data, image.shape[1] * 4, 0
    else:
        raise AssertionError(encoding)
    plane = np.ascontiguousarray(plane)
    rows = plane.reshape(plane.shape[0], -1)
    padded = np.zeros((rows.shape[0], rows.shape[1] + 4), np.uint8)  # rows padded: step > width
    padded[:, : rows.shape[1]] = rows
    return padded.reshape(-1), padded.shape[1], 0


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocks of strong colours (so channel order matters and Bayer demosaicing keeps the class)."""
    colours = np.array([(0, 0, 220), (220, 0, 0), (0, 220, 0), (30, 30, 200)], np.uint8)
    grid = rng.integers(0, len(colours), ((h + 7) // 8, (w + 7) // 8))
    return np.ascontiguousarray(colours[grid].repeat(8, 0).repeat(8, 1)[:h, :w])


def _header(i: int, frame_id: str):
    return Header(stamp=Time(sec=1_700_000_000 + i, nanosec=1000 * i + 3), frame_id=frame_id)


def _write_bag(path, storage, frames=6, seed=0, encodings=RAW_ENCODINGS, extra_topic=True):
    """A bag with a raw topic (cycling through ``encodings``), a compressed topic and a non-image one."""
    rng = np.random.default_rng(seed)
    with Writer(path, version=9, storage_plugin=storage) as writer:
        raw = writer.add_connection("/front/image_raw", Image.__msgtype__, typestore=TS)
        comp = writer.add_connection("/side/image/compressed", CompressedImage.__msgtype__, typestore=TS)
        other = writer.add_connection("/chatter", String.__msgtype__, typestore=TS) if extra_topic else None
        for i in range(frames):
            t = 1_000_000_000 * (i + 1)
            encoding = encodings[i % len(encodings)]
            h, w = (40, 72) if i % 2 == 0 else (36, 64)
            data, step, big = _raw(_scene(rng, h, w), encoding)
            msg = Image(
                header=_header(i, "front_cam"),
                height=h,
                width=w,
                encoding=encoding,
                is_bigendian=big,
                step=step,
                data=data,
            )
            writer.write(raw, t, TS.serialize_cdr(msg, Image.__msgtype__))
            fmt = "png" if i % 2 else "jpeg"
            _, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", _scene(rng, 30, 50))
            cmsg = CompressedImage(header=_header(i, "side_cam"), format=fmt, data=buf.reshape(-1))
            writer.write(comp, t + 500, TS.serialize_cdr(cmsg, CompressedImage.__msgtype__))
            if other is not None:
                writer.write(other, t + 7, TS.serialize_cdr(String(data="hi"), String.__msgtype__))
    return path


def _read(path):
    """{topic: [(bag time, message)]} of a bag."""
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, TS.deserialize_cdr(raw, conn.msgtype)))
    return out


def _model(tmp_path):
    return write_artifact(tmp_path, semantic_model(32, 64))


@pytest.mark.parametrize(
    ("storage", "source_form", "out_name"),
    [(StoragePlugin.MCAP, "folder", "seg.mcap"), (StoragePlugin.SQLITE3, "file", "seg.db3")],
)
def test_bag_to_bag_labels_match_predict(tmp_path, storage, source_form, out_name):
    bag = _write_bag(tmp_path / "drive", storage)
    source = (
        bag if source_form == "folder" else next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    )
    model = _model(tmp_path)
    out = tmp_path / out_name
    topics = ["/front/image_raw", "/side/image/compressed"]
    args = ["infer", str(model), str(source), "--out", str(out), "--copy-input"]
    result = CliRunner().invoke(app, [*args, *(x for t in topics for x in ("--topic", t))])
    assert result.exit_code == 0, result.output
    assert "12 frame(s)" in result.output and "FPS" in result.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out_name}.")]  # staging removed
    written = _read(out)
    inputs = _read(bag)
    seg = Segmenter.open(model)
    for topic in topics:
        names = output_topics(topic)
        assert names.labels == topic.removesuffix("/compressed") + "/pem/labels"
        labels, overlays = written[names.labels], written[names.overlay]
        assert len(labels) == len(overlays) == len(inputs[topic]) == 6
        assert [t for t, _ in written[topic]] == [t for t, _ in inputs[topic]]  # --copy-input
        for (t_in, msg_in), (t_out, lab), (t_ov, ov) in zip(inputs[topic], labels, overlays):
            image = decode_image(msg_in, topic)
            expected = seg.predict(image).labels
            assert t_out == t_ov == t_in
            assert lab.encoding == "mono8" and (lab.height, lab.width) == image.shape[:2]
            np.testing.assert_array_equal(labels_array(lab), expected)
            for m in (lab, ov):
                assert (m.header.stamp.sec, m.header.stamp.nanosec) == (
                    msg_in.header.stamp.sec,
                    msg_in.header.stamp.nanosec,
                )
                assert m.header.frame_id == msg_in.header.frame_id
            assert ov.format == "jpeg"
            assert cv2.imdecode(ov.data, cv2.IMREAD_COLOR).shape == image.shape
    assert "/chatter" not in written


def test_decoded_encodings_match_the_source_image():
    """Every raw encoding decodes back to the scene (exactly, or its green plane for mono)."""
    rng = np.random.default_rng(1)
    image = _scene(rng, 40, 72)
    for encoding in [*RAW_ENCODINGS, "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"]:
        data, step, big = _raw(image, encoding)
        msg = Image(
            header=_header(0, "f"),
            height=40,
            width=72,
            encoding=encoding,
            is_bigendian=big,
            step=step,
            data=data,
        )
        decoded = decode_image(msg, "/t")
        assert decoded.shape == (40, 72, 3) and decoded.dtype == np.uint8
        if encoding.startswith("mono"):
            np.testing.assert_array_equal(decoded, np.repeat(image[:, :, 1:2], 3, axis=2))
        elif encoding.startswith("bayer"):
            yy, xx = np.mgrid[:40, :72]
            inside = (yy % 8 >= 2) & (yy % 8 <= 5) & (xx % 8 >= 2) & (xx % 8 <= 5)  # 2 px from block edges
            err = np.abs(decoded.astype(int) - image)[inside]
            assert err.max() <= 2, encoding
        else:
            np.testing.assert_array_equal(decoded, image, err_msg=encoding)


def test_bag_to_folder_with_max_frames(tmp_path):
    bag = _write_bag(tmp_path / "drive", StoragePlugin.MCAP)
    model = _model(tmp_path)
    out = tmp_path / "frames"
    args = [
        "infer",
        str(model),
        str(bag),
        "--topic",
        "/front/image_raw",
        "--out",
        str(out),
        "--max-frames",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (out / "labels" / "front_image_raw").iterdir())
    # Each frame's header stamp and frame id are kept in its name (issue 21: they were lost).
    assert files == [f"{i:06d}_{1_700_000_000 + i}.{1000 * i + 3:09d}_front_cam.png" for i in range(4)]
    meta = json.loads((out / "predictions.json").read_text())
    assert meta["frames"] == 4
    first = next(iter(_read(bag)["/front/image_raw"]))[1]
    expected = Segmenter.open(model).predict(decode_image(first, "/front/image_raw")).labels
    got = cv2.imread(str(out / "labels" / "front_image_raw" / files[0]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(got, expected)


def test_panoptic_bag_messages(tmp_path):
    from tests.helpers.runtime_models import constant_panoptic_artifact as panoptic_model

    model = panoptic_model(tmp_path)
    bag = _write_bag(tmp_path / "drive", StoragePlugin.MCAP, frames=2)
    out = tmp_path / "pan.mcap"
    args = ["infer", str(model), str(bag), "--topic", "/front/image_raw", "--out", str(out), "--no-overlay"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = _read(out)
    names = output_topics("/front/image_raw")
    assert names.overlay not in written
    seg = Segmenter.open(model)
    inputs = _read(bag)["/front/image_raw"]
    for (_, src), (_, pan), (_, segs) in zip(inputs, written[names.panoptic], written[names.segments]):
        expected = seg.predict(decode_image(src))
        assert pan.encoding == "mono16"
        np.testing.assert_array_equal(labels_array(pan), expected.panoptic)
        payload = json.loads(segs.data)
        assert payload["header"]["frame_id"] == "front_cam"
        assert payload["header"]["stamp"] == {
            "sec": src.header.stamp.sec,
            "nanosec": src.header.stamp.nanosec,
        }
        assert [(s["id"], s["category"], s["isthing"]) for s in payload["segments"]] == [
            (1, "road", False),
            (2, "car", True),
        ]


def _cli_error(args):
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_bad_bags_one_line_errors(tmp_path):
    model = str(_model(tmp_path))
    bag = _write_bag(tmp_path / "drive", StoragePlugin.MCAP, frames=3)
    mcap = bag / "drive.mcap"
    out = str(tmp_path / "o.mcap")
    truncated = tmp_path / "cut.mcap"
    truncated.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    line = _cli_error(["infer", model, str(truncated), "--topic", "/front/image_raw", "--out", out])
    assert "cut.mcap" in line and "not a readable ROS 2 bag" in line
    db = _write_bag(tmp_path / "db", StoragePlugin.SQLITE3, frames=3) / "db.db3"
    cut_db = tmp_path / "cut.db3"
    cut_db.write_bytes(db.read_bytes()[:4096])
    assert "cut.db3" in _cli_error(["infer", model, str(cut_db), "--topic", "/front/image_raw", "--out", out])
    line = _cli_error(["infer", model, str(mcap), "--topic", "/rear/image_raw", "--out", out])
    assert "no topic '/rear/image_raw'" in line and "/front/image_raw (sensor_msgs/msg/Image)" in line
    line = _cli_error(["infer", model, str(mcap), "--topic", "/chatter", "--out", out])
    assert "/chatter has type std_msgs/msg/String" in line
    assert "give the image topic" in _cli_error(["infer", model, str(mcap), "--out", out])
    weird = _write_bag(tmp_path / "weird", StoragePlugin.MCAP, frames=2, encodings=["32FC1"])
    line = _cli_error(["infer", model, str(weird), "--topic", "/front/image_raw", "--out", out])
    assert "/front/image_raw: unsupported image encoding '32FC1'" in line
    assert not (tmp_path / "o.mcap").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".o.mcap.", ".pem-deploy-staging-"))]


def test_existing_output_bag_needs_overwrite(tmp_path):
    model = str(_model(tmp_path))
    bag = str(_write_bag(tmp_path / "drive", StoragePlugin.MCAP, frames=2))
    out = tmp_path / "seg.mcap"
    out.write_bytes(b"precious")
    args = ["infer", model, bag, "--topic", "/front/image_raw", "--out", str(out)]
    assert "seg.mcap: exists; pass --overwrite" in _cli_error(args)
    assert "seg.mcap: exists; pass --overwrite" in _cli_error([*args, "--exist-ok"])  # a folder's flag
    assert out.read_bytes() == b"precious"
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert len(_read(out)[output_topics("/front/image_raw").labels]) == 2


def test_ros_modules_are_torch_free():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import runtime.io.ros.messages, runtime.io.ros.bags, runtime.io.ros.node\n"
        "import runtime.io.sources, runtime.io.robotics\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

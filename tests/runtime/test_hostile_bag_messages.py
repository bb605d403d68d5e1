"""Hostile ROS 2 image messages: declared sizes, steps, data lengths, packed formats and
CompressedImage headers are checked before anything is decoded (issue 20).

Every refused message is one :class:`MessageError` line through the API, and in a bag one
``error:`` line with exit 2 naming the bag, the topic, the message's index and its stamp; nothing
is written. Accepted edge cases decode to the right pixels.
"""

from __future__ import annotations

import struct
import types
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("rosbags", reason="the 'ros' extra (rosbags) is not installed")
from rosbags.rosbag2 import StoragePlugin, Writer

from cli import app
from runtime.io.ros import bags
from runtime.io.ros.messages import MessageError, decode_image, labels_array
from tests.helpers.ros_types import TS, CompressedImage, Header, Image, Time
from tests.helpers.runtime_models import semantic_model, write_artifact


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 8-bit RGB pixels over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _header(i: int = 0) -> Any:
    return Header(stamp=Time(sec=1_700_000_000 + i, nanosec=1000 * i + 3), frame_id="cam")


def _image(width: int, height: int, encoding: str, step: int, data: Any, big: int = 0) -> Any:
    return Image(
        header=_header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=big,
        step=step,
        data=np.asarray(data, np.uint8).reshape(-1),
    )


def _compressed(data: bytes, fmt: str = "png") -> Any:
    return CompressedImage(header=_header(), format=fmt, data=np.frombuffer(data, np.uint8).copy())


def _jpeg(h: int = 24, w: int = 40) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


# (message, text the one-line error must contain)
REFUSED: dict[str, tuple[Any, str]] = {
    "png-65535x65535": (_compressed(_png_declaring(65535, 65535)), "over the limit"),
    "png-1x200000000": (_compressed(_png_declaring(1, 200_000_000)), "over the limit"),
    "png-truncated": (_compressed(_png_declaring(8, 8)[:-12]), "truncated"),
    "jpeg-truncated": (_compressed(_jpeg()[:60], "jpeg"), "truncated"),
    "jpeg-named-png": (_compressed(b"\x00" * 40, "png"), "not an image"),
    "compressed-empty": (_compressed(b"", "jpeg"), "data is empty"),
    "compressed-depth": (
        _compressed(_jpeg(), "16UC1; compressedDepth"),
        "unsupported CompressedImage format",
    ),
    "raw-65535x65535": (_image(65535, 65535, "rgb8", 3 * 65535, np.zeros(12)), "over the limit"),
    "raw-empty": (_image(0, 4, "rgb8", 0, np.zeros(0)), "empty rgb8 image"),
    "raw-short-step": (_image(8, 4, "rgb8", 20, np.zeros(80)), "step 20 < 24 bytes per row"),
    "raw-short-data": (_image(8, 4, "rgb8", 24, np.zeros(95)), "needs 96 bytes, message has 95"),
    "raw-long-data": (_image(8, 4, "rgb8", 24, np.zeros(200)), "needs 96 bytes, message has 200"),
    "raw-huge-step": (_image(8, 4, "mono8", 1 << 40, np.zeros(32)), "needs 4398046511104 bytes"),
    "yuv422-odd-width": (_image(5, 4, "yuv422", 10, np.zeros(40)), "odd width 5"),
    "uyvy-odd-width": (_image(3, 2, "uyvy", 6, np.zeros(12)), "odd width 3"),
    "yuyv-odd-width": (_image(7, 2, "yuyv", 14, np.zeros(28)), "odd width 7"),
    "yuv422_yuy2-width-1": (_image(1, 2, "yuv422_yuy2", 2, np.zeros(4)), "odd width 1"),
    "unknown-encoding": (_image(4, 4, "32FC1", 16, np.zeros(64)), "unsupported image encoding '32FC1'"),
    "duck-height-string": (
        types.SimpleNamespace(
            encoding="mono8", height="4", width=4, step=4, data=b"\x00" * 16, is_bigendian=0
        ),
        "Image field height must be an integer",
    ),
    "duck-width-float": (
        types.SimpleNamespace(
            encoding="mono8", height=4, width=4.0, step=4, data=b"\x00" * 16, is_bigendian=0
        ),
        "Image field width must be an integer",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_message_is_one_line(case, monkeypatch):
    msg, expected = REFUSED[case]
    monkeypatch.setattr(cv2, "imdecode", _never_decode)  # refused before any pixel is decoded
    with pytest.raises(MessageError) as info:
        decode_image(msg, "/cam/image")
    text = str(info.value)
    assert "\n" not in text and text.startswith("/cam/image: "), text
    assert expected in text, text


def _never_decode(*args: Any) -> None:
    raise AssertionError("cv2.imdecode was called on a message that should be refused first")


def test_pixel_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv("PEM_DEPLOY_MAX_PIXELS", "100")
    with pytest.raises(MessageError, match="40x24 = 960 pixels, over the limit of 100"):
        decode_image(_compressed(_jpeg(), "jpeg"), "/cam")
    with pytest.raises(MessageError, match="over the limit of 100"):
        decode_image(_image(20, 10, "mono8", 20, np.zeros(200)), "/cam")
    monkeypatch.setenv("PEM_DEPLOY_MAX_PIXELS", "960")
    assert decode_image(_compressed(_jpeg(), "jpeg"), "/cam").shape == (24, 40, 3)


def test_accepted_edge_cases_decode_right():
    # Packed 4:2:2 with an even width, rows padded: U Y V Y per two pixels (grey: U = V = 128).
    row = np.array([128, 50, 128, 200] * 2 + [0, 0], np.uint8)  # 4 pixels + 2 padding bytes
    out = decode_image(_image(4, 3, "uyvy", 10, np.tile(row, 3)), "/cam")
    packed = np.tile(row[:8], 3).reshape(3, 4, 2)
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_UYVY))
    assert out[0, 0, 0] < out[0, 1, 0]  # Y 50 darker than Y 200
    # Bayer with odd sides (OpenCV demosaics them).
    assert decode_image(_image(5, 7, "bayer_rggb8", 5, np.full(35, 77)), "/cam").shape == (7, 5, 3)
    # 16-bit big-endian with an odd step (the row is sliced before the 2-byte view).
    data = np.zeros((2, 7), np.uint8)
    data[:, 0:6:2] = 0xAB  # high bytes of 3 big-endian pixels
    np.testing.assert_array_equal(decode_image(_image(3, 2, "mono16", 7, data, big=1), "/cam")[..., 0], 0xAB)
    # A 1x1 image and a PNG exactly at a raised limit.
    assert decode_image(_image(1, 1, "bgr8", 3, [1, 2, 3]), "/cam")[0, 0].tolist() == [1, 2, 3]


LABEL_REFUSED = [
    (
        dict(encoding="mono8", height=4, width=4, step=4, data=b"\x00" * 15, is_bigendian=0),
        "does not fit its 15",
    ),
    (dict(encoding="mono16", height=2, width=4, step=6, data=b"\x00" * 12, is_bigendian=0), "step 6"),
    (dict(encoding="mono8", height=0, width=4, step=4, data=b"", is_bigendian=0), "4x0"),
]


@pytest.mark.parametrize(("fields", "expected"), LABEL_REFUSED)
def test_label_images_read_back_are_checked(fields, expected):
    with pytest.raises(MessageError, match=expected):
        labels_array(types.SimpleNamespace(**fields))


# -- in a bag: one line, exit 2, naming topic, index and stamp; nothing written --------------------


def _bag(path: Path, bad: Any, bad_index: int = 1) -> Path:
    """A bag of 3 CompressedImage messages on /cam/image/compressed; message ``bad_index`` is ``bad``."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam/image/compressed", CompressedImage.__msgtype__, typestore=TS)
        for i in range(3):
            msg = bad if i == bad_index else _compressed(_jpeg(32, 64), "jpeg")
            msg = CompressedImage(header=_header(i), format=msg.format, data=msg.data)
            writer.write(conn, 1_000_000_000 * (i + 1), TS.serialize_cdr(msg, CompressedImage.__msgtype__))
    return path / f"{path.name}.mcap"


def _infer(tmp_path: Path, bag: Path) -> tuple[str, Path]:
    (tmp_path / "model").mkdir(exist_ok=True)
    model = write_artifact(tmp_path / "model", semantic_model(32, 64))
    out = tmp_path / "seg.mcap"
    result = CliRunner().invoke(
        app, ["infer", str(model), str(bag), "--topic", "/cam/image/compressed", "--out", str(out)]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    # One error line; before it, where frames were finished, the note that the output bag was
    # closed with them (issue 21: an error after the first frame keeps what was done).
    *notes, error = lines
    assert error.startswith("error: ") and not any(n.startswith("error") for n in notes), result.output
    assert [n for n in notes if not n.startswith("note: stopped by an error")] == [], result.output
    assert out.exists() == bool(notes), result.output
    return error, out


BAG_CASES = {
    "png-bomb": (_compressed(_png_declaring(65535, 65535)), "over the limit"),
    "truncated-jpeg": (_compressed(_jpeg()[:80], "jpeg"), "truncated"),
    "garbage": (_compressed(b"\x01\x02" * 30, "jpeg"), "not an image"),
}


@pytest.mark.parametrize("case", sorted(BAG_CASES))
def test_bad_message_in_a_bag_names_topic_index_and_stamp(case, tmp_path):
    bad, expected = BAG_CASES[case]
    line, _ = _infer(tmp_path, _bag(tmp_path / "drive", bad))
    assert "drive.mcap" in line and "/cam/image/compressed" in line and expected in line, line
    assert "message 1, stamp 1700000001.000001003, bag time 2000000000 ns" in line, line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".seg.mcap")]  # no staging left


def test_unexpected_decode_error_is_one_line(tmp_path, monkeypatch):
    """A failure nobody anticipated (here: OpenCV raising inside the decoder) is still one line
    naming where it happened, not a traceback."""

    def explode(msg: Any, topic: str) -> np.ndarray:
        if msg.header.stamp.sec == 1_700_000_002:
            raise cv2.error("OpenCV(5.1.0) color.cpp:182: error: (-215:Assertion failed)\n in cvtColor")
        return np.zeros((32, 64, 3), np.uint8)

    monkeypatch.setattr(bags, "decode_image", explode)
    line, _ = _infer(tmp_path, _bag(tmp_path / "drive", _compressed(_jpeg(32, 64), "jpeg")))
    assert "/cam/image/compressed: cannot be decoded (error: OpenCV(5.1.0) color.cpp:182" in line, line
    assert "message 2, stamp 1700000002.000002003" in line, line

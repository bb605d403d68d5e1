"""Live camera sources: URL / device / pipeline parsing, limits, Ctrl-C stop, to a folder or a bag."""

import io
import os
import signal

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from runtime import Segmenter, read_video
from runtime.io.robotics import infer_robotics
from runtime.io.sources import (
    CameraError,
    ProgressLine,
    camera_frames,
    camera_spec,
    gstreamer_available,
    stop_on_interrupt,
)
from tests.helpers.runtime_models import semantic_model, write_artifact


def _video(path, frames=6, seed=0):
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(frames):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, : int(rng.integers(8, 56))] = (0, 0, 210)
        image[:, :, 0] = np.where(image[:, :, 2] == 0, 210, 0)
        writer.write(image)
    writer.release()
    return path


def test_camera_specs():
    assert camera_spec("0").target == 0 and camera_spec("0").kind == "camera"
    assert camera_spec("/dev/video2").target == 2 and camera_spec("/dev/video2").api == cv2.CAP_V4L2
    assert camera_spec("rtsp://10.0.0.2:8554/cam").kind == "stream"
    assert camera_spec("file:///data/clip%20a.mp4").target == "/data/clip a.mp4"
    assert camera_spec("videotestsrc ! videoconvert ! appsink").kind == "GStreamer pipeline"
    assert camera_spec("clip.mp4") is None and camera_spec("frames/") is None


def test_file_url_through_camera_path_matches_predict(tmp_path):
    video = _video(tmp_path / "clip.avi")
    model = write_artifact(tmp_path, semantic_model(32, 64))
    out = tmp_path / "out"
    args = ["infer", str(model), video.as_uri(), "--out", str(out), "--max-frames", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 frame(s)" in result.output and "FPS" in result.output
    seg = Segmenter.open(model)
    frames = list(read_video(video))[:4]
    for i, frame in enumerate(frames):
        got = cv2.imread(str(out / "labels" / f"clip_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, seg.predict(frame).labels)
    assert not (out / "labels" / "clip_000004.png").exists()


def test_video_to_bag_with_duration(tmp_path):
    pytest.importorskip("rosbags", reason="the 'ros' extra (rosbags) is not installed")
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from runtime.io.ros.messages import decode_image, labels_array

    video = _video(tmp_path / "clip.avi", frames=5)
    model = write_artifact(tmp_path, semantic_model(32, 64))
    out = tmp_path / "live.mcap"
    args = ["infer", str(model), str(video), "--out", str(out), "--duration", "60", "--copy-input"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ts = get_typestore(Stores.ROS2_JAZZY)
    topics: dict[str, list] = {}
    with Reader(out) as reader:
        for conn, t, raw in reader.messages():
            topics.setdefault(conn.topic, []).append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    seg = Segmenter.open(model)
    inputs, labels = topics["/camera/image_raw"], topics["/camera/image_raw/pem/labels"]
    assert len(inputs) == len(labels) == 5
    for (t_in, frame_msg), (t_out, lab), frame in zip(inputs, labels, read_video(video)):
        assert t_in == t_out and lab.header.frame_id == "camera"
        assert lab.header.stamp.sec * 10**9 + lab.header.stamp.nanosec == t_in
        np.testing.assert_array_equal(decode_image(frame_msg), frame)
        np.testing.assert_array_equal(labels_array(lab), seg.predict(frame).labels)


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler during the test, whatever the runner inherited (a job started in
    the background of a non-interactive shell starts with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_cleanly_and_writes_what_was_done(tmp_path, python_ctrl_c):
    video = _video(tmp_path / "clip.avi", frames=8)
    seg = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64)))

    def interrupt_after_two(done, total):
        if done == 2:
            os.kill(os.getpid(), signal.SIGINT)

    summary = infer_robotics(seg, video.as_uri(), tmp_path / "out", progress=interrupt_after_two)
    assert summary.frames == 2
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == [
        "clip_000000.png",
        "clip_000001.png",
    ]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    with stop_on_interrupt() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C interrupts


def test_camera_errors_are_one_line(tmp_path):
    model = str(write_artifact(tmp_path, semantic_model(32, 64)))
    for source, expected in [
        ("/dev/video97", "/dev/video97: cannot open camera"),
        ("file:///nonexistent/clip.mp4", "no such video file"),
    ]:
        result = CliRunner().invoke(app, ["infer", model, source, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("error: ") and expected in result.output
        assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(CameraError, match="--max-frames 0"):
        next(camera_frames(camera_spec("0"), max_frames=0))
    if not gstreamer_available():
        with pytest.raises(CameraError, match="no GStreamer support"):
            next(camera_frames(camera_spec("videotestsrc ! appsink")))
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(
    not gstreamer_available(), reason="this OpenCV build has no GStreamer (getBuildInformation)"
)
def test_gstreamer_videotestsrc(tmp_path):
    model = write_artifact(tmp_path, semantic_model(32, 64))
    pipeline = "videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48 ! videoconvert ! appsink"
    result = CliRunner().invoke(app, ["infer", str(model), pipeline, "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "g" / "labels").iterdir())) == 5


def test_progress_line_reports_fps():
    stream = io.StringIO()
    line = ProgressLine(stream, every=0.0)
    line(3, 10)
    line(4, None)
    text = stream.getvalue().splitlines()
    assert text[0].startswith("3/10 frames") and text[0].endswith("FPS") and text[1].startswith("4/? frames")

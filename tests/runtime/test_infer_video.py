"""``infer VIDEO --save-video``: an annotated video with the input's codec and frame rate, progress
that knows the frame count, and the summary on a line of its own."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from runtime import Segmenter
from runtime.errors import InputError
from runtime.io.batch_infer import infer_path
from tests.helpers.runtime_models import semantic_model, write_artifact


def _video(path, frames=7, fps=12.0, codec="MJPG"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (64, 32))
    assert writer.isOpened()
    for i in range(frames):
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, : 8 + 6 * i] = (0, 0, 220)  # red share grows frame by frame
        writer.write(image)
    writer.release()
    return path


@pytest.fixture
def artifact(tmp_path):
    return write_artifact(tmp_path, semantic_model(32, 64))


def _probe(path):
    capture = cv2.VideoCapture(str(path))
    try:
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4))
        frames = 0
        while capture.read()[0]:
            frames += 1
        return codec, capture.get(cv2.CAP_PROP_FPS), frames
    finally:
        capture.release()


def test_save_video_keeps_codec_and_frame_rate_and_progress_knows_the_total(artifact, tmp_path):
    clip = _video(tmp_path / "clip.avi")
    seen = []
    with Segmenter.open(artifact) as seg:
        summary = infer_path(
            seg,
            clip,
            tmp_path / "out",
            progress=lambda done, total: seen.append((done, total)),
            save_video=True,
        )
    assert seen == [(i, 7) for i in range(1, 8)]  # N/M frames, M from CAP_PROP_FRAME_COUNT
    (video,) = summary.videos
    assert video["output"] == str(tmp_path / "out" / "video" / "clip.avi")
    assert (video["codec"], video["fps"], video["frames"], video["fallback"]) == ("MJPG", 12.0, 7, None)
    assert _probe(video["output"]) == ("MJPG", 12.0, 7)
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["videos"][0]["output"] == "video/clip.avi"
    # written by us, so a second run with --exist-ok may replace it; nothing is left in staging
    with Segmenter.open(artifact) as seg:
        infer_path(seg, clip, tmp_path / "out", save_video=True, exist_ok=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".pem-deploy-outputs.json",  # contract/output.py's record of what pem-deploy wrote here
        "labels",
        "overlay",
        "predictions.json",
        "video",
    ]


def test_a_codec_opencv_cannot_write_falls_back_to_mp4v_and_says_so(artifact, tmp_path, monkeypatch):
    clip = _video(tmp_path / "clip.avi")
    # the input claims a codec no OpenCV build writes
    monkeypatch.setattr("runtime.io.sources.video_format", lambda path: ("ZZZZ", 12.0))
    with Segmenter.open(artifact) as seg:
        summary = infer_path(seg, clip, tmp_path / "out", save_video=True)
    (video,) = summary.videos
    assert video["output"].endswith("video/clip.avi.mp4") and video["codec"] == "mp4v"
    assert "cannot write the input's codec 'ZZZZ'" in video["fallback"]
    assert _probe(video["output"])[2] == 7


def test_save_video_is_for_videos(artifact, tmp_path):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 64, 3), np.uint8))
    with Segmenter.open(artifact) as seg, pytest.raises(InputError, match="--save-video is for a video"):
        infer_path(seg, image, tmp_path / "out", save_video=True)
    assert not (tmp_path / "out").exists()


def test_cli_summary_has_its_own_line_after_the_progress_line(artifact, tmp_path, monkeypatch):
    clip = _video(tmp_path / "clip.avi")
    monkeypatch.setattr("contract.progress.stream_is_tty", lambda stream: True)  # as on a terminal
    result = CliRunner().invoke(
        app, ["infer", str(artifact), str(clip), "--out", str(tmp_path / "o"), "--save-video"]
    )
    assert result.exit_code == 0, result.output
    assert "\r7/7 frames" in result.output
    lines = result.output.split("\n")
    assert any(line.startswith("7 frame(s) -> ") for line in lines)  # not glued to "\r7/7 frames ..."
    assert any(line.startswith("video ") and "(MJPG, 12 FPS, 7 frames)" in line for line in lines)

"""Live camera sources through OpenCV ``VideoCapture``, with a frame/time limit and a clean Ctrl-C stop.

A source is a camera index (``0``), a V4L2 device (``/dev/video0``), a URL (``rtsp://``,
``http(s)://``, ``udp://``, ``file:///clip.mp4``), a GStreamer pipeline (any string with ``!``,
e.g. ``nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink`` on a
Jetson CSI camera) or, with ``--max-frames`` / ``--duration``, a video file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from contract.progress import StatusLine
from runtime.errors import InputError

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "file")


#: The largest camera index accepted (Linux numbers V4L2 devices below 1024 by default).
MAX_CAMERA_INDEX = 1023


class CameraError(InputError):
    """A camera, stream or pipeline cannot be opened or read."""


@dataclass(frozen=True)
class CameraSpec:
    """What to hand ``cv2.VideoCapture``: ``target`` (index or string) and the capture API."""

    text: str
    target: int | str
    api: int = cv2.CAP_ANY
    live: bool = True

    @property
    def kind(self) -> str:
        if self.api == cv2.CAP_GSTREAMER:
            return "GStreamer pipeline"
        if isinstance(self.target, int) or self.text.startswith("/dev/"):
            return "camera"
        return "stream" if self.live else "video"


def gstreamer_available() -> bool:
    """Whether this OpenCV build has the GStreamer backend."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1].upper()
    return False


def camera_spec(source: str) -> CameraSpec | None:
    """``source`` as a camera-like spec, or ``None`` if it is a plain file / folder path."""
    text = source.strip()
    if text.isdigit():  # str.isdigit is also true for other scripts' digits and for superscripts
        if not text.isascii():
            raise CameraError(f"{source}: a camera index is written with the digits 0-9")
        return CameraSpec(source, _camera_index(source, int(text)))
    if "!" in text:
        return CameraSpec(source, text, cv2.CAP_GSTREAMER)
    if text.startswith("/dev/video") or text.startswith("/dev/v4l/"):
        # By index: some OpenCV builds' V4L2 backend cannot open a device by name.
        match = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(text))
        index = _camera_index(source, int(match.group(1))) if match else text
        return CameraSpec(source, index, getattr(cv2, "CAP_V4L2", cv2.CAP_ANY))
    scheme = urlparse(text).scheme.lower()
    if scheme == "file":
        parsed = urlparse(text)
        return CameraSpec(source, unquote(parsed.netloc + parsed.path), cv2.CAP_ANY, live=False)
    if scheme in URL_SCHEMES:
        return CameraSpec(source, text)
    return None


def _camera_index(source: str, index: int) -> int:
    """``index`` if OpenCV can take it: larger numbers overflow its C ``int`` (a crash, not an error)."""
    if index > MAX_CAMERA_INDEX:
        raise CameraError(f"{source}: camera index {index} is out of range (0 to {MAX_CAMERA_INDEX})")
    return index


def video_spec(path: str | os.PathLike[str]) -> CameraSpec:
    """A video file read through the camera path (for ``--max-frames`` / ``--duration``)."""
    return CameraSpec(str(path), str(path), cv2.CAP_ANY, live=False)


def quiet_video_logs() -> None:
    """Silence OpenCV's and FFmpeg's own log lines (``[tcp @ 0x...] Connection refused``,
    ``[ WARN:0@0.1] global cap_ffmpeg_impl.hpp``), so a failed stream is our one line only.
    For the CLI; a user's explicit ``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_LOG_LEVEL`` is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at the first capture
    if "OPENCV_LOG_LEVEL" not in os.environ:
        with contextlib.suppress(AttributeError):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def open_capture(spec: CameraSpec, timeout: float | None = None) -> cv2.VideoCapture:
    """Open ``spec`` or raise :class:`CameraError` naming it.

    ``timeout`` (seconds) bounds opening a stream and waiting for each of its frames (FFmpeg's
    open / read timeouts; URLs only, the other backends do not take them)."""
    if spec.api == cv2.CAP_GSTREAMER and not gstreamer_available():
        raise CameraError(
            f"{spec.text}: this OpenCV build has no GStreamer support (cv2.getBuildInformation()); "
            "use the system OpenCV on a Jetson or a camera index / device path"
        )
    if not spec.live and not Path(str(spec.target)).is_file():
        raise CameraError(f"{spec.text}: no such video file")
    if timeout is not None and timeout <= 0:
        raise CameraError(f"--timeout {timeout}: must be > 0 seconds")
    is_url = isinstance(spec.target, str) and urlparse(spec.target).scheme.lower() in URL_SCHEMES
    if timeout is not None and is_url and hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        ms = int(timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        capture = cv2.VideoCapture(spec.target, spec.api, params)
    else:
        capture = cv2.VideoCapture(spec.target, spec.api)
    if not capture.isOpened():
        capture.release()
        waited = f" within {timeout:g} s" if timeout is not None and is_url else ""
        raise CameraError(
            f"{spec.text}: cannot open {spec.kind}{waited} (not connected, busy, or unsupported)"
        )
    return capture


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """Within the block, the first Ctrl-C (SIGINT) sets the yielded event instead of raising, so a
    capture loop can stop and the results so far can still be written; a second one interrupts.
    Outside the main thread (where signals cannot be handled) the event is only set by the caller."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def camera_frames(
    spec: CameraSpec,
    max_frames: int | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    timeout: float | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(stamp ns, BGR frame)`` from ``spec`` until the stream ends, ``max_frames`` frames,
    ``duration`` seconds, or ``stop`` is set. Raises :class:`CameraError` if no frame arrives.

    Stamps: a video file's frames carry the container's timestamps (presentation time from the
    start of the video); live sources the wall-clock time at which the frame was grabbed (before
    it is decoded). ``timeout``: see :func:`open_capture`."""
    if max_frames is not None and max_frames < 1:
        raise CameraError(f"--max-frames {max_frames}: must be >= 1")
    if duration is not None and duration <= 0:
        raise CameraError(f"--duration {duration}: must be > 0 seconds")
    capture = open_capture(spec, timeout)
    try:
        count, start = 0, time.monotonic()
        while not (stop is not None and stop.is_set()):
            if max_frames is not None and count >= max_frames:
                break
            if duration is not None and time.monotonic() - start >= duration:
                break
            grabbed = capture.grab()
            stamp = time.time_ns()
            ok, frame = capture.retrieve() if grabbed else (False, None)
            if not ok or frame is None:
                break
            if not spec.live:
                stamp = round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1_000_000)
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            elif frame.shape[2] == 4:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
            count += 1
            yield stamp, frame
        if count == 0 and not (stop is not None and stop.is_set()):
            waited = f" within {timeout:g} s" if timeout is not None else ""
            raise CameraError(f"{spec.text}: {spec.kind} gave no frames{waited}")
    finally:
        capture.release()


def frame_total(spec: CameraSpec, max_frames: int | None) -> int | None:
    """Frames to expect: ``max_frames``, or a video file's frame count, else unknown (``None``)."""
    if spec.live:
        return max_frames
    capture = cv2.VideoCapture(spec.target, spec.api)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    if count <= 0:
        return max_frames
    return min(count, max_frames) if max_frames else count


class ProgressLine(StatusLine):
    """``done/total frames, FPS`` on one refreshed line (a TTY), or a line every ``every`` seconds
    (:class:`contract.progress.StatusLine`, the mechanism every long step shares)."""

    def __init__(self, stream: TextIO | None = None, every: float | None = None):
        super().__init__(stream, every)
        self.done = 0

    def fps(self) -> float:
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 else 0.0

    def text(self, done: int, total: int | None) -> str:
        return f"{done}/{total if total is not None else '?'} frames  {self.fps():.1f} FPS"

    def __call__(self, done: int, total: int | None) -> None:
        self.done = done
        self.update(self.text(done, total))


def video_frame_count(path: str | os.PathLike[str]) -> int | None:
    """A video file's frame count as OpenCV reports it (``CAP_PROP_FRAME_COUNT``), ``None`` when
    unknown (some containers and streams do not say)."""
    return frame_total(video_spec(path), None)


def video_format(path: str | os.PathLike[str]) -> tuple[str, float]:
    """A video file's codec (FourCC text, ``""`` when unknown) and frame rate (0 when unknown)."""
    capture = cv2.VideoCapture(str(path))
    try:
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)) if capture.isOpened() else 0
        fps = float(capture.get(cv2.CAP_PROP_FPS)) if capture.isOpened() else 0.0
    finally:
        capture.release()
    codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\0 ") if fourcc else ""
    return codec, (fps if 0 < fps < 1000 else 0.0)


@dataclass
class VideoOut:
    """An annotated video being written: the path, codec and frame rate actually used, and why
    they differ from the input's when they do (``fallback``)."""

    path: Path
    codec: str
    fps: float
    fallback: str | None = None
    frames: int = 0


_FALLBACK_CODEC = "mp4v"  # MPEG-4 Part 2 in .mp4: in every OpenCV build's FFmpeg backend
_DEFAULT_FPS = 30.0


class VideoWriter:
    """Writes frames to ``path`` with the input video's codec (``CAP_PROP_FOURCC``) and frame rate
    (``CAP_PROP_FPS``) where this OpenCV can encode them; otherwise ``mp4v`` in an ``.mp4``
    (``path`` + ``.mp4``) and, without a known frame rate, 30 FPS. :attr:`out` says which.

    Opened at the first frame (its size is the video's). Use :meth:`close` when done.
    """

    def __init__(self, path: str | os.PathLike[str], source: str | os.PathLike[str]):
        self.path = Path(path)
        self.codec, self.fps = video_format(source)
        self.out: VideoOut | None = None
        self._writer: cv2.VideoWriter | None = None

    def _open(self, size: tuple[int, int]) -> None:
        notes = []
        fps = self.fps or _DEFAULT_FPS
        if not self.fps:
            notes.append(f"the input has no frame rate, wrote {_DEFAULT_FPS:g} FPS")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tries = []
        if len(self.codec) == 4 and self.codec.isprintable():
            tries.append((self.codec, self.path))
        tries.append(
            (_FALLBACK_CODEC, self.path if self.path.suffix.lower() == ".mp4" else Path(f"{self.path}.mp4"))
        )
        for codec, path in tries:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
            if writer.isOpened():
                if codec != self.codec:
                    notes.insert(
                        0,
                        f"OpenCV cannot write the input's codec {self.codec or 'unknown'!r} here, "
                        f"wrote {codec}",
                    )
                self._writer = writer
                self.out = VideoOut(path, codec, fps, "; ".join(notes) or None)
                return
            writer.release()
            with contextlib.suppress(OSError):
                path.unlink()
        raise InputError(
            f"{self.path}: OpenCV cannot write a video here (tried {', '.join(c for c, _ in tries)})"
        )

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._open((frame.shape[1], frame.shape[0]))
        assert self._writer is not None and self.out is not None
        self._writer.write(frame)
        self.out.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

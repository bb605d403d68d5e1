"""``infer`` for robotics sources: ROS 2 bags and live cameras, to a bag file or an image folder.

:func:`is_robotics_job` says whether a ``pem-deploy infer`` call needs this path (a bag or camera
source, ``--topic``, ``--max-frames`` / ``--duration``, or a ``.mcap`` / ``.db3`` output);
:func:`infer_robotics` runs it. Image files, folders and plain videos stay with
:func:`runtime.io.batch_infer.infer_path`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.core.segmenter import Segmenter
from runtime.errors import InputError
from runtime.io.batch_infer import InferSummary, infer_path
from runtime.io.images import VIDEO_SUFFIXES
from runtime.io.ros.bags import (
    BagFrame,
    BagPassthrough,
    BagReader,
    bag_frame_names,
    camera_bag_frames,
    is_bag,
    is_bag_output,
    write_bag,
)
from runtime.io.sources import camera_frames, camera_spec, frame_total, stop_on_interrupt, video_spec

Progress = Callable[[int, "int | None"], None]


def is_robotics_job(
    source: str,
    out: str | os.PathLike[str],
    topics: Sequence[str] = (),
    max_frames: int | None = None,
    duration: float | None = None,
    timeout: float | None = None,
) -> bool:
    """Whether this ``infer`` call is for :func:`infer_robotics`."""
    return bool(
        topics
        or timeout is not None
        or max_frames is not None
        or duration is not None
        or is_bag_output(out)
        or is_bag(source)
        or camera_spec(source) is not None
    )


def infer_robotics(
    segmenter: Segmenter,
    source: str,
    out: str | os.PathLike[str],
    topics: Sequence[str] = (),
    max_frames: int | None = None,
    duration: float | None = None,
    exist_ok: bool = False,
    overlays: bool = True,
    alpha: float = 0.5,
    copy_input: bool = False,
    progress: Progress | None = None,
    overwrite: bool = False,
    compression: str = "zstd",
    timeout: float | None = None,
    on_note: Callable[[str], None] | None = None,
) -> InferSummary:
    """Segment a bag (``topics`` required) or a camera / stream / video into ``out``.

    ``out`` ending in ``.mcap`` / ``.db3`` gets a bag (:func:`runtime.io.ros.bags.write_bag`),
    anything else a folder as ``infer`` writes. A camera stops at ``max_frames``, after
    ``duration`` seconds, at the end of the stream or on the first Ctrl-C, and what was
    segmented until then is still written. ``exist_ok`` (a folder holding other files) and
    ``overwrite`` (replace files pem-deploy did not write, or an existing bag file) follow
    :mod:`contract.output`; the source is never written, whatever the flags.

    Bags out: MCAP chunks compressed with ``compression`` (``zstd`` / ``lz4`` / ``none``);
    ``copy_input`` copies the source images and their CameraInfo; a Ctrl-C or an error after the
    first frame still leaves a valid bag with the frames done (``on_note`` says so). Timing: a
    bag's frames keep their header stamp and frame id (in the output bag, or in the file names of
    a folder, :func:`runtime.io.ros.bags.bag_frame_names`); a video's frames are stamped with the
    container's timestamps, a camera's with the capture time. ``timeout``: seconds to wait for a
    stream to open and for each frame (:func:`runtime.io.sources.camera_frames`).
    """
    to_bag = is_bag_output(out)
    # What this run reads from disk (never written, whatever the flags): the bag or video file.
    given = camera_spec(source)
    local = [source, given.target] if given is not None and not given.live else [source]
    read = [p for p in local if isinstance(p, str) and os.path.exists(p)]
    # Both sources end the same way: the frames go to a bag file or to an image folder.
    sink = _Sink(segmenter, source, out, read, topics, overlays, alpha, copy_input, progress)
    sink.overwrite, sink.exist_ok, sink.compression, sink.on_note = overwrite, exist_ok, compression, on_note
    if is_bag(source):
        if not topics:
            raise InputError(f"{source}: is a ROS 2 bag; give the image topic(s) to segment with --topic")
        if duration is not None:
            raise InputError("--duration is for live cameras; use --max-frames with a bag")
        with BagReader(source, topics, max_frames, camera_info=copy_input and to_bag) as reader:
            if reader.note and on_note:
                on_note(reader.note)
            if to_bag:
                with stop_on_interrupt() as interrupted:  # stop between frames: whole frames only
                    return sink.to_bag_file(reader, reader.total, interrupted)
            return sink.to_folder(bag_frame_names(reader), reader.total)
    if topics:
        raise InputError(
            f"{source}: --topic is only for ROS 2 bags (.mcap, .db3 or a folder with metadata.yaml)"
        )
    spec = camera_spec(source)
    if spec is None:
        path = Path(source)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(
                f"{source}: --max-frames, --duration and bag output (.mcap/.db3) need a bag, a camera, "
                "a stream or a video"
            )
        spec = video_spec(path)
    total = frame_total(spec, max_frames)
    stem = Path(str(spec.target)).stem if isinstance(spec.target, str) and not spec.live else "camera"
    with stop_on_interrupt() as stop:
        frames = camera_frames(spec, max_frames, duration, stop, timeout=timeout)
        if to_bag:
            return sink.to_bag_file(camera_bag_frames(frames), total)
        return sink.to_folder(((f"{stem}_{i:06d}", image) for i, (_, image) in enumerate(frames)), total)


@dataclass
class _Sink:
    """Where :func:`infer_robotics` writes the frames of either source: a bag file or a folder."""

    segmenter: Segmenter
    source: str
    out: str | os.PathLike[str]
    read: list[str]
    topics: Sequence[str]
    overlays: bool
    alpha: float
    copy_input: bool
    progress: Progress | None
    overwrite: bool = False
    exist_ok: bool = False
    compression: str = "zstd"
    on_note: Callable[[str], None] | None = None

    def to_bag_file(
        self,
        frames: Iterable[BagFrame | BagPassthrough],
        total: int | None,
        stop: threading.Event | None = None,
    ) -> InferSummary:
        return write_bag(
            self.segmenter,
            frames,
            self.out,
            self.overwrite,
            self.overlays,
            self.alpha,
            self.copy_input,
            progress=self.progress,
            total=total,
            inputs=self.read,
            compression=self.compression,
            input_topics=self.topics,
            on_note=self.on_note,
            stop=stop,
        )

    def to_folder(self, frames: Iterable[tuple[str, np.ndarray]], total: int | None) -> InferSummary:
        return infer_path(
            self.segmenter,
            self.source,
            self.out,
            self.overlays,
            self.alpha,
            self.progress,
            frames=frames,
            total=total,
            exist_ok=self.exist_ok,
            overwrite=self.overwrite,
            inputs=self.read,
        )

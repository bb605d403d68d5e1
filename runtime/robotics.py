"""``infer`` for robotics sources: ROS 2 bags and live cameras, to a bag file or an image folder.

:func:`is_robotics_job` says whether a ``pem-deploy infer`` call needs this path (a bag or camera
source, ``--topic``, ``--max-frames`` / ``--duration``, or a ``.mcap`` / ``.db3`` output);
:func:`infer_robotics` runs it. Image files, folders and plain videos stay with
:func:`runtime.batch_infer.infer_path`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from runtime.batch_infer import InferSummary, infer_path
from runtime.errors import InputError
from runtime.images import VIDEO_SUFFIXES
from runtime.ros.bags import (
    BagFrame,
    BagReader,
    bag_frame_names,
    camera_bag_frames,
    is_bag,
    is_bag_output,
    write_bag,
)
from runtime.segmenter import Segmenter
from runtime.sources import camera_frames, camera_spec, frame_total, stop_on_interrupt, video_spec

Progress = Callable[[int, "int | None"], None]


def is_robotics_job(
    source: str,
    out: str | os.PathLike[str],
    topics: Sequence[str] = (),
    max_frames: int | None = None,
    duration: float | None = None,
) -> bool:
    """Whether this ``infer`` call is for :func:`infer_robotics`."""
    return bool(
        topics
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
) -> InferSummary:
    """Segment a bag (``topics`` required) or a camera / stream / video into ``out``.

    ``out`` ending in ``.mcap`` / ``.db3`` gets a bag (:func:`runtime.ros.bags.write_bag`),
    anything else a folder as ``infer`` writes. A camera stops at ``max_frames``, after
    ``duration`` seconds, at the end of the stream or on the first Ctrl-C, and what was
    segmented until then is still written. ``exist_ok`` (a folder holding other files) and
    ``overwrite`` (replace files pem-deploy did not write, or an existing bag file) follow
    :mod:`contract.output`; the source is never written, whatever the flags.
    """
    to_bag = is_bag_output(out)
    # What this run reads from disk (never written, whatever the flags): the bag or video file.
    given = camera_spec(source)
    local = [source, given.target] if given is not None and not given.live else [source]
    read = [p for p in local if isinstance(p, str) and os.path.exists(p)]

    # Both sources end the same way: the frames go to a bag file or to an image folder.
    def to_bag_file(frames: Iterable[BagFrame], total: int | None) -> InferSummary:
        return write_bag(
            segmenter,
            frames,
            out,
            overwrite,
            overlays,
            alpha,
            copy_input,
            progress=progress,
            total=total,
            inputs=read,
        )

    def to_folder(frames: Iterable[tuple[str, np.ndarray]], total: int | None) -> InferSummary:
        return infer_path(
            segmenter,
            source,
            out,
            overlays,
            alpha,
            progress,
            frames=frames,
            total=total,
            exist_ok=exist_ok,
            overwrite=overwrite,
            inputs=read,
        )

    if is_bag(source):
        if not topics:
            raise InputError(f"{source}: is a ROS 2 bag; give the image topic(s) to segment with --topic")
        if duration is not None:
            raise InputError("--duration is for live cameras; use --max-frames with a bag")
        with BagReader(source, topics, max_frames) as reader:
            if to_bag:
                return to_bag_file(reader, reader.total)
            return to_folder(bag_frame_names(reader), reader.total)
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
        frames = camera_frames(spec, max_frames, duration, stop)
        if to_bag:
            return to_bag_file(camera_bag_frames(frames), total)
        return to_folder(((f"{stem}_{i:06d}", image) for i, (_, image) in enumerate(frames)), total)

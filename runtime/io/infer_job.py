"""``pem-deploy infer`` as one call: which of the three ways segments the inputs, and its checks.

* ``--ray``: many inputs on a Ray cluster (:func:`runtime.io.fleet.segment`);
* a bag, a camera, a stream, a bag output or a frame / time limit: :func:`runtime.io.robotics.infer_robotics`;
* otherwise an image, a folder of images or a video file: :func:`runtime.io.batch_infer.infer_path`.

:func:`run_infer` picks the way, refuses options that do not fit it (one line each,
:class:`~contract.errors.UsageError`) and returns what that way reports. Torch-free.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from contract.errors import UsageError
from runtime.core.segmenter import Segmenter
from runtime.io.batch_infer import InferSummary, infer_path
from runtime.io.robotics import infer_robotics, is_robotics_job
from runtime.io.sources import ProgressLine, quiet_video_logs

if TYPE_CHECKING:  # runtime.io.fleet is imported by --ray only
    from runtime.io.fleet import FleetSummary

Route = Literal["files", "robotics", "ray"]
Say = Callable[[str], None]


@dataclass(frozen=True)
class SegmenterSettings:
    """How the model runs (:meth:`runtime.Segmenter.open`'s options)."""

    providers: list[str] | None = None
    threads: int | None = None  # None: every core
    resize: str = "stretch"
    cuda_graph: bool = False
    contexts: int | None = None
    backend: str | None = None
    input_size: tuple[int, int] | None = None

    def open(self, artifact: str | os.PathLike[str], on_note: Say) -> Segmenter:
        """The opened model; its notes (e.g. a CUDA graph on a CPU provider) go to ``on_note``."""
        segmenter = Segmenter.open(
            artifact,
            providers=self.providers,
            threads=self.threads or 0,
            resize=self.resize,  # type: ignore[arg-type]
            cuda_graph=self.cuda_graph,
            contexts=self.contexts,
            backend=self.backend,
            input_size=self.input_size,
        )
        for note in segmenter.notes:
            on_note(note)
        return segmenter


@dataclass(frozen=True)
class WriteSettings:
    """What is written and how it meets existing files (every way)."""

    overlays: bool = True
    alpha: float = 0.5
    exist_ok: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class StreamSettings:
    """Bags, cameras and streams; ``strict`` / ``save_video`` are for image folders and video files."""

    topics: tuple[str, ...] = ()
    max_frames: int | None = None
    duration: float | None = None
    timeout: float | None = None
    compression: str = "zstd"
    copy_input: bool = False
    strict: bool = False
    save_video: bool = False


@dataclass(frozen=True)
class RaySettings:
    """``--ray``: ``address`` ``None`` segments here; ``local`` starts a local cluster."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    batch: int = 8
    images_per_shard: int = 256
    keep_uncertain: float | None = None

    def flags_given(self) -> list[str]:
        """The options set away from their defaults, which only ``--ray`` uses."""
        return [
            "--" + f.name.replace("_", "-")
            for f in dataclasses.fields(self)
            if f.name != "address" and getattr(self, f.name) != f.default
        ]


@dataclass
class InferOutcome:
    """What :func:`run_infer` did: the way it took and that way's summary."""

    route: Route
    summary: InferSummary | FleetSummary
    fps: float = 0.0  # bags, cameras, streams: frames per second over the whole run

    @property
    def failed(self) -> bool:
        """Whether some inputs failed (exit 1): files of a folder skipped, or with ``--ray`` shards
        failed or frames skipped. A bag, camera or stream stops at its first error instead."""
        if self.route == "robotics":
            return False
        summary = self.summary
        return bool(summary.failed or getattr(summary, "skipped_frames", 0))


@dataclass(frozen=True)
class Reporter:
    """Where :func:`run_infer` says things: notes and skipped files (one line each)."""

    on_note: Say = field(default=lambda text: None)
    on_skip: Say = field(default=lambda text: None)


def run_infer(
    artifact: str,
    sources: Sequence[str],
    out: str,
    *,
    model: SegmenterSettings | None = None,
    write: WriteSettings | None = None,
    stream: StreamSettings | None = None,
    ray: RaySettings | None = None,
    report: Reporter | None = None,
) -> InferOutcome:
    """Segment ``sources`` into ``out`` the way they need (module docstring).

    Raises :class:`UsageError` for options that do not fit the way (``--workers`` without
    ``--ray``, several inputs without it, ``--save-video`` with a stream), and what the chosen
    way raises for its inputs and outputs.
    """
    model, write, stream = model or SegmenterSettings(), write or WriteSettings(), stream or StreamSettings()
    ray, report = ray or RaySettings(), report or Reporter()
    if ray.address is not None:
        return InferOutcome("ray", _on_ray(artifact, sources, out, model, write, stream, ray))
    ray_only = ray.flags_given()
    if ray_only:
        raise UsageError(f"{', '.join(ray_only)}: only with --ray")
    if len(sources) != 1:
        raise UsageError(f"{len(sources)} inputs given; one at a time, or several with --ray")
    quiet_video_logs()  # our one line, not OpenCV's / FFmpeg's
    return _segment_here(artifact, sources[0], out, model, write, stream, report)


def _segment_here(
    artifact: str,
    source: str,
    out: str,
    model: SegmenterSettings,
    write: WriteSettings,
    stream: StreamSettings,
    report: Reporter,
) -> InferOutcome:
    """One input in this process: a bag, a camera or a stream (into a folder or a bag), else an
    image, a folder of images or a video file (into a folder)."""
    robotics = is_robotics_job(source, out, stream.topics, stream.max_frames, stream.duration, stream.timeout)
    if robotics and stream.save_video:
        raise UsageError(
            "--save-video is for a whole video file (not with --topic, --max-frames or --duration)"
        )
    segmenter = model.open(artifact, report.on_note)
    line = ProgressLine()
    with segmenter:
        try:
            if robotics:
                summary = infer_robotics(
                    segmenter, source, out, stream.topics, stream.max_frames, stream.duration,
                    exist_ok=write.exist_ok, overwrite=write.overwrite, overlays=write.overlays,
                    alpha=write.alpha, copy_input=stream.copy_input, progress=line,
                    compression=stream.compression, timeout=stream.timeout, on_note=report.on_note,
                )  # fmt: skip
            else:
                summary = infer_path(
                    segmenter, source, out, overlays=write.overlays, alpha=write.alpha, progress=line,
                    exist_ok=write.exist_ok, overwrite=write.overwrite, strict=stream.strict,
                    on_skip=report.on_skip, on_note=report.on_note, save_video=stream.save_video,
                )  # fmt: skip
        finally:
            line.finish()  # the summary gets a line of its own
    return InferOutcome("robotics" if robotics else "files", summary, fps=line.fps())


def _on_ray(
    artifact: str,
    sources: Sequence[str],
    out: str,
    model: SegmenterSettings,
    write: WriteSettings,
    stream: StreamSettings,
    ray: RaySettings,
) -> FleetSummary:
    """``--ray``: :func:`runtime.io.fleet.segment`, its progress on a refreshed line."""
    from runtime.io.fleet import ProgressPrinter, looks_like_address, segment

    address = ray.address or "local"
    if not looks_like_address(address):
        raise UsageError(
            f"--ray {address}: not a Ray address (auto, ray://host:port, host:port); "
            "put --ray after the inputs"
        )
    printer = ProgressPrinter()
    summary = segment(
        artifact, sources, out, topics=stream.topics, address=None if address == "local" else address,
        workers=ray.workers, gpus_per_worker=ray.gpus_per_worker, batch=ray.batch,
        images_per_shard=ray.images_per_shard, overlays=write.overlays, alpha=write.alpha,
        resize=model.resize, providers=model.providers, threads=model.threads, backend=model.backend,
        keep_uncertain=ray.keep_uncertain, progress=printer.show,
    )  # fmt: skip
    printer.finish()
    return summary

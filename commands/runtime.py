"""Runtime commands: ``infer``, ``ros2``, ``bench`` (parse, delegate to ``runtime``, print)."""

# ruff: noqa: UP045  (typer reads the option groups' annotations at run time: Optional for Python 3.10)

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import typer
from typer.core import TyperCommand

from commands import groups
from commands import options as opt
from contract.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from runtime.io.infer_job import (
        InferOutcome,
        RaySettings,
        SegmenterSettings,
        StreamSettings,
        WriteSettings,
    )
    from workflows.bench import BenchSettings, ReportTarget


RESIZE_MODES = ("stretch", "letterbox")  # runtime.core.preprocess.ResizeMode
RESIZE_MESSAGE = "{flag} must be 'stretch' or 'letterbox', got {value!r}"
COMPRESSIONS = ("zstd", "lz4", "none")  # MCAP chunk compression (runtime.io.ros.bags.write_bag)
COMPRESSION_MESSAGE = "{flag} must be zstd, lz4 or none, got {value!r}"


class InferCommand(TyperCommand):
    """``infer``'s parser: ``--ray`` may stand alone (a local cluster) or take an ADDRESS; Typer has
    no optional-value options, so a bare ``--ray`` (last, or before another option) becomes
    ``--ray local``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        args = list(args)
        for i in reversed(range(len(args))):
            if args[i] == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args.insert(i + 1, "local")
        return super().parse_args(ctx, args)


@dataclass(frozen=True)
class InferModelFlags:
    """How ``infer`` runs the model (``runtime.io.infer_job.SegmenterSettings``)."""

    resize: str = groups.declared(
        opt.choice_option(
            "stretch", "--resize", "stretch | letterbox (keep aspect ratio).", RESIZE_MODES, RESIZE_MESSAGE
        )
    )
    providers: opt.Providers = None
    threads: opt.ThreadsAllCores = None  # type: ignore[assignment]
    cuda_graph: opt.CudaGraph = False
    contexts: Optional[int] = groups.declared(
        opt.int_option(None, "--contexts", "TensorRT execution contexts (default: as built).", 1)
    )
    backend: Optional[str] = groups.option(
        None,
        "--backend",
        help="onnxruntime | openvino (a --deform-impl decomposed ONNX) | tensorrt (default: by file type).",
    )
    imgsz: opt.InputSize = None

    def settings(self) -> SegmenterSettings:
        """The API's settings (providers split, ``--imgsz`` parsed)."""
        from runtime.io.infer_job import SegmenterSettings

        size = opt.parse_hw("--imgsz", self.imgsz) if self.imgsz else None
        providers = opt.provider_list(self.providers)
        return SegmenterSettings(
            providers, self.threads, self.resize, self.cuda_graph, self.contexts, self.backend, size
        )


@dataclass(frozen=True)
class InferWriteFlags:
    """What ``infer`` writes and how it meets existing files (``runtime.io.infer_job.WriteSettings``)."""

    overlays: bool = groups.option(True, "--overlay/--no-overlay", help="Write overlay JPEGs.")
    alpha: opt.Alpha = 0.5
    exist_ok: bool = groups.declared(
        opt.exist_ok_option(
            "Allow an --out folder holding other files: add our labels/, panoptic/, overlay/, "
            "predictions.json beside them (only files pem-deploy wrote are replaced).",
        )
    )
    overwrite: bool = groups.declared(
        opt.overwrite_option(
            "Replace an existing output bag file, or files at our output names that pem-deploy "
            "did not write.",
        )
    )

    def settings(self) -> WriteSettings:
        """The API's settings."""
        from runtime.io.infer_job import WriteSettings

        return WriteSettings(self.overlays, self.alpha, self.exist_ok, self.overwrite)


@dataclass(frozen=True)
class InferStreamFlags:
    """Bags, cameras and streams, image folders and videos (``runtime.io.infer_job.StreamSettings``)."""

    topic: Optional[list[str]] = groups.option(  # noqa: RUF009  (a dataclasses.field, default None)
        None, "--topic", help="Bag image topic(s) to segment (repeatable)."
    )
    max_frames: Optional[int] = groups.declared(
        opt.int_option(None, "--max-frames", "Stop after this many frames (bags, cameras).", 1)
    )
    duration: Optional[float] = groups.declared(
        opt.float_option(None, "--duration", "Stop a live camera after this many seconds.", opt.POSITIVE)
    )
    timeout: Optional[float] = groups.declared(
        opt.float_option(
            None, "--timeout", "Seconds to wait for a stream to open and for each frame.", opt.POSITIVE
        )
    )
    compression: str = groups.declared(
        opt.choice_option(
            "zstd",
            "--compression",
            "Output MCAP chunk compression: zstd | lz4 | none.",
            COMPRESSIONS,
            COMPRESSION_MESSAGE,
        )
    )
    copy_input: bool = groups.option(
        False, "--copy-input", help="Also copy the input images (and their CameraInfo) to the bag."
    )
    strict: bool = groups.option(
        False, "--strict", help="Stop at the first unreadable file of a folder (default: skip it)."
    )
    save_video: bool = groups.option(
        False,
        "--save-video",
        help="Video input: also write video/NAME, the overlays with the input's codec and frame rate "
        "(mp4v .mp4 where OpenCV cannot write that codec).",
    )

    def settings(self) -> StreamSettings:
        """The API's settings (the topics as a tuple)."""
        from runtime.io.infer_job import StreamSettings

        return StreamSettings(
            tuple(self.topic or ()), self.max_frames, self.duration, self.timeout, self.compression,
            self.copy_input, self.strict, self.save_video,
        )  # fmt: skip


@dataclass(frozen=True)
class InferRayFlags:
    """``--ray`` and the options only it uses (``runtime.io.infer_job.RaySettings``)."""

    ray: Optional[str] = groups.option(
        None,
        "--ray",
        metavar="[ADDRESS]",
        help="Segment the inputs on a Ray cluster (the 'fleet' extra): --ray alone starts a local one; "
        "--ray auto or --ray ray://host:port joins a running one (paths must be visible to every node). "
        "Put it after the inputs.",
    )
    workers: int = groups.declared(
        opt.int_option(1, "--workers", "--ray: model actors (one Segmenter each).", 1)
    )
    gpus_per_worker: float = groups.declared(
        opt.float_option(0.0, "--gpus-per-worker", "--ray: GPUs per actor (0: CPU).", opt.NON_NEGATIVE)
    )
    batch: int = groups.declared(opt.int_option(8, "--batch", "--ray: frames per model call.", 1, 1024))
    images_per_shard: int = groups.declared(
        opt.int_option(
            256, "--images-per-shard", "--ray: images of a folder per shard (the unit of work).", 1
        )
    )
    keep_uncertain: Optional[float] = groups.declared(
        opt.float_option(
            None,
            "--keep-uncertain",
            "--ray: also write the input frames whose confidence margin is in this lowest fraction "
            "(0-1; 'raw' head artifacts) to OUT/uncertain/.",
            opt.SHARE,
        )
    )

    def settings(self) -> RaySettings:
        """The API's settings."""
        from runtime.io.infer_job import RaySettings

        return RaySettings(
            self.ray,
            self.workers,
            self.gpus_per_worker,
            self.batch,
            self.images_per_shard,
            self.keep_uncertain,
        )


@groups.with_groups
def infer_command(
    artifact: str = typer.Argument(
        ..., help="Model artifact: .onnx / .engine (sidecar .json beside it) or its folder."
    ),
    sources: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="An image, a folder of images, a video, a ROS 2 bag (.mcap, .db3 or bag folder; with --topic), "
        "a camera index, /dev/videoN, an rtsp/http/file URL or a GStreamer pipeline. With --ray: any number "
        "of bags, videos, image folders and list files (.txt/.list, one path a line).",
    ),
    *,
    out: str = typer.Option(
        ...,
        "--out",
        help="Output folder (labels/, panoptic/, overlay/, predictions.json), or a bag file (.mcap / .db3).",
    ),
    model: InferModelFlags,
    write: InferWriteFlags,
    stream: InferStreamFlags,
    ray: InferRayFlags,
) -> None:
    """Segment images, a video, a ROS 2 bag or a live camera with an exported model (torch-free runtime).

    Output names keep the input's relative path and suffix (labels/a/x.jpg.png); see README.
    With --ray, many inputs are segmented on a Ray cluster into OUT (resumable; OUT/index.parquet).
    Exit status: 0 all segmented, 1 some files of a folder (or, with --ray, some shards) failed, 2 error.
    """
    from runtime.io.infer_job import Reporter, run_infer

    report = Reporter(on_note=lambda text: _say("note", text), on_skip=lambda text: _say("skipped", text))
    outcome = run_infer(
        artifact, sources, out, model=model.settings(), write=write.settings(), stream=stream.settings(),
        ray=ray.settings(), report=report,
    )  # fmt: skip
    _PRINTERS[outcome.route](outcome)
    if outcome.failed:
        raise typer.Exit(code=1)


def _say(kind: str, text: str) -> None:
    typer.echo(f"{kind}: {text}", err=True)


def _print_files(outcome: InferOutcome) -> None:
    """The summary of an image, a folder or a video: frames, skipped files, timings, videos written."""
    summary = outcome.summary
    t = summary.mean_timings_ms
    skipped = f", {len(summary.failed)} skipped" if summary.failed else ""
    typer.echo(
        f"{summary.frames} frame(s){skipped} -> {summary.out_dir}  "
        f"(mean ms: pre {t['pre']:.1f}, infer {t['infer']:.1f}, post {t['post']:.1f})"
    )
    for video in summary.videos:
        how = f"; {video['fallback']}" if video["fallback"] else ""
        what = f"{video['codec']}, {video['fps']:g} FPS, {video['frames']} frames{how}"
        typer.echo(f"video {video['output']}  ({what})")


def _print_robotics(outcome: InferOutcome) -> None:
    """The summary of a bag, a camera or a stream: frames, FPS, timings."""
    summary = outcome.summary
    t = summary.mean_timings_ms
    typer.echo(
        f"{summary.frames} frame(s) -> {summary.out_dir}  ({outcome.fps:.1f} FPS; mean ms: pre "
        f"{t['pre']:.1f}, infer {t['infer']:.1f}, post {t['post']:.1f})"
    )


def _print_ray(outcome: InferOutcome) -> None:
    """The summary of ``--ray``: the failed shards (stderr), then frames, shards and the index."""
    summary = outcome.summary
    for key, error in summary.failed:
        typer.echo(f"failed: {key}: {error}", err=True)
    resumed = f", {summary.resumed} finished earlier" if summary.resumed else ""
    skipped = f", {summary.skipped_frames} frame(s) skipped" if summary.skipped_frames else ""
    uncertain = f", {summary.uncertain} uncertain frame(s) kept" if summary.uncertain else ""
    typer.echo(
        f"{summary.frames} frame(s) in {summary.shards} shard(s){resumed}, {len(summary.failed)} failed"
        f"{skipped}{uncertain} -> {summary.index}  ({summary.seconds:.1f} s)"
    )


_PRINTERS = {"files": _print_files, "robotics": _print_robotics, "ray": _print_ray}


infer_command.command_class = InferCommand  # type: ignore[attr-defined]  # read by commands.register


def ros2_command(
    artifact: str = typer.Argument(..., help="Model artifact: .onnx / .engine or its folder."),
    input_topic: str = typer.Option(
        "/camera/image_raw", "--input", help="Image topic (a '/compressed' topic is a CompressedImage)."
    ),
    namespace: str = typer.Option("pem", "--namespace", help="Outputs go to <input>/<namespace>/..."),
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Publish the overlay topic."),
    alpha: opt.Alpha = 0.5,
    resize: str = typer.Option("stretch", "--resize", help="stretch | letterbox."),
    lifecycle: bool = typer.Option(
        False, "--lifecycle", help="Run as a managed (lifecycle) node: starts unconfigured."
    ),
    ros_args: list[str] = typer.Argument(
        None, help="Extra ROS arguments after '--' (e.g. --ros-args -p ...)."
    ),
) -> None:
    """ROS 2 node: subscribe to an image topic, publish labels / panoptic / overlay (needs rclpy)."""
    from runtime.io.ros.node import NodeConfig, import_rclpy, run_lifecycle_node, run_node, stop_on_signals

    with stop_on_signals() as stop:  # SIGINT / SIGTERM: a clean exit 0 from here on
        import_rclpy()
        config = NodeConfig(
            artifact, input_topic, namespace=namespace, overlay=overlays, alpha=alpha, resize=resize
        )
        run = run_lifecycle_node if lifecycle else run_node
        run(config, args=["pem-deploy", *(ros_args or [])], log=typer.echo, stop=stop)


@dataclass(frozen=True)
class TimingFlags:
    """How ``bench`` times every model (``workflows.bench.BenchSettings``, with the backends)."""

    device: str = groups.declared(opt.device_option("cpu", "PyTorch device: cpu, cuda, cuda:1 ..."))
    providers: opt.Providers = None
    shape: Optional[str] = groups.option(
        None, "--shape", help="HxW of the frames (default: each model's input size)."
    )
    batch: int = groups.declared(opt.int_option(1, "--batch", "Frames per call.", 1, 1024))
    warmup: int = groups.declared(opt.int_option(3, "--warmup", "Untimed warm-up calls.", 0))
    iterations: int = groups.declared(opt.int_option(20, "--iterations", "Timed calls.", 1, 1_000_000))
    threads: opt.Threads = 1

    def settings(self, backends: list[str] | None, cuda_graph: bool) -> BenchSettings:
        """The API's settings (``backends`` None: by file type; providers split)."""
        from workflows.bench import BenchSettings

        return BenchSettings(
            tuple(backends or [None]), opt.provider_list(self.providers), cuda_graph, self.device,
            self.shape, self.batch, self.warmup, self.iterations, self.threads,
        )  # fmt: skip


@dataclass(frozen=True)
class BenchReportFlags:
    """Where ``bench`` writes its reports (``workflows.bench.ReportTarget``; none without --out)."""

    out: Optional[str] = groups.declared(
        opt.folder_option(None, "--out", "Write bench.json, bench.csv, bench.md (and bench.png) here.")
    )
    plot: bool = groups.option(False, "--plot", help="Also a PNG plot (needs matplotlib).")
    exist_ok: bool = groups.declared(
        opt.exist_ok_option("Allow an --out folder holding other files (ours are added beside them).")
    )
    overwrite: bool = groups.declared(
        opt.overwrite_option("Replace bench.* files in --out that pem-deploy did not write.")
    )

    def target(self) -> ReportTarget | None:
        """The API's report target, or None without --out."""
        from workflows.bench import ReportTarget

        return ReportTarget(self.out, self.plot, self.exist_ok, self.overwrite) if self.out else None


@dataclass(frozen=True)
class BaselineFlags:
    """``bench --baseline``: whole model against whole model (``workflows.bench.bench_baseline``)."""

    baseline: Optional[str] = groups.option(
        None,
        "--baseline",
        help="Whole model against whole model: each --preset vs this baseline (mask2former-r50) and "
        "PEM STDC1, eager and onnxruntime, with the paper's FPS and FLOP ratios.",
    )
    rounds: int = groups.declared(
        opt.int_option(2, "--rounds", "With --baseline: measure everything this many times.", 1, 100)
    )


@groups.with_groups
def bench_command(
    artifacts: list[str] = typer.Argument(
        None, help="ONNX models / engines (or their sidecar or folder) and our .safetensors checkpoints."
    ),
    preset: list[str] = typer.Option(
        None, "--preset", help="Also time this preset in PyTorch (seeded random weights)."
    ),
    *,
    timing: TimingFlags,
    reports: BenchReportFlags,
    cuda_graph: opt.CudaGraph = False,
    backend: list[str] = typer.Option(
        None,
        "--backend",
        help="Run ONNX artifacts with this backend: onnxruntime | openvino (repeatable: side by side); "
        "with --baseline: torch | onnxruntime (default both).",
    ),
    baseline: BaselineFlags,
) -> None:
    """Latency side by side: mean / p50 / p90 / p99, FPS, img/s, peak memory, pre / infer / post ms."""
    from runtime.tools.bench import format_table
    from workflows.bench import bench_models

    settings = timing.settings(backend, cuda_graph)
    if baseline.baseline is not None:
        _bench_baseline(preset, artifacts, baseline, settings, backend, reports.out)
        return
    note = lambda text: typer.echo(f"note: {text}", err=True)  # noqa: E731
    results, written = bench_models(artifacts or [], preset or [], settings, reports.target(), on_note=note)
    typer.echo(format_table(results))
    _print_written(*(written or (None, None)))


def _bench_baseline(
    presets: list[str] | None,
    artifacts: list[str] | None,
    flags: BaselineFlags,
    settings: BenchSettings,
    backends: list[str] | None,
    out: str | None,
) -> None:
    """``bench --baseline``: the presets against the baseline, printed (and written into ``out``)."""
    from workflows.bench import bench_baseline

    if not presets or artifacts:
        raise UsageError("--baseline compares presets: give --preset NAME (and no artifacts)")
    comparisons, paths = bench_baseline(
        presets,
        flags.baseline,
        settings,
        rounds=flags.rounds,
        backends=backends or (),
        out=out,
        log=typer.echo,
    )
    typer.echo("\n".join(result.table() for result in comparisons))
    _print_written(paths, None)


def _print_written(paths: list[Path] | None, note: str | None) -> None:
    """The files a bench wrote (one line), then the note of the reports, if any."""
    if paths:
        typer.echo("wrote " + ", ".join(str(p) for p in paths))
    if note:
        typer.echo(note)

"""Runtime commands: ``infer``, ``ros2``, ``bench`` (parse, delegate to ``runtime``, print)."""

from __future__ import annotations

import typer
from typer.core import TyperCommand

from commands import options as opt
from commands.common import fail as _fail


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


_RAY_OPTION = typer.Option(
    None,
    "--ray",
    metavar="[ADDRESS]",
    help="Segment the inputs on a Ray cluster (the 'fleet' extra): --ray alone starts a local one; "
    "--ray auto or --ray ray://host:port joins a running one (paths must be visible to every node). "
    "Put it after the inputs.",
)


def infer(
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
    out: str = typer.Option(
        ...,
        "--out",
        help="Output folder (labels/, panoptic/, overlay/, predictions.json), or a bag file (.mcap / .db3).",
    ),
    resize: str = typer.Option("stretch", "--resize", help="stretch | letterbox (keep aspect ratio)."),
    providers: opt.Providers = None,
    threads: opt.ThreadsAllCores = None,  # type: ignore[assignment]
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay JPEGs."),
    alpha: opt.Alpha = 0.5,
    topic: list[str] = typer.Option(None, "--topic", help="Bag image topic(s) to segment (repeatable)."),
    max_frames: int = opt.int_option(None, "--max-frames", "Stop after this many frames (bags, cameras).", 1),
    duration: float = opt.float_option(
        None, "--duration", "Stop a live camera after this many seconds.", opt.POSITIVE
    ),
    exist_ok: bool = opt.exist_ok_option(
        "Allow an --out folder holding other files: add our labels/, panoptic/, overlay/, "
        "predictions.json beside them (only files pem-deploy wrote are replaced)."
    ),
    overwrite: bool = opt.overwrite_option(
        "Replace an existing output bag file, or files at our output names that pem-deploy did not write."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first unreadable file of a folder (default: skip it)."
    ),
    copy_input: bool = typer.Option(
        False, "--copy-input", help="Also copy the input images (and their CameraInfo) to the bag."
    ),
    compression: str = typer.Option(
        "zstd", "--compression", help="Output MCAP chunk compression: zstd | lz4 | none."
    ),
    timeout: float = opt.float_option(
        None, "--timeout", "Seconds to wait for a stream to open and for each frame.", opt.POSITIVE
    ),
    cuda_graph: opt.CudaGraph = False,
    contexts: int = opt.int_option(None, "--contexts", "TensorRT execution contexts (default: as built).", 1),
    backend: str = typer.Option(
        None,
        "--backend",
        help="onnxruntime | openvino (a --deform-impl decomposed ONNX) | tensorrt (default: by file type).",
    ),
    ray: str = _RAY_OPTION,
    workers: int = opt.int_option(1, "--workers", "--ray: model actors (one Segmenter each).", 1),
    gpus_per_worker: float = opt.float_option(
        0.0, "--gpus-per-worker", "--ray: GPUs per actor (0: CPU).", opt.NON_NEGATIVE
    ),
    batch: int = opt.int_option(8, "--batch", "--ray: frames per model call.", 1, 1024),
    images_per_shard: int = opt.int_option(
        256, "--images-per-shard", "--ray: images of a folder per shard (the unit of work).", 1
    ),
    keep_uncertain: float = opt.float_option(
        None,
        "--keep-uncertain",
        "--ray: also write the input frames whose confidence margin is in this lowest fraction "
        "(0-1; 'raw' head artifacts) to OUT/uncertain/.",
        opt.SHARE,
    ),
    imgsz: opt.InputSize = None,
    save_video: bool = typer.Option(
        False,
        "--save-video",
        help="Video input: also write video/NAME, the overlays with the input's codec and frame rate "
        "(mp4v .mp4 where OpenCV cannot write that codec).",
    ),
) -> None:
    """Segment images, a video, a ROS 2 bag or a live camera with an exported model (torch-free runtime).

    Output names keep the input's relative path and suffix (labels/a/x.jpg.png); see README.
    With --ray, many inputs are segmented on a Ray cluster into OUT (resumable; OUT/index.parquet).
    Exit status: 0 all segmented, 1 some files of a folder (or, with --ray, some shards) failed, 2 error.
    """
    from runtime import Segmenter
    from runtime.io.batch_infer import infer_path
    from runtime.io.sources import ProgressLine

    if resize not in ("stretch", "letterbox"):
        _fail(f"--resize must be 'stretch' or 'letterbox', got {resize!r}")
    if ray is not None:
        _infer_on_ray(
            artifact,
            sources,
            out,
            ray,
            topic or (),
            workers,
            gpus_per_worker,
            batch,
            images_per_shard,
            keep_uncertain,
            overlays,
            alpha,
            resize,
            opt.provider_list(providers),
            threads,
            backend,
        )
        return
    ray_only = {
        "--workers": workers != 1,
        "--gpus-per-worker": gpus_per_worker != 0,
        "--batch": batch != 8,
        "--images-per-shard": images_per_shard != 256,
        "--keep-uncertain": keep_uncertain is not None,
    }
    if any(ray_only.values()):
        _fail(f"{', '.join(k for k, v in ray_only.items() if v)}: only with --ray")
    if len(sources) != 1:
        _fail(f"{len(sources)} inputs given; one at a time, or several with --ray")
    source = sources[0]
    from runtime.io.robotics import infer_robotics, is_robotics_job

    def open_segmenter() -> Segmenter:
        segmenter = Segmenter.open(
            artifact,
            providers=opt.provider_list(providers),
            threads=threads or 0,
            resize=resize,
            cuda_graph=cuda_graph,
            contexts=contexts,  # type: ignore[arg-type]
            backend=backend,
            input_size=opt.parse_hw("--imgsz", imgsz) if imgsz else None,
        )
        for note in segmenter.notes:
            typer.echo(f"note: {note}", err=True)
        return segmenter

    from runtime.io.sources import quiet_video_logs

    quiet_video_logs()  # our one line, not OpenCV's / FFmpeg's
    if compression not in ("zstd", "lz4", "none"):
        _fail(f"--compression must be zstd, lz4 or none, got {compression!r}")
    if is_robotics_job(source, out, topic or (), max_frames, duration, timeout):  # bags, cameras, streams
        if save_video:
            _fail("--save-video is for a whole video file (not with --topic, --max-frames or --duration)")
        with open_segmenter() as segmenter:
            line = ProgressLine()
            options = dict(
                exist_ok=exist_ok, overwrite=overwrite, overlays=overlays, alpha=alpha, copy_input=copy_input
            )
            options |= dict(
                compression=compression,
                timeout=timeout,
                on_note=lambda line: typer.echo(f"note: {line}", err=True),
            )
            summary = infer_robotics(
                segmenter, source, out, topic or (), max_frames, duration, progress=line, **options
            )
            line.finish()
        t = summary.mean_timings_ms
        typer.echo(
            f"{summary.frames} frame(s) -> {summary.out_dir}  ({line.fps():.1f} FPS; mean ms: pre "
            f"{t['pre']:.1f}, infer {t['infer']:.1f}, post {t['post']:.1f})"
        )
        return
    line = ProgressLine()
    with open_segmenter() as segmenter:
        try:
            summary = infer_path(
                segmenter,
                source,
                out,
                overlays=overlays,
                alpha=alpha,
                progress=line,
                exist_ok=exist_ok,
                overwrite=overwrite,
                strict=strict,
                on_skip=lambda text: typer.echo(f"skipped: {text}", err=True),
                on_note=lambda text: typer.echo(f"note: {text}", err=True),
                save_video=save_video,
            )
        finally:
            line.finish()  # the summary below gets a line of its own
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
    if summary.failed:
        raise typer.Exit(code=1)


infer.command_class = InferCommand  # type: ignore[attr-defined]  # read by commands.register


def _infer_on_ray(
    artifact: str,
    sources: list[str],
    out: str,
    address: str,
    topics: list[str],
    workers: int,
    gpus_per_worker: float,
    batch: int,
    images_per_shard: int,
    keep_uncertain: float | None,
    overlays: bool,
    alpha: float,
    resize: str,
    providers: list[str] | None,
    threads: int | None,
    backend: str | None,
) -> None:
    """``infer --ray``: :func:`runtime.io.fleet.segment`, progress on stderr, a summary line."""
    from runtime.io.fleet import ProgressPrinter, looks_like_address, segment

    if not looks_like_address(address):
        _fail(
            f"--ray {address}: not a Ray address (auto, ray://host:port, host:port); "
            "put --ray after the inputs"
        )
    printer = ProgressPrinter()
    summary = segment(
        artifact,
        sources,
        out,
        topics=topics,
        address=None if address == "local" else address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        batch=batch,
        images_per_shard=images_per_shard,
        overlays=overlays,
        alpha=alpha,
        resize=resize,
        providers=providers,
        threads=threads,
        backend=backend,
        keep_uncertain=keep_uncertain,
        progress=printer.show,
    )
    printer.finish()
    for key, error in summary.failed:
        typer.echo(f"failed: {key}: {error}", err=True)
    resumed = f", {summary.resumed} finished earlier" if summary.resumed else ""
    skipped = f", {summary.skipped_frames} frame(s) skipped" if summary.skipped_frames else ""
    uncertain = f", {summary.uncertain} uncertain frame(s) kept" if summary.uncertain else ""
    typer.echo(
        f"{summary.frames} frame(s) in {summary.shards} shard(s){resumed}, {len(summary.failed)} failed"
        f"{skipped}{uncertain} -> {summary.index}  ({summary.seconds:.1f} s)"
    )
    if summary.failed or summary.skipped_frames:
        raise typer.Exit(code=1)


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


def bench_command(
    artifacts: list[str] = typer.Argument(
        None, help="ONNX models / engines (or their sidecar or folder) and our .safetensors checkpoints."
    ),
    preset: list[str] = typer.Option(
        None, "--preset", help="Also time this preset in PyTorch (seeded random weights)."
    ),
    device: str = opt.device_option("cpu", "PyTorch device: cpu, cuda, cuda:1 ..."),
    providers: opt.Providers = None,
    shape: str = typer.Option(
        None,
        "--shape",
        help="HxW of the frames (default: each model's input size).",
    ),
    batch: int = opt.int_option(1, "--batch", "Frames per call.", 1, 1024),
    warmup: int = opt.int_option(3, "--warmup", "Untimed warm-up calls.", 0),
    iterations: int = opt.int_option(20, "--iterations", "Timed calls.", 1, 1_000_000),
    threads: opt.Threads = 1,
    out: str = opt.folder_option(
        None, "--out", "Write bench.json, bench.csv, bench.md (and bench.png) here."
    ),
    plot: bool = typer.Option(False, "--plot", help="Also a PNG plot (needs matplotlib)."),
    exist_ok: bool = opt.exist_ok_option(
        "Allow an --out folder holding other files (ours are added beside them)."
    ),
    overwrite: bool = opt.overwrite_option("Replace bench.* files in --out that pem-deploy did not write."),
    cuda_graph: opt.CudaGraph = False,
    backend: list[str] = typer.Option(
        None,
        "--backend",
        help="Run ONNX artifacts with this backend: onnxruntime | openvino (repeatable: side by side); "
        "with --baseline: torch | onnxruntime (default both).",
    ),
    baseline: str = typer.Option(
        None,
        "--baseline",
        help="Whole model against whole model: each --preset vs this baseline (mask2former-r50) and "
        "PEM STDC1, eager and onnxruntime, with the paper's FPS and FLOP ratios.",
    ),
    rounds: int = opt.int_option(
        2, "--rounds", "With --baseline: measure everything this many times.", 1, 100
    ),
) -> None:
    """Latency side by side: mean / p50 / p90 / p99, FPS, img/s, peak memory, pre / infer / post ms."""
    from pathlib import Path

    from runtime.tools.bench import (
        BenchError,
        bench_artifact,
        check_reports_target,
        format_table,
        parse_shape,
        write_reports,
    )

    if baseline is not None:
        _baseline(preset, baseline, shape, rounds, warmup, iterations, threads, out, bool(artifacts), backend)
        return
    if not artifacts and not preset:
        _fail("give one or more artifacts (ONNX, engine, .safetensors) or --preset NAME")
    # The benchmarked files and their sidecars are never written; refused before the timing runs.
    read = [p for item in artifacts or [] for p in (Path(item), Path(item).with_suffix(".json"))]
    target = dict(plot=plot, exist_ok=exist_ok, overwrite=overwrite, inputs=read)
    if out:
        check_reports_target(out, **target)
    results = []
    try:
        size = parse_shape(shape) if shape else None
        provider_list = opt.provider_list(providers)
        for item in artifacts or []:
            if not Path(item).exists():
                raise BenchError(f"{item}: no such file or folder")
            if Path(item).suffix in (".safetensors", ".pkl", ".pth", ".pt"):
                results.append(_bench_torch(item, None, device, size, batch, warmup, iterations, threads))
            else:
                for runner in backend or [None]:
                    results.append(
                        bench_artifact(
                            item,
                            shape=size,
                            batch=batch,
                            warmup=warmup,
                            iterations=iterations,
                            threads=threads,
                            providers=provider_list,
                            name=item,
                            cuda_graph=cuda_graph,
                            backend=runner,
                            on_note=lambda text: typer.echo(f"note: {text}", err=True),
                        )
                    )
        for name in preset or []:
            results.append(_bench_torch(None, name, device, size, batch, warmup, iterations, threads))
    except BenchError as exc:
        _fail(str(exc))
    written = write_reports(results, out, **target) if out else None  # a failed write: the only output
    typer.echo(format_table(results))
    if written is not None:
        paths, note = written
        typer.echo("wrote " + ", ".join(str(p) for p in paths))
        if note:
            typer.echo(note)


def _baseline(
    presets: list[str] | None,
    baseline: str,
    shape: str | None,
    rounds: int,
    warmup: int,
    iterations: int,
    threads: int,
    out: str | None,
    has_artifacts: bool,
    backends: list[str] | None,
) -> None:
    """``bench --baseline``: PEM vs the baseline through ``export.baseline_bench``
    (``--backend torch`` / ``onnxruntime`` picks one of the two; default both)."""
    from contract.resources import ResourceError
    from export.baseline_bench import BACKENDS, compare_with_baseline, write_comparisons
    from export.errors import ExportError
    from runtime.tools.bench import BenchError, parse_shape

    if not presets or has_artifacts:
        _fail("--baseline compares presets: give --preset NAME (and no artifacts)")
    try:
        size = parse_shape(shape) if shape else None
        results = [
            compare_with_baseline(
                name,
                baseline,
                shape=size,
                rounds=rounds,
                warmup=warmup,
                iterations=iterations,
                threads=threads or 1,
                backends=tuple(backends) if backends else BACKENDS,
                log=typer.echo,
            )
            for name in presets
        ]
        written = write_comparisons(results, out) if out else None
    except (BenchError, ExportError, ResourceError) as exc:
        _fail(str(exc))
    for result in results:
        typer.echo(result.table())
    if written:
        typer.echo("wrote " + ", ".join(str(p) for p in written))


def _bench_torch(
    checkpoint: str | None,
    preset: str | None,
    device: str,
    shape: tuple[int, int] | None,
    batch: int,
    warmup: int,
    iterations: int,
    threads: int,
) -> object:
    """PyTorch timing through ``export.bench_torch`` (torch imported only when needed)."""
    from export.bench_torch import bench_torch
    from export.errors import ExportError

    try:
        return bench_torch(
            checkpoint=checkpoint,
            preset=preset,
            device=device,
            shape=shape,
            batch=batch,
            warmup=warmup,
            iterations=iterations,
            threads=threads,
            name=checkpoint or preset,
        )
    except ExportError as exc:
        _fail(str(exc))

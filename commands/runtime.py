"""Runtime commands: ``infer``, ``ros2``, ``bench`` (parse, delegate to ``runtime``, print)."""

from __future__ import annotations

import typer

from commands import options as opt
from commands.common import fail as _fail


def infer(
    artifact: str = typer.Argument(
        ..., help="Model artifact: .onnx / .engine (sidecar .json beside it) or its folder."
    ),
    source: str = typer.Argument(
        ...,
        help="An image, a folder of images, a video, a ROS 2 bag (.mcap, .db3 or bag folder; with --topic), "
        "a camera index, /dev/videoN, an rtsp/http/file URL or a GStreamer pipeline.",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        help="Output folder (labels/, panoptic/, overlay/, predictions.json), or a bag file (.mcap / .db3).",
    ),
    resize: str = typer.Option("stretch", "--resize", help="stretch | letterbox (keep aspect ratio)."),
    providers: opt.Providers = None,
    threads: opt.Threads = None,  # type: ignore[assignment]
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay JPEGs."),
    alpha: opt.Alpha = 0.5,
    topic: list[str] = typer.Option(None, "--topic", help="Bag image topic(s) to segment (repeatable)."),
    max_frames: int = opt.int_option(None, "--max-frames", "Stop after this many frames (bags, cameras).", 1),
    duration: float = opt.float_option(
        None, "--duration", "Stop a live camera after this many seconds.", opt.POSITIVE
    ),
    exist_ok: bool = opt.exist_ok_option(
        "Allow a non-empty --out folder: add our labels/, panoptic/, overlay/, predictions.json "
        "(only files pem-deploy wrote are replaced); or replace an existing output bag file."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first unreadable file of a folder (default: skip it)."
    ),
    copy_input: bool = typer.Option(False, "--copy-input", help="Also copy the input images to the bag."),
    cuda_graph: opt.CudaGraph = False,
    contexts: int = opt.int_option(None, "--contexts", "TensorRT execution contexts (default: as built).", 1),
    backend: str = typer.Option(
        None,
        "--backend",
        help="onnxruntime | openvino (a --deform-impl decomposed ONNX) | tensorrt (default: by file type).",
    ),
) -> None:
    """Segment images, a video, a ROS 2 bag or a live camera with an exported model (torch-free runtime).

    Output names keep the input's relative path and suffix (labels/a/x.jpg.png); see README.
    Exit status: 0 all segmented, 1 some files of a folder skipped, 2 error.
    """
    from runtime import Segmenter
    from runtime.batch_infer import infer_path, stderr_progress

    if resize not in ("stretch", "letterbox"):
        _fail(f"--resize must be 'stretch' or 'letterbox', got {resize!r}")
    from runtime.robotics import infer_robotics, is_robotics_job

    def open_segmenter() -> Segmenter:
        return Segmenter.open(
            artifact,
            providers=opt.provider_list(providers),
            threads=threads or 0,
            resize=resize,
            cuda_graph=cuda_graph,
            contexts=contexts,  # type: ignore[arg-type]
            backend=backend,
        )

    if is_robotics_job(source, out, topic or (), max_frames, duration):  # bags, cameras, streams
        from runtime.sources import ProgressLine

        with open_segmenter() as segmenter:
            line = ProgressLine()
            options = dict(exist_ok=exist_ok, overlays=overlays, alpha=alpha, copy_input=copy_input)
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
    with open_segmenter() as segmenter:
        summary = infer_path(
            segmenter,
            source,
            out,
            overlays=overlays,
            alpha=alpha,
            progress=stderr_progress,
            exist_ok=exist_ok,
            strict=strict,
            on_skip=lambda line: typer.echo(f"skipped: {line}", err=True),
            on_note=lambda line: typer.echo(f"note: {line}", err=True),
        )
    t = summary.mean_timings_ms
    skipped = f", {len(summary.failed)} skipped" if summary.failed else ""
    typer.echo(
        f"{summary.frames} frame(s){skipped} -> {summary.out_dir}  "
        f"(mean ms: pre {t['pre']:.1f}, infer {t['infer']:.1f}, post {t['post']:.1f})"
    )
    if summary.failed:
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
    ros_args: list[str] = typer.Argument(
        None, help="Extra ROS arguments after '--' (e.g. --ros-args -p ...)."
    ),
) -> None:
    """ROS 2 node: subscribe to an image topic, publish labels / panoptic / overlay (needs rclpy)."""
    from runtime.ros.node import NodeConfig, import_rclpy, run_node

    import_rclpy()
    config = NodeConfig(
        artifact, input_topic, namespace=namespace, overlay=overlays, alpha=alpha, resize=resize
    )
    run_node(config, args=["pem-deploy", *(ros_args or [])], log=typer.echo)


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

    from runtime.bench import BenchError, bench_artifact, format_table, parse_shape, write_reports

    if baseline is not None:
        _baseline(preset, baseline, shape, rounds, warmup, iterations, threads, out, bool(artifacts), backend)
        return
    if not artifacts and not preset:
        _fail("give one or more artifacts (ONNX, engine, .safetensors) or --preset NAME")
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
                        )
                    )
        for name in preset or []:
            results.append(_bench_torch(None, name, device, size, batch, warmup, iterations, threads))
    except BenchError as exc:
        _fail(str(exc))
    written = write_reports(results, out, plot=plot) if out else None  # a failed write: the only output
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
    from runtime.bench import BenchError, parse_shape

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

"""``pem-deploy`` command line: parses arguments and delegates to the packages."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from contract.errors import PemDeployError, describe_os_error, one_line


def _metavar(param: Any) -> str:
    """Capitalised placeholder for a value in help and usage lines (N for integers, X for numbers)."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    return (param.name or "value").upper()


def _tidy_param(param: Any) -> None:
    no_type = lambda ctx: None  # noqa: E731
    if getattr(param, "param_type_name", "") == "argument":
        param.metavar = param.metavar or (param.name or "value").upper()
        param.display_type_rich = no_type  # type: ignore[attr-defined]  # the name column says it
    elif getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.display_type_rich = no_type  # type: ignore[attr-defined]  # flags take no value
    elif param.metavar is None:
        param.metavar = _metavar(param)


def _tidy_help(command: Any) -> None:
    """Help without type tags (``<str>``, ``<bool>``): flags show no value, values a CAPITAL name."""
    for param in command.params:
        _tidy_param(param)
    make_help_option = command.get_help_option

    def get_help_option(ctx: typer.Context) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            _tidy_param(option)
        return option

    command.get_help_option = get_help_option  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


class _OneLineErrors(TyperGroup):
    """Turns every expected failure into ``error: <one line>`` and exit status 2, never a traceback.

    Typed project errors (:class:`PemDeployError`), file-system failures (disk full, read-only
    folder, permission) and running out of memory are all a user's problem to fix, not a bug
    report; Ctrl-C exits 130 with one line. Also tidies the help of every command.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _tidy_help(self)

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except PemDeployError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except OSError as exc:
            typer.echo(f"error: {describe_os_error(exc)}", err=True)
            raise typer.Exit(code=2) from None
        except MemoryError:
            typer.echo("error: out of memory (try a smaller size, batch or --threads)", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(code=130) from None


app = typer.Typer(
    cls=_OneLineErrors,
    name="pem-deploy",
    help="Edge-deployment toolchain for PEM (Prototype-based Efficient MaskFormer).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pem-deploy {version('pem-deploy')}")
        except PackageNotFoundError:  # running from a source tree that is not installed
            typer.echo("pem-deploy (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Edge-deployment toolchain for PEM: model info, training, export, calibration, runtime."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _parse_known_errors() -> tuple[type[BaseException], ...]:
    from pem.checkpoint import CheckpointError
    from pem.config import ConfigError

    return (ConfigError, CheckpointError, FileNotFoundError)


@app.command()
def info(
    preset: str = typer.Option(None, "--preset", help="Preset name (see --list)."),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Our .safetensors checkpoint (config read beside it)."
    ),
    height: int = typer.Option(
        None, "--height", help="Input height (multiple of 32); default: the preset's."
    ),
    width: int = typer.Option(None, "--width", help="Input width (multiple of 32); default: the preset's."),
    postprocess: bool = typer.Option(
        False, "--postprocess/--no-postprocess", help="Also count semantic inference (class x mask product)."
    ),
    list_presets: bool = typer.Option(False, "--list", help="List preset names and exit."),
    paper: bool = typer.Option(
        False, "--paper", help="Compare every paper row (params, GFLOPs) as markdown."
    ),
) -> None:
    """Print parameters and GFLOPs (PyTorch's FLOP counter; fvcore/paper convention: 1 MAC = 1 FLOP)."""
    from pem.config import get_preset, preset_names
    from pem.flops import count_cost

    if list_presets:
        typer.echo("\n".join(preset_names()))
        return
    if paper:
        from pem.paper import compare_with_paper, comparison_markdown

        typer.echo(comparison_markdown(compare_with_paper()))
        return
    try:
        if (preset is None) == (checkpoint is None):
            _fail("give exactly one of --preset or --checkpoint")
        if checkpoint is not None:
            from pem.checkpoint import read_checkpoint_config

            config = read_checkpoint_config(checkpoint)
        else:
            config = get_preset(preset)
        h = height or config.input_size[0]
        w = width or config.input_size[1]
        config = config.replace(input_size=(h, w))
        cost = count_cost(config, with_postprocess=postprocess)
    except _parse_known_errors() as exc:
        _fail(str(exc))
    typer.echo(f"model        {config.name} ({config.task}, {config.num_classes} classes)")
    typer.echo(f"input        {h}x{w}")
    typer.echo(f"parameters   {cost.params / 1e6:.2f} M")
    for part, macs in cost.macs_by_part.items():
        typer.echo(f"  {part:<20} {macs / 1e9:8.2f} GFLOPs")
    typer.echo(f"GFLOPs       {cost.gflops_fvcore:.2f}  (multiply-accumulates, fvcore/paper convention)")


@app.command()
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
    provider: list[str] = typer.Option(
        None, "--provider", help="onnxruntime execution provider(s), in order."
    ),
    backend: str = typer.Option(
        None,
        "--backend",
        help="onnxruntime | openvino (a --deform-impl decomposed ONNX) | tensorrt (default: by file type).",
    ),
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay JPEGs."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity."),
    topic: list[str] = typer.Option(None, "--topic", help="Bag image topic(s) to segment (repeatable)."),
    max_frames: int = typer.Option(None, "--max-frames", help="Stop after this many frames (bags, cameras)."),
    duration: float = typer.Option(None, "--duration", help="Stop a live camera after this many seconds."),
    exist_ok: bool = typer.Option(
        False,
        "--exist-ok",
        help="Allow a non-empty --out folder: add our labels/, panoptic/, overlay/, predictions.json "
        "(only files pem-deploy wrote are replaced); or replace an existing output bag file.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first unreadable file of a folder (default: skip it)."
    ),
    copy_input: bool = typer.Option(False, "--copy-input", help="Also copy the input images to the bag."),
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

    if is_robotics_job(source, out, topic or (), max_frames, duration):  # bags, cameras, streams
        from runtime.sources import ProgressLine

        opened = Segmenter.open(artifact, providers=provider or None, resize=resize, backend=backend)  # type: ignore[arg-type]
        with opened as segmenter:
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
    opened = Segmenter.open(artifact, providers=provider or None, resize=resize, backend=backend)  # type: ignore[arg-type]
    with opened as segmenter:
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


@app.command("ros2")
def ros2_command(
    artifact: str = typer.Argument(..., help="Model artifact: .onnx / .engine or its folder."),
    input_topic: str = typer.Option(
        "/camera/image_raw", "--input", help="Image topic (a '/compressed' topic is a CompressedImage)."
    ),
    namespace: str = typer.Option("pem", "--namespace", help="Outputs go to <input>/<namespace>/..."),
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Publish the overlay topic."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity."),
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


def _data_errors() -> tuple[type[BaseException], ...]:
    from pem.checkpoint import CheckpointError
    from pem.config import ConfigError
    from pem.data import DatasetError

    return (ConfigError, CheckpointError, DatasetError, FileNotFoundError, NotADirectoryError)


def _parse_hw(text: str, option: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        _fail(f"{option} must be HxW (e.g. 256x512), got {text!r}")
    return int(parts[0]), int(parts[1])


@app.command("make-synthetic")
def make_synthetic_command(
    out: str = typer.Argument(..., help="Output folder (must not exist or be empty)."),
    train: int = typer.Option(300, "--train", help="Number of training images."),
    val: int = typer.Option(50, "--val", help="Number of validation images."),
    size: str = typer.Option("256x512", "--size", help="Image size HxW."),
    seed: int = typer.Option(0, "--seed", help="Random seed (image i depends only on seed, split, i)."),
) -> None:
    """Generate the synthetic street-scene set in the exact Cityscapes layout (panoptic included)."""
    from pem.data.synthetic import SyntheticConfig, make_synthetic

    hw = _parse_hw(size, "--size")
    try:
        path = make_synthetic(out, SyntheticConfig(train=train, val=val, size=hw, seed=seed), progress=True)
    except _data_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {train} train + {val} val images ({hw[0]}x{hw[1]}) to {path}")


@app.command()
def train(
    preset: str = typer.Option(..., "--preset", help="Model preset (see `info --list`); sets the recipe."),
    data: str = typer.Option(..., "--data", help="Dataset folder (Cityscapes layout or ADE20K)."),
    out: str = typer.Option(None, "--out", help="Output folder (default: runs/PRESET)."),
    iterations: int = typer.Option(None, "--iterations", help="Optimizer steps."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per optimizer step."),
    accumulate: int = typer.Option(None, "--accumulate", help="Micro-batches per step (grad accumulation)."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate."),
    crop: str = typer.Option(None, "--crop", help="Training crop HxW."),
    num_points: int = typer.Option(None, "--num-points", help="Points per mask for the mask losses."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    eval_period: int = typer.Option(None, "--eval-period", help="Evaluate every N steps (0: at the end)."),
    checkpoint_period: int = typer.Option(None, "--checkpoint-period", help="Checkpoint every N steps."),
    workers: int = typer.Option(None, "--workers", help="Data-loading worker processes."),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: on CUDA)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for PyTorch (1 is best on a busy CPU)."),
    val_split: str = typer.Option("val", "--val-split", help="Split evaluated during / after training."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Do not evaluate."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    sync_bn: str = typer.Option(
        None, "--sync-bn", help="Under torchrun: official (default), all or off (which BN syncs)."
    ),
) -> None:
    """Train a preset on a dataset (checkpoints, metrics.jsonl, progress bar with loss and ETA).

    Several GPUs / nodes: launch it with ``torchrun --nproc-per-node N [--nnodes M ...]``;
    ``--batch-size`` stays the global batch (README, "Training at scale").
    """
    from pem.train import run_training, train_preset
    from pem.train.distributed import current_context, shutdown

    changes: dict[str, object] = {
        k: v
        for k, v in {
            "iterations": iterations,
            "batch_size": batch_size,
            "accumulate": accumulate,
            "lr": lr,
            "seed": seed,
            "eval_period": eval_period,
            "checkpoint_period": checkpoint_period,
            "num_workers": workers,
            "amp": amp,
            "sync_bn": sync_bn,
        }.items()
        if v is not None
    }
    if crop is not None:
        changes["augment"] = {"crop_size": _parse_hw(crop, "--crop")}
    if num_points is not None:
        changes["loss"] = {"num_points": num_points}
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    try:
        config = train_preset(preset).replace(**changes)
        result = run_training(
            preset,
            data,
            out or f"runs/{preset}",
            config,
            val_split=None if no_eval else val_split,
            resume=resume,
            device=device,
            progress=None,
        )
    except _data_errors() as exc:
        _fail(str(exc))
    main = current_context().is_main
    shutdown()
    if not main:
        return
    typer.echo(f"trained {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.3f}")
    if result.metrics is not None:
        typer.echo(result.metrics.summary())
    typer.echo(f"checkpoint   {result.checkpoint}")


@app.command("eval")
def eval_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Our .safetensors checkpoint."),
    data: str = typer.Option(..., "--data", help="Dataset folder (Cityscapes layout or ADE20K)."),
    split: str = typer.Option("val", "--split", help="Split to evaluate."),
    task: str = typer.Option(None, "--task", help="semantic or panoptic (default: the model's task)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per forward pass."),
    limit: int = typer.Option(None, "--limit", help="Evaluate only the first N images."),
    short_side: int = typer.Option(None, "--short-side", help="Resize short side first (ADE20K 512/640)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda ... (default: cuda if available)."),
    json_out: str = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    save_predictions: str = typer.Option(
        None, "--save-predictions", help="Write predictions in the official Cityscapes evaluators' formats."
    ),
) -> None:
    """Evaluate a checkpoint: mIoU (per class + mean) and, for panoptic models, PQ / SQ / RQ."""
    import json
    from pathlib import Path

    from pem.evaluation import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(
            checkpoint,
            data,
            split=split,
            task=task,
            batch_size=batch_size,
            limit=limit,
            short_side=short_side,
            device=device,
            save_predictions=save_predictions,
            progress=None,
        )
    except _data_errors() as exc:
        _fail(str(exc))
    from pem.train.distributed import current_context, shutdown

    main = current_context().is_main  # under torchrun every rank evaluates a shard
    shutdown()
    if not main:
        return
    typer.echo(result.summary())
    if json_out:
        Path(json_out).write_text(json.dumps(result.to_dict(), indent=2) + "\n")


@app.command("export")
def export_command(
    preset: str = typer.Option(None, "--preset", help="Preset name; alone: seeded random weights."),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Our .safetensors checkpoint, or an official .pkl/.pth (with --preset)."
    ),
    out: str = typer.Option(..., "--out", help="Output folder for NAME.onnx + NAME.json."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (int8: calibration)."),
    head: str = typer.Option(None, "--head", help="raw | semantic | panoptic (default: the model's task)."),
    height: int = typer.Option(
        None, "--height", help="Input height (multiple of 32); default: the preset's."
    ),
    width: int = typer.Option(None, "--width", help="Input width (multiple of 32); default: the preset's."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch, height and width."),
    batch: int = typer.Option(1, "--batch", help="Static batch size."),
    deform_impl: str = typer.Option(
        "native", "--deform-impl", help="native (ONNX DeformConv) | decomposed (standard ops only)."
    ),
    preprocess: str = typer.Option(
        "none",
        "--preprocess",
        help="none (normalised input) | normalize (0-255 float) | uint8 (0-255 uint8).",
    ),
    opset: int = typer.Option(19, "--opset", help="ONNX opset (19-22)."),
    simplifier: str = typer.Option("onnxslim", "--simplifier", help="onnxslim | onnxsim | none."),
    exporter: str = typer.Option("dynamo", "--exporter", help="dynamo | torchscript (fallback)."),
    name: str = typer.Option("model", "--name", help="File stem of the artifact."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (preset without checkpoint)."),
    lint_table: bool = typer.Option(False, "--lint-table", help="Print the per-op TensorRT table."),
    calib_data: str = typer.Option(
        None,
        "--calib-data",
        help="int8: calibration images (Cityscapes folder, image folder or 'synthetic').",
    ),
    calib_method: str = typer.Option(
        "percentile", "--calib-method", help="int8: percentile | minmax | entropy."
    ),
    calib_images: int = typer.Option(200, "--calib-images", help="int8: number of calibration images."),
    calib_cache: str = typer.Option(
        None, "--calib-cache", help="int8: reuse this TensorRT calibration cache instead of calibrating."
    ),
    out_format: str = typer.Option(
        "onnx", "--format", help="onnx | engine (also build a TensorRT engine; needs TensorRT and a GPU)."
    ),
    target: str = typer.Option(
        None,
        "--target",
        "--layout",
        help="int8: runtime the Q/DQ layout is for: onnxruntime | tensorrt (default: tensorrt with "
        "--format engine, else onnxruntime). --layout is an alias.",
    ),
) -> None:
    """Export to ONNX: custom DeformConv / prototype-gather translations, heads, FP16, metadata, lint."""
    from export.errors import ExportError
    from export.pipeline import ExportOptions, export_artifact
    from export.progress import ConsoleProgress
    from export.source import load_source

    options = ExportOptions(
        out_dir=out,
        name=name,
        head=head,
        precision=precision,
        deform_impl=deform_impl,
        preprocess=preprocess,
        dynamic=dynamic,
        batch=batch,
        opset=opset,
        simplifier=simplifier,
        exporter=exporter,
    )
    if out_format not in ("onnx", "engine"):
        _fail(f"--format {out_format}: choose onnx or engine")
    try:
        options.validate()
        quantizer = _int8_quantizer(
            precision, calib_data, calib_method, calib_images, calib_cache, target, out_format
        )
        if out_format == "engine":
            from export.tensorrt_engine import import_tensorrt

            import_tensorrt()  # fail before the slow export when TensorRT is missing
        with ConsoleProgress() as progress:
            progress("loading the model")
            source = load_source(preset=preset, checkpoint=checkpoint, height=height, width=width, seed=seed)
            result = export_artifact(source, options, progress=progress, int8_quantizer=quantizer)
            engine = _build_engine(result.onnx_path, precision, quantizer) if out_format == "engine" else None
    except ExportError as exc:
        _fail(str(exc))
    typer.echo(result.summary(lint_table=lint_table))
    calibrated = getattr(quantizer, "result", None)
    if calibrated is not None:
        ranges = calibrated.ranges
        how = "reused" if ranges.reused else f"{ranges.images} images, {ranges.seconds:.1f} s"
        typer.echo(f"calibration  {how}; TensorRT cache {ranges.cache_path}")
    if engine is not None:
        typer.echo(f"engine       {engine}")


def _int8_quantizer(
    precision: str,
    calib_data: str | None,
    method: str,
    images: int,
    cache: str | None,
    target: str | None = None,
    out_format: str = "onnx",
) -> object | None:
    """The calibration package's quantizer for ``--precision int8`` (None otherwise)."""
    if precision != "int8":
        if calib_data is not None or cache is not None or target is not None:
            _fail("--calib-data / --calib-cache / --target are for --precision int8")
        return None
    if calib_data is None and cache is None:
        _fail("--precision int8: INT8 needs --calib-data DIR (calibration images) or --calib-cache FILE")
    from calib.calibrate import CalibrationConfig, Int8Calibrator
    from calib.graph import check_target, default_target

    target = check_target(target or default_target(out_format))
    if target != "tensorrt" and out_format == "engine":
        _fail(f"--target {target} --format engine: TensorRT engines need --target tensorrt")
    config = CalibrationConfig(
        data=calib_data or "synthetic",
        method=method,
        num_images=images,
        cache_file=cache,  # type: ignore[arg-type]
    )
    return Int8Calibrator(config, layout=target)


def _build_engine(onnx_path: object, precision: str, quantizer: object | None) -> object:
    """``--format engine``: compile the exported ONNX with TensorRT (strongly typed for FP16 / INT8
    graphs, which carry their precisions; on TensorRT 10 an FP32 graph builds weakly typed)."""
    from pathlib import Path

    from export.tensorrt_engine import EngineOptions, build_engine

    onnx_file = Path(str(onnx_path))
    engine_path = onnx_file.with_name(f"{onnx_file.stem}.{precision}.engine")  # sidecar: STEM.PRECISION.json
    options = EngineOptions(precision=precision, strongly_typed=True if precision != "fp32" else None)  # type: ignore[arg-type]
    build_engine(onnx_file, engine_path, options)
    return engine_path


@app.command("calibrate")
def calibrate_command(
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Our .safetensors checkpoint, or an official .pkl/.pth (with --preset)."
    ),
    preset: str = typer.Option(None, "--preset", help="Preset name; alone: seeded random weights."),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="Calibration images: Cityscapes folder (leftImg8bit/train), image folder, 'synthetic'.",
    ),
    out: str = typer.Option(
        ..., "--out", help="Output folder: NAME.onnx/.json (INT8), NAME.cache, accuracy.json/.md."
    ),
    method: str = typer.Option("percentile", "--method", help="percentile | minmax | entropy."),
    num_images: int = typer.Option(200, "--num-images", help="Calibration images (deterministic sample)."),
    calib_seed: int = typer.Option(0, "--calib-seed", help="Seed of the image sample."),
    percentile: float = typer.Option(
        99.99, "--percentile", help="Percentile of |x| for --method percentile."
    ),
    target: str = typer.Option(
        None,
        "--target",
        "--layout",
        help="Runtime the Q/DQ layout is for: onnxruntime | tensorrt (default: onnxruntime; "
        "TensorRT engines need tensorrt). --layout is an alias.",
    ),
    max_drop: float = typer.Option(
        None, "--max-drop", help="Accuracy-aware: keep sensitive layers float until the mIoU drop <= POINTS."
    ),
    eval_data: str = typer.Option(
        None, "--eval-data", help="Labelled data for the report (default: --data)."
    ),
    eval_split: str = typer.Option(
        "val", "--eval-split", help="Held-out split for the report and --max-drop."
    ),
    eval_limit: int = typer.Option(None, "--eval-limit", help="Evaluate at most N images."),
    report: bool = typer.Option(True, "--report/--no-report", help="FP32/FP16/INT8 accuracy report."),
    head: str = typer.Option(None, "--head", help="raw | semantic | panoptic (default: the model's task)."),
    height: int = typer.Option(None, "--height", help="Input height (multiple of 32)."),
    width: int = typer.Option(None, "--width", help="Input width (multiple of 32)."),
    name: str = typer.Option("model", "--name", help="File stem of the artifact."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (preset without checkpoint)."),
    trt_version: str = typer.Option("10.3.0", "--trt-version", help="TensorRT version in the cache header."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Where calibration caches are kept for reuse."),
    calib_cache: str = typer.Option(
        None, "--calib-cache", help="Reuse this TensorRT cache (skip calibration)."
    ),
    reuse: bool = typer.Option(
        True, "--reuse/--no-reuse", help="Reuse a cache of the same model + data + method."
    ),
    threads: int = typer.Option(1, "--threads", help="onnxruntime threads."),
) -> None:
    """INT8 calibration: Q/DQ INT8 ONNX, TensorRT calibration cache, FP32/FP16/INT8 accuracy report."""
    from calib.calibrate import CalibrationConfig
    from calib.graph import check_target, default_target
    from calib.run import run_calibration
    from export.errors import ExportError
    from export.progress import ConsoleProgress
    from export.source import load_source

    try:
        config = CalibrationConfig(
            data=data,
            method=method,  # type: ignore[arg-type]
            num_images=num_images,
            seed=calib_seed,
            percentile=percentile,
            trt_version=trt_version,
            cache_dir=cache_dir,
            cache_file=calib_cache,
            reuse=reuse,
            threads=threads,
        )
        config.validate()
        with ConsoleProgress() as progress:
            progress("loading the model")
            source = load_source(preset=preset, checkpoint=checkpoint, height=height, width=width, seed=seed)
            outcome = run_calibration(
                source,
                out,
                config,
                head=head,
                name=name,
                layout=check_target(target or default_target()),
                max_drop=max_drop,
                eval_data=eval_data,
                eval_split=eval_split,
                eval_limit=eval_limit,
                report=report,
                progress=progress,
            )
    except ExportError as exc:  # CalibrationError is an ExportError
        _fail(str(exc))
    typer.echo(outcome.summary())


@app.command("check")
def check_command(
    artifact: str = typer.Argument(
        ..., help="The exported .onnx (sidecar beside it), its .json or its folder."
    ),
    preset: str = typer.Option(
        None, "--preset", help="Compare with this preset instead of the sidecar's source."
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Compare with this checkpoint instead."),
    image: list[str] = typer.Option(None, "--image", help="Image file(s) to compare on (repeatable)."),
    random: int = typer.Option(2, "--random", help="Number of random-noise inputs."),
    scenes: int = typer.Option(1, "--scenes", help="Number of synthetic street-scene inputs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated inputs."),
    emulate: bool = typer.Option(
        None, "--emulate-fp16/--no-emulate-fp16", help="Also run the FP16-emulated graph (default: for fp16)."
    ),
    max_abs: float = typer.Option(
        None, "--max-abs", help="Max abs error of logits/scores (default fp32: 1e-3)."
    ),
    min_agreement: float = typer.Option(
        None, "--min-agreement", help="Minimum label agreement (default: fp32 0.999, fp16 0.99)."
    ),
) -> None:
    """Compare an exported model with PyTorch: max abs/rel error per output, label agreement, mIoU.

    Exit code 0 when the thresholds hold, 1 when not, 2 on bad arguments or files.
    """
    from export.check import check_artifact
    from export.errors import ExportError

    limits = None if max_abs is None else {"pred_logits": max_abs, "scores": max_abs}
    try:
        result = check_artifact(
            artifact,
            preset=preset,
            checkpoint=checkpoint,
            images=image or (),
            random=random,
            scenes=scenes,
            seed=seed,
            emulate=emulate,
            max_abs=limits,
            min_agreement=min_agreement,
        )
    except ExportError as exc:
        _fail(str(exc))
    typer.echo(result.summary())
    if not result.passed:
        raise typer.Exit(code=1)


@app.command("bench")
def bench_command(
    artifacts: list[str] = typer.Argument(
        None, help="ONNX models / engines (or their sidecar or folder) and our .safetensors checkpoints."
    ),
    preset: list[str] = typer.Option(
        None, "--preset", help="Also time this preset in PyTorch (seeded random weights)."
    ),
    device: str = typer.Option("cpu", "--device", help="PyTorch device: cpu, cuda, cuda:1 ..."),
    providers: str = typer.Option(
        None, "--providers", help="onnxruntime providers, comma-separated (default: the best available)."
    ),
    shape: str = typer.Option(None, "--shape", help="HxW of the frames (default: each model's input size)."),
    batch: int = typer.Option(1, "--batch", help="Frames per call."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up calls."),
    iterations: int = typer.Option(20, "--iterations", help="Timed calls."),
    threads: int = typer.Option(1, "--threads", help="CPU threads (onnxruntime intra-op and torch)."),
    out: str = typer.Option(
        None, "--out", help="Write bench.json, bench.csv, bench.md (and bench.png) here."
    ),
    plot: bool = typer.Option(False, "--plot", help="Also a PNG plot (needs matplotlib)."),
    backend: list[str] = typer.Option(
        None,
        "--backend",
        help="Run ONNX artifacts with this backend: onnxruntime | openvino (repeatable: side by side).",
    ),
) -> None:
    """Latency side by side: mean / p50 / p90 / p99, FPS, img/s, peak memory, pre / infer / post ms."""
    from pathlib import Path

    from runtime.bench import BenchError, bench_artifact, format_table, parse_shape, write_reports

    if not artifacts and not preset:
        _fail("give one or more artifacts (ONNX, engine, .safetensors) or --preset NAME")
    results = []
    try:
        size = parse_shape(shape) if shape else None
        provider_list = [p.strip() for p in providers.split(",")] if providers else None
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
                            backend=runner,
                        )
                    )
        for name in preset or []:
            results.append(_bench_torch(None, name, device, size, batch, warmup, iterations, threads))
    except BenchError as exc:
        _fail(str(exc))
    typer.echo(format_table(results))
    if out:
        paths, note = write_reports(results, out, plot=plot)
        typer.echo("wrote " + ", ".join(str(p) for p in paths))
        if note:
            typer.echo(note)


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


@app.command("demo")
def demo_command(
    out: str = typer.Option("pem-demo", "--out", help="Output folder (artifacts, report.md, overlays)."),
    quick: bool = typer.Option(False, "--quick", help="The quick default model and few iterations (tests)."),
    iterations: int = typer.Option(None, "--iterations", help="Timed calls per model (default 20; quick 3)."),
    threads: int = typer.Option(1, "--threads", help="CPU threads."),
) -> None:
    """Whole toolchain on the embedded default: data, model, FP32/FP16/INT8 ONNX, parity, bench, report."""
    from pathlib import Path

    from export.errors import ExportError
    from export.progress import ConsoleProgress
    from runtime.errors import RuntimeToolError
    from workflows.demo import run_demo

    if Path(out).exists() and not Path(out).is_dir():
        _fail(f"--out {out}: exists and is not a folder")
    if threads < 1:
        _fail(f"--threads {threads}: must be >= 1")
    try:
        with ConsoleProgress() as progress:
            result = run_demo(out, quick=quick, iterations=iterations, threads=threads, progress=progress)
    except (ExportError, RuntimeToolError) as exc:
        _fail(str(exc))
    typer.echo(result.bench_table)
    for precision, entry in result.parity.items():
        verdict = "PASS" if entry["passed"] else "FAIL"
        typer.echo(
            f"parity {precision:<5} label agreement {entry['label_agreement']:.4%} "
            f"(>= {entry['min_agreement']:.1%})  {verdict}"
        )
    if result.accuracy is not None:
        for name, entry in result.accuracy["precisions"].items():
            pq = f", PQ {entry['PQ']:.2f}" if "PQ" in entry else ""
            typer.echo(f"accuracy {name:<5} mIoU {entry['mIoU']:.2f} (drop {entry['mIoU_drop']:+.2f}){pq}")
    for note in result.notes:
        typer.echo(note)
    typer.echo(f"report {result.report_path}  ({result.seconds:.0f} s)")
    if not result.parity_passed:
        typer.echo("parity FAILED for " + ", ".join(p for p, e in result.parity.items() if not e["passed"]))
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

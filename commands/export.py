"""Export commands: ``export``, ``calibrate``, ``check`` (delegate to ``export`` / ``calib``)."""

from __future__ import annotations

import typer

from commands import options as opt
from commands.common import fail as _fail
from commands.common import prepare_eager_torch


def export_command(
    ctx: typer.Context,
    preset: opt.Preset = None,
    checkpoint: opt.Checkpoint = None,
    out: str = opt.folder_option(..., "--out", "Output folder for NAME.onnx + NAME.json."),
    exist_ok: bool = opt.exist_ok_option(
        "Allow an --out folder holding other files (NAME.onnx / NAME.json are added beside them)."
    ),
    overwrite: bool = opt.overwrite_option(
        "Replace a NAME.onnx / NAME.json in --out that pem-deploy did not write (its own are replaced)."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (int8: calibration)."),
    head: opt.Head = None,
    height: opt.Height = None,
    width: opt.Width = None,
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch, height and width."),
    batch: int = opt.int_option(1, "--batch", "Static batch size.", 1, 1024),
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
    name: opt.ArtifactName = "model",
    seed: opt.WeightSeed = 0,
    lint_table: bool = typer.Option(False, "--lint-table", help="Print the per-op TensorRT table."),
    calib_data: str = typer.Option(
        None,
        "--calib-data",
        "--data",
        help="int8: calibration images: Cityscapes folder, image folder or 'synthetic' (default: "
        "synthetic, the default model's training set; give your own images for your model).",
    ),
    calib_method: opt.CalibMethod = "percentile",
    calib_images: opt.CalibImages = 200,
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
    consumer: str = typer.Option(
        None,
        "--for",
        help="Also package the artifact for triton | deepstream | isaac-ros into OUT/NAME-CONSUMER "
        "(the same as `pem-deploy package`).",
    ),
) -> None:
    """Export to ONNX: DeformConv translation of the custom op, heads, FP16, metadata, TensorRT lint."""
    import dataclasses

    from export.consumers import PackageError, PackageOptions
    from export.errors import ExportError
    from export.pipeline import ExportOptions, export_artifact
    from export.progress import ConsoleProgress
    from export.source import load_source

    package_options = PackageOptions(consumer) if consumer else None
    if package_options is not None:
        try:
            package_options.validate()
        except PackageError as exc:
            _fail(str(exc))
    prepare_eager_torch(None)
    # Every ExportOptions field but out_dir (--out) is a flag of this command of the same name:
    # they pass through by name, and a field without its flag fails here (KeyError), not silently.
    flags = {f.name: ctx.params[f.name] for f in dataclasses.fields(ExportOptions) if f.name != "out_dir"}
    options = ExportOptions(out_dir=out, **flags)
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
            source = load_source(
                preset=preset, checkpoint=checkpoint, height=height, width=width, seed=seed, batch=batch
            )
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
    if package_options is not None:
        from pathlib import Path

        from export.consumers import package_artifact

        # Triton serves the engine as a tensorrt_plan; DeepStream / Isaac ROS edit the ONNX graph.
        source_model = engine if engine is not None and consumer == "triton" else result.onnx_path
        bundle_dir = Path(out) / f"{options.name}-{consumer}"
        try:
            bundle = package_artifact(
                source_model,  # type: ignore[arg-type]
                bundle_dir,
                package_options,
                exist_ok=exist_ok,
                overwrite=overwrite,
            )
        except PackageError as exc:
            _fail(str(exc))
        typer.echo(bundle.summary())


def package_command(
    artifact: str = typer.Argument(
        ..., help="Exported artifact: NAME.onnx / NAME.engine, its sidecar or folder."
    ),
    consumer: str = typer.Option(..., "--for", help="triton | deepstream | isaac-ros."),
    out: str = opt.folder_option(..., "--out", "Folder for the bundle (new, or written by pem-deploy)."),
    exist_ok: bool = opt.exist_ok_option(
        "Allow an --out folder holding other files (the bundle's files are added beside them)."
    ),
    overwrite: bool = opt.overwrite_option(
        "Replace a bundle file in --out that pem-deploy did not write (its own are replaced)."
    ),
    model_name: str = typer.Option(
        "pem", "--model-name", help="triton: model name (prefix of the helper models)."
    ),
    max_batch_size: int = opt.int_option(
        4, "--max-batch-size", "triton: dynamic batching limit (graphs with a dynamic batch axis).", 1, 1024
    ),
    instances: int = opt.int_option(1, "--instances", "triton: instance-group count per model.", 1, 64),
) -> None:
    """Package an exported artifact for a consumer: Triton repository, DeepStream nvinfer config or
    Isaac ROS bindings + parameters (graph ends edited, never re-exported; see the README)."""
    from export.consumers import PackageError, PackageOptions, package_artifact
    from export.progress import ConsoleProgress

    options = PackageOptions(
        consumer, model_name=model_name, max_batch_size=max_batch_size, instances=instances
    )
    try:
        with ConsoleProgress() as progress:
            bundle = package_artifact(
                artifact, out, options, progress=progress, exist_ok=exist_ok, overwrite=overwrite
            )
    except PackageError as exc:
        _fail(str(exc))
    typer.echo(bundle.summary())


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
    # The graph's own precision decides the typing (runtime.tools.engine_build, same as pem-deploy build).
    build_engine(onnx_file, engine_path, EngineOptions(precision=precision))  # type: ignore[arg-type]
    return engine_path


def calibrate_command(
    checkpoint: opt.Checkpoint = None,
    preset: opt.Preset = None,
    data: str = typer.Option(
        "synthetic",
        "--calib-data",
        "--data",
        help="Calibration images: Cityscapes folder (leftImg8bit/train), image folder or 'synthetic' "
        "(the default model's training set; give your own images for your model).",
    ),
    out: str = opt.folder_option(
        ..., "--out", "Output folder: NAME.onnx/.json (INT8), NAME.cache, accuracy.json/.md."
    ),
    exist_ok: bool = opt.exist_ok_option(
        "Allow an --out folder holding other files (ours are added beside them)."
    ),
    overwrite: bool = opt.overwrite_option("Replace files of those names that pem-deploy did not write."),
    method: opt.CalibMethod = "percentile",
    num_images: opt.CalibImages = 200,
    calib_seed: int = opt.int_option(0, "--calib-seed", "Seed of the image sample.", 0),
    percentile: float = opt.float_option(
        99.99, "--percentile", "Percentile of |x| for --calib-method percentile.", opt.POSITIVE_PERCENT
    ),
    target: str = typer.Option(
        None,
        "--target",
        "--layout",
        help="Runtime the Q/DQ layout is for: onnxruntime | tensorrt (default: onnxruntime; "
        "TensorRT engines need tensorrt). --layout is an alias.",
    ),
    max_drop: float = opt.float_option(
        None,
        "--max-drop",
        "Accuracy-aware: keep sensitive layers float until the mIoU drop <= POINTS.",
        opt.PERCENT,
    ),
    eval_data: str = typer.Option(
        None, "--eval-data", help="Labelled data for the report (default: --data)."
    ),
    eval_split: str = opt.split_option("val", "--eval-split", "Held-out split for the report and --max-drop"),
    eval_limit: int = opt.int_option(None, "--eval-limit", "Evaluate at most N images.", 1),
    report: bool = typer.Option(True, "--report/--no-report", help="FP32/FP16/INT8 accuracy report."),
    head: opt.Head = None,
    height: opt.Height = None,
    width: opt.Width = None,
    name: opt.ArtifactName = "model",
    seed: opt.WeightSeed = 0,
    trt_version: str = typer.Option("10.3.0", "--trt-version", help="TensorRT version in the cache header."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Where calibration caches are kept for reuse."),
    calib_cache: str = typer.Option(
        None, "--calib-cache", help="Reuse this TensorRT cache (skip calibration)."
    ),
    reuse: bool = typer.Option(
        True, "--reuse/--no-reuse", help="Reuse a cache of the same model + data + method."
    ),
    threads: opt.Threads = 1,
) -> None:
    """INT8 calibration: Q/DQ INT8 ONNX, TensorRT calibration cache, FP32/FP16/INT8 accuracy report."""
    prepare_eager_torch(threads)
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
                exist_ok=exist_ok,
                overwrite=overwrite,
            )
    except ExportError as exc:  # CalibrationError is an ExportError
        _fail(str(exc))
    typer.echo(outcome.summary())


def check_command(
    artifact: str = typer.Argument(
        ..., help="The exported .onnx (sidecar beside it), its .json or its folder."
    ),
    preset: str = typer.Option(
        None, "--preset", help="Compare with this preset instead of the sidecar's source."
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Compare with this checkpoint instead."),
    image: opt.CompareImages = None,
    noise: opt.CompareNoise = 0,
    scenes: opt.CompareScenes = 4,
    seed: int = opt.int_option(0, "--seed", "Seed of the generated inputs.", 0),
    emulate: bool = typer.Option(
        None, "--emulate-fp16/--no-emulate-fp16", help="Also run the FP16-emulated graph (default: for fp16)."
    ),
    max_rel: opt.MaxRelError = None,
    min_agreement: float = opt.float_option(
        None,
        "--min-agreement",
        "Minimum label agreement on confident pixels (default: the precision's policy).",
        opt.SHARE,
    ),
    min_miou: float = opt.float_option(
        None, "--min-miou", "Minimum mIoU between the predictions.", opt.SHARE
    ),
    threads: opt.Threads = 1,
) -> None:
    """Compare an exported model with PyTorch under the shared parity policy (as verify does).

    Exit code 0 when the policy holds, 1 when not (FAIL), 2 on bad arguments or files.
    """
    from export.check import check_artifact
    from runtime.tools.compare import policy_for

    prepare_eager_torch(threads)
    policy = None
    if any(v is not None for v in (max_rel, min_agreement, min_miou)):
        from runtime.core.artifact import load_artifact

        policy = policy_for(load_artifact(artifact).precision).with_overrides(
            max_relative_error=max_rel, min_confident_agreement=min_agreement, min_miou=min_miou
        )
    result = check_artifact(
        artifact,
        preset=preset,
        checkpoint=checkpoint,
        images=_image_files(image or ()),
        noise=noise,
        scenes=scenes,
        seed=seed,
        emulate=emulate,
        policy=policy,
        threads=threads,
    )
    typer.echo(result.summary())
    if not result.passed:
        raise typer.Exit(code=1)


def _image_files(given: list[str]) -> list[str]:
    """``--images`` entries with each folder replaced by its images (recursively), as verify reads."""
    from pathlib import Path

    from runtime.io.images import list_images

    files: list[str] = []
    for entry in given:
        if Path(entry).is_dir():
            files.extend(str(path) for path in list_images(entry))
        else:
            files.append(entry)
    return files

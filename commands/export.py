"""Export commands: ``export``, ``calibrate``, ``check`` (delegate to ``export`` / ``calib``)."""

# ruff: noqa: UP045  (typer reads the option groups' annotations at run time: Optional for Python 3.10)

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import typer

from commands import groups
from commands import options as opt
from commands.common import prepare_eager_torch
from contract.vocabulary import PRECISIONS

if TYPE_CHECKING:
    from calib.calibrate import CalibrationConfig, Int8Calibrator
    from calib.int8 import Int8Options
    from export.pipeline import ExportOptions, ExportResult

CHOOSE_ONE_OF = "{flag} {value}: choose one of {allowed}"  # export.pipeline.ExportOptions' wording
FORMAT_HELP = "onnx | engine (also build a TensorRT engine; needs TensorRT and a GPU)."
FORMAT_MESSAGE = "{flag} {value}: choose onnx or engine"
EXPORT_OUTPUT = opt.OutputFlags(
    "Output folder for NAME.onnx + NAME.json.",
    "Allow an --out folder holding other files (NAME.onnx / NAME.json are added beside them).",
    "Replace a NAME.onnx / NAME.json in --out that pem-deploy did not write (its own are replaced).",
)
PACKAGE_OUTPUT = opt.OutputFlags(
    "Folder for the bundle (new, or written by pem-deploy).",
    "Allow an --out folder holding other files (the bundle's files are added beside them).",
    "Replace a bundle file in --out that pem-deploy did not write (its own are replaced).",
)
CALIBRATE_OUTPUT = opt.OutputFlags(
    "Output folder: NAME.onnx/.json (INT8), NAME.cache, accuracy.json/.md.",
    "Allow an --out folder holding other files (ours are added beside them).",
    "Replace files of those names that pem-deploy did not write.",
)


ExportOutput = EXPORT_OUTPUT.group("ExportOutput")


@dataclass(frozen=True)
class ExportFlags:
    """The graph ``export`` writes (``export.pipeline.ExportOptions`` less the output flags)."""

    precision: str = groups.declared(
        opt.choice_option(
            "fp32", "--precision", "fp32 | fp16 | int8 (int8: calibration).", PRECISIONS, CHOOSE_ONE_OF
        )
    )
    head: opt.Head = None
    dynamic: bool = groups.option(False, "--dynamic", help="Dynamic batch, height and width.")
    batch: int = groups.declared(opt.int_option(1, "--batch", "Static batch size.", 1, 1024))
    deform_impl: str = groups.option(
        "native", "--deform-impl", help="native (ONNX DeformConv) | decomposed (standard ops only)."
    )
    preprocess: str = groups.option(
        "none",
        "--preprocess",
        help="none (normalised input) | normalize (0-255 float) | uint8 (0-255 uint8).",
    )
    opset: int = groups.option(19, "--opset", help="ONNX opset (19-22).")
    simplifier: str = groups.option("onnxslim", "--simplifier", help="onnxslim | onnxsim | none.")
    exporter: str = groups.option("dynamo", "--exporter", help="dynamo | torchscript (fallback).")
    name: opt.ArtifactName = "model"
    out_format: str = groups.declared(
        opt.choice_option("onnx", "--format", FORMAT_HELP, ("onnx", "engine"), FORMAT_MESSAGE)
    )

    def options(self, output: Any) -> ExportOptions:
        """The API's options: these flags and the output group's."""
        from export.pipeline import ExportOptions

        return ExportOptions(
            out_dir=output.out, name=self.name, head=self.head, precision=self.precision,
            deform_impl=self.deform_impl, preprocess=self.preprocess, dynamic=self.dynamic,
            batch=self.batch, opset=self.opset, simplifier=self.simplifier, exporter=self.exporter,
            exist_ok=output.exist_ok, overwrite=output.overwrite, engine=self.out_format == "engine",
        )  # fmt: skip


@dataclass(frozen=True)
class Int8ExportFlags:
    """``export --precision int8``'s own calibration flags (beside :class:`opt.CalibFlags`)."""

    calib_data: Optional[str] = groups.option(
        None,
        "--calib-data",
        "--data",
        help="int8: calibration images: Cityscapes folder, image folder or 'synthetic' (default: "
        "synthetic, the default model's training set; give your own images for your model).",
    )
    calib_cache: Optional[str] = groups.option(
        None, "--calib-cache", help="int8: reuse this TensorRT calibration cache instead of calibrating."
    )
    target: Optional[str] = groups.option(
        None,
        "--target",
        "--layout",
        help="int8: runtime the Q/DQ layout is for: onnxruntime | tensorrt (default: tensorrt with "
        "--format engine, else onnxruntime). --layout is an alias.",
    )

    def options(self, sample: opt.CalibFlags) -> Int8Options:
        """The API's INT8 options: these flags and the shared sampling flags."""
        from calib.int8 import Int8Options

        method = sample.calib_method
        return Int8Options(self.calib_data, method, sample.calib_images, self.calib_cache, self.target)  # type: ignore[arg-type]


@groups.with_groups
def export_command(
    source: opt.SourceFlags,
    output: ExportOutput,  # type: ignore[valid-type]
    export: ExportFlags,
    sample: opt.CalibFlags,
    int8: Int8ExportFlags,
    lint_table: bool = typer.Option(False, "--lint-table", help="Print the per-op TensorRT table."),
    consumer: str = typer.Option(
        None,
        "--for",
        help="Also package the artifact for triton | deepstream | isaac-ros into OUT/NAME-CONSUMER "
        "(the same as `pem-deploy package`).",
    ),
) -> None:
    """Export to ONNX: DeformConv translation of the custom op, heads, FP16, metadata, TensorRT lint."""
    from calib.int8 import int8_quantizer
    from export.consumers import PackageOptions, package_export
    from export.pipeline import export_artifact
    from export.progress import ConsoleProgress
    from export.source import load_source

    package = PackageOptions(consumer) if consumer else None
    if package is not None:
        package.validate()  # before the slow export
    prepare_eager_torch(None)
    options = export.options(output)
    options.validate()
    quantizer = int8_quantizer(export.precision, int8.options(sample), engine=options.engine)
    with ConsoleProgress() as progress:
        progress("loading the model")
        model = load_source(**dataclasses.asdict(source), batch=export.batch)
        result = export_artifact(model, options, progress=progress, int8_quantizer=quantizer)
    _print_export(result, quantizer, lint_table)
    if package is not None:
        typer.echo(package_export(result, options, package).summary())


def _print_export(result: ExportResult, quantizer: Int8Calibrator | None, lint_table: bool) -> None:
    """The export's summary, then what calibration did and where the engine went (if they ran)."""
    typer.echo(result.summary(lint_table=lint_table))
    calibrated = quantizer.result if quantizer is not None else None
    if calibrated is not None:
        ranges = calibrated.ranges
        how = "reused" if ranges.reused else f"{ranges.images} images, {ranges.seconds:.1f} s"
        typer.echo(f"calibration  {how}; TensorRT cache {ranges.cache_path}")
    if result.engine_path is not None:
        typer.echo(f"engine       {result.engine_path}")


def package_command(
    artifact: str = typer.Argument(
        ..., help="Exported artifact: NAME.onnx / NAME.engine, its sidecar or folder."
    ),
    consumer: str = typer.Option(..., "--for", help="triton | deepstream | isaac-ros."),
    out: str = PACKAGE_OUTPUT.out(),
    exist_ok: bool = PACKAGE_OUTPUT.exist_ok(),
    overwrite: bool = PACKAGE_OUTPUT.overwrite(),
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
    from export.consumers import PackageOptions, package_artifact
    from export.progress import ConsoleProgress

    options = PackageOptions(
        consumer, model_name=model_name, max_batch_size=max_batch_size, instances=instances
    )
    with ConsoleProgress() as progress:
        bundle = package_artifact(
            artifact, out, options, progress=progress, exist_ok=exist_ok, overwrite=overwrite
        )
    typer.echo(bundle.summary())


CalibrateOutput = CALIBRATE_OUTPUT.group("CalibrateOutput")


@dataclass(frozen=True)
class CalibrationFlags:
    """``calibrate``'s images, ranges and caches (``calib.calibrate.CalibrationConfig``)."""

    data: str = groups.option(
        "synthetic",
        "--calib-data",
        "--data",
        help="Calibration images: Cityscapes folder (leftImg8bit/train), image folder or 'synthetic' "
        "(the default model's training set; give your own images for your model).",
    )
    calib_seed: int = groups.declared(opt.int_option(0, "--calib-seed", "Seed of the image sample.", 0))
    percentile: float = groups.declared(
        opt.float_option(
            99.99, "--percentile", "Percentile of |x| for --calib-method percentile.", opt.POSITIVE_PERCENT
        )
    )
    trt_version: str = groups.option("10.3.0", "--trt-version", help="TensorRT version in the cache header.")
    cache_dir: Optional[str] = groups.option(
        None, "--cache-dir", help="Where calibration caches are kept for reuse."
    )
    calib_cache: Optional[str] = groups.option(
        None, "--calib-cache", help="Reuse this TensorRT cache (skip calibration)."
    )
    reuse: bool = groups.option(
        True, "--reuse/--no-reuse", help="Reuse a cache of the same model + data + method."
    )

    def config(self, sample: opt.CalibFlags, threads: int) -> CalibrationConfig:
        """The API's calibration config: these flags, the shared sampling flags and ``threads``."""
        from calib.calibrate import CalibrationConfig

        return CalibrationConfig(
            data=self.data, method=sample.calib_method, num_images=sample.calib_images,  # type: ignore[arg-type]
            seed=self.calib_seed, percentile=self.percentile, trt_version=self.trt_version,
            cache_dir=self.cache_dir, cache_file=self.calib_cache, reuse=self.reuse, threads=threads,
        )  # fmt: skip


@dataclass(frozen=True)
class AccuracyFlags:
    """``calibrate``'s accuracy report and search (``calib.run.run_calibration``'s keywords)."""

    max_drop: Optional[float] = groups.declared(
        opt.float_option(
            None,
            "--max-drop",
            "Accuracy-aware: keep sensitive layers float until the mIoU drop <= POINTS.",
            opt.PERCENT,
        )
    )
    eval_data: Optional[str] = groups.option(
        None, "--eval-data", help="Labelled data for the report (default: --data)."
    )
    eval_split: str = groups.declared(
        opt.split_option("val", "--eval-split", "Held-out split for the report and --max-drop")
    )
    eval_limit: Optional[int] = groups.declared(
        opt.int_option(None, "--eval-limit", "Evaluate at most N images.", 1)
    )
    report: bool = groups.option(True, "--report/--no-report", help="FP32/FP16/INT8 accuracy report.")


@groups.with_groups
def calibrate_command(
    source: opt.SourceFlags,
    output: CalibrateOutput,  # type: ignore[valid-type]
    calibration: CalibrationFlags,
    sample: opt.CalibFlags,
    accuracy: AccuracyFlags,
    target: str = typer.Option(
        None,
        "--target",
        "--layout",
        help="Runtime the Q/DQ layout is for: onnxruntime | tensorrt (default: onnxruntime; "
        "TensorRT engines need tensorrt). --layout is an alias.",
    ),
    head: opt.Head = None,
    name: opt.ArtifactName = "model",
    threads: opt.Threads = 1,
) -> None:
    """INT8 calibration: Q/DQ INT8 ONNX, TensorRT calibration cache, FP32/FP16/INT8 accuracy report."""
    prepare_eager_torch(threads)
    from calib.graph import check_target, default_target
    from calib.run import run_calibration
    from export.progress import ConsoleProgress
    from export.source import load_source

    config = calibration.config(sample, threads)
    config.validate()
    layout = check_target(target or default_target())
    with ConsoleProgress() as progress:
        progress("loading the model")
        model = load_source(**dataclasses.asdict(source))
        outcome = run_calibration(
            model, output.out, config, head=head, name=name, layout=layout, progress=progress,
            exist_ok=output.exist_ok, overwrite=output.overwrite, **dataclasses.asdict(accuracy),
        )  # fmt: skip
    typer.echo(outcome.summary())


@groups.with_groups
def check_command(
    artifact: str = typer.Argument(
        ..., help="The exported .onnx (sidecar beside it), its .json or its folder."
    ),
    *,
    preset: str = typer.Option(
        None, "--preset", help="Compare with this preset instead of the sidecar's source."
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Compare with this checkpoint instead."),
    image: opt.CompareImages = None,
    comparison: opt.ComparisonFlags,
    seed: int = opt.int_option(0, "--seed", "Seed of the generated inputs.", 0),
    emulate: bool = typer.Option(
        None, "--emulate-fp16/--no-emulate-fp16", help="Also run the FP16-emulated graph (default: for fp16)."
    ),
    threads: opt.Threads = 1,
) -> None:
    """Compare an exported model with PyTorch under the shared parity policy (as verify does).

    Exit code 0 when the policy holds, 1 when not (FAIL), 2 on bad arguments or files.
    """
    from export.check import check_artifact

    prepare_eager_torch(threads)
    result = check_artifact(
        artifact, preset=preset, checkpoint=checkpoint, images=_image_files(image or ()),
        noise=comparison.noise, scenes=comparison.scenes, seed=seed, emulate=emulate,
        policy=comparison.policy(artifact), threads=threads,
    )  # fmt: skip
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

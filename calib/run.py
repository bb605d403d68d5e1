"""The ``pem-deploy calibrate`` workflow: INT8 artifact + TensorRT cache + accuracy report.

Writes into ``out_dir``:

- ``<name>.onnx`` + ``<name>.json``: the Q/DQ INT8 artifact (export's contract, ``precision: int8``);
- ``<name>.cache``: the TensorRT calibration cache (text format) for the TensorRT 10 implicit
  INT8 path of the FP32 artifact of the same model and size (tensor names are those of the FP32
  export);
- ``accuracy.json`` + ``accuracy.md`` (unless ``report=False``): FP32 vs FP16 vs INT8 mIoU / PQ
  and per-class deltas on held-out images, plus what calibration did.

Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calib.calibrate import CalibrationConfig, Int8Calibrator, Int8Result
from calib.errors import CalibrationError
from calib.graph import dequantized_consumers
from calib.trt_cache import write_cache
from contract.fs import atomic_write_bytes
from export.metadata import ArtifactWriter
from export.pipeline import ExportOptions, ExportResult, Progress, export_artifact
from export.source import ModelSource, source_files


@dataclass
class CalibrateOutcome:
    """What :func:`run_calibration` wrote and measured."""

    export: ExportResult
    int8: Int8Result
    cache_path: Path
    report: dict[str, Any] | None = None
    report_paths: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        r = self.int8.ranges
        how = "reused cache" if r.reused else f"{r.images} images in {r.seconds:.1f} s"
        total = len(self.int8.targets)
        quantized = total - len(self.int8.excluded)
        if self.int8.int8_model is not None:  # what the graph really runs in INT8 (the layout may skip some)
            names = {t.node for t in self.int8.targets}
            quantized = len({n.name for n in dequantized_consumers(self.int8.int8_model)} & names)
        by_layout = total - quantized - len(self.int8.excluded)
        lines = [
            self.export.summary(),
            f"calibration  {how}; {quantized}/{total} nodes INT8"
            + (f", {len(self.int8.excluded)} kept float (accuracy-aware)" if self.int8.excluded else "")
            + (f", {by_layout} kept float where INT8 does not pay (layout)" if by_layout > 0 else ""),
            f"trt cache    {self.cache_path}  ({len(r.cache.scales)} tensors, TRT-{r.cache.version})",
        ]
        if self.report is not None:
            for name, entry in self.report["precisions"].items():
                pq = f", PQ {entry['PQ']:.2f}" if "PQ" in entry else ""
                lines.append(
                    f"accuracy     {name:<5} mIoU {entry['mIoU']:.2f} (drop {entry['mIoU_drop']:+.2f}){pq}"
                )
            lines.append("report       " + ", ".join(str(p) for p in self.report_paths))
        if self.seconds:
            lines.append(f"total time   {self.seconds:.1f} s (export, calibration and checks)")
        return "\n".join(lines)


def run_calibration(
    source: ModelSource,
    out_dir: str | os.PathLike[str],
    config: CalibrationConfig,
    *,
    head: str | None = None,
    name: str = "model",
    layout: str = "tensorrt",
    max_drop: float | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    eval_split: str = "val",
    eval_limit: int | None = None,
    report: bool = True,
    progress: Progress | None = None,
    exist_ok: bool = False,
    overwrite: bool = False,
) -> CalibrateOutcome:
    """Calibrate ``source`` and write the INT8 artifact, the TensorRT cache and the report.

    All-or-nothing, by the rules of :mod:`contract.output`: everything is staged and moved in at
    the end, so a failure (or a kill) leaves ``out_dir`` as it was. A folder holding other files
    needs ``exist_ok`` (ours are added beside them), a file of our names there that pem-deploy
    did not write needs ``overwrite``; the checkpoint and the calibration data are never written.
    """
    say = progress or (lambda message: None)
    start = time.perf_counter()
    if report or max_drop is not None:  # fail before the slow part when there are no labels
        from calib.accuracy import open_eval_dataset

        open_eval_dataset(eval_data or config.data, eval_split, source.config)
    calibrator = Int8Calibrator(
        config,
        max_drop=max_drop,
        eval_data=eval_data,
        eval_split=eval_split,
        eval_limit=eval_limit,
        layout=layout,
        progress=progress,
    )
    final_dir = Path(out_dir)
    names = [f"{name}.onnx", f"{name}.json", f"{name}.cache"]
    if report:
        names += ["accuracy.json", "accuracy.md"]
    read = (*source_files(source), *(Path(p) for p in (config.data, eval_data) if _is_path(p)))
    writer = ArtifactWriter(
        final_dir, names=tuple(names), exist_ok=exist_ok, overwrite=overwrite, inputs=read
    )
    writer.check()  # before the calibration
    with writer:
        inner = writer.staging_dir / ".export"  # the exporter's own (atomic) folder, inside the staging
        options = ExportOptions(out_dir=inner, name=name, head=head, precision="int8")
        exported = export_artifact(source, options, progress=progress, int8_quantizer=calibrator)
        result = calibrator.result
        if result is None:  # pragma: no cover - export_artifact always calls the quantizer for int8
            raise CalibrationError("the export did not run the calibration")
        for file in (exported.onnx_path, exported.sidecar_path):
            os.replace(file, writer.stage_path(file.name))  # same file system: inside the staging
        write_cache(writer.stage_path(f"{name}.cache"), result.ranges.cache)
        cache_path = final_dir / f"{name}.cache"
        outcome = CalibrateOutcome(exported, result, cache_path)
        if report:
            say("evaluating FP32 / FP16 / INT8 on held-out images")
            outcome.report = accuracy_comparison(
                source, result, eval_data or config.data, eval_split, eval_limit, config.threads, layout
            )
            outcome.report["calibration"] = calibration_summary(config, result, layout, cache_path)
            from calib.accuracy import report_markdown

            payload = (json.dumps(outcome.report, indent=2) + "\n").encode("utf-8")
            atomic_write_bytes(writer.stage_path("accuracy.json"), payload)
            atomic_write_bytes(
                writer.stage_path("accuracy.md"), report_markdown(outcome.report).encode("utf-8")
            )
            outcome.report_paths = [final_dir / "accuracy.json", final_dir / "accuracy.md"]
        writer.commit()
    exported.onnx_path = final_dir / exported.onnx_path.name
    exported.sidecar_path = final_dir / exported.sidecar_path.name
    outcome.seconds = time.perf_counter() - start
    return outcome


def _is_path(data: object) -> bool:
    """Whether a ``--data`` value names a folder here (not 'synthetic')."""
    return isinstance(data, (str, os.PathLike)) and os.path.exists(data)


def calibration_summary(
    config: CalibrationConfig, result: Int8Result, layout: str, cache_path: Path
) -> dict[str, Any]:
    r = result.ranges
    return {
        "data": str(config.data),
        "split": config.split,
        "method": config.method,
        "percentile": config.percentile if config.method == "percentile" else None,
        "images": r.images,
        "seconds": round(r.seconds, 2),
        "reused_cache": r.reused,
        "cache": str(cache_path),
        "layout": layout,
        "int8_nodes": [t.node for t in result.targets if t.node not in set(result.excluded)],
        "float_nodes_accuracy_aware": result.excluded,
        "sensitivity": result.sensitivity,
        "tuning": result.tuning,
    }


def accuracy_comparison(
    source: ModelSource,
    result: Int8Result,
    eval_data: str | os.PathLike[str],
    eval_split: str = "val",
    limit: int | None = None,
    threads: int = 1,
    layout: str = "tensorrt",
) -> dict[str, Any]:
    """FP32 vs FP16 vs INT8 of the model part on ``eval_split`` (:func:`calib.accuracy.accuracy_report`)."""
    from calib.accuracy import accuracy_report, evaluate_onnx, open_eval_dataset
    from calib.calibrate import input_format
    from export.fp16 import convert_to_fp16

    assert result.fp32_model is not None and result.int8_model is not None
    config = source.config
    dataset = open_eval_dataset(eval_data, eval_split, config)
    fmt = input_format(result.fp32_model, "none", tuple(config.input_size))  # type: ignore[arg-type]
    fp16, _ = convert_to_fp16(result.fp32_model)
    results = {
        "fp32": evaluate_onnx(result.fp32_model, config, fmt, dataset, limit=limit, threads=threads),
        "fp16": evaluate_onnx(fp16, config, fmt, dataset, limit=limit, threads=threads),
        "int8": evaluate_onnx(result.int8_model, config, fmt, dataset, limit=limit, threads=threads),
    }
    report = accuracy_report(results)
    report["eval"] = {"data": str(eval_data), "split": eval_split, "layout": layout}
    report["parity"] = parity_verdicts(
        result.fp32_model, {"fp16": fp16, "int8": result.int8_model}, config, fmt, threads
    )
    return report


def parity_verdicts(
    fp32: Any, others: dict[str, Any], config: Any, fmt: Any, threads: int = 1
) -> dict[str, dict[str, Any]]:
    """FP16 / INT8 model parts vs FP32 on the comparison engine's default images, under the shared
    policy (:mod:`runtime.tools.compare`, as ``check`` / ``verify`` / the demo judge them)."""
    from calib.quantize import model_session
    from runtime.core.preprocess import Preprocessor
    from runtime.tools.compare import HeadSpec, compare_predictions, comparison_images, policy_for, predict

    pre = Preprocessor(fmt)
    images = comparison_images(fmt.height, fmt.width)
    spec = HeadSpec("raw", config.num_classes, fmt.height, fmt.width)
    meta = {"head": "raw", "input_size": [fmt.height, fmt.width], "num_classes": config.num_classes}

    def run(model: Any, precision: str) -> Any:
        session = model_session(model, threads)
        name = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        return predict(
            lambda image: dict(zip(names, session.run(None, {name: pre([image])[0]}))),
            images,
            {**meta, "precision": precision, "model_file": precision, "backend": "onnxruntime"},
        )

    reference = run(fp32, "fp32")
    verdicts: dict[str, dict[str, Any]] = {}
    for precision, model in others.items():
        report = compare_predictions(run(model, precision), reference, spec, policy_for(precision))
        verdicts[precision] = {
            "passed": report.passed,
            "failures": report.failures,
            "policy": report.policy.describe("raw"),
            "criteria": [
                {"what": c.what, "value": c.value, "limit": c.limit, "margin": c.margin}
                for c in report.criteria
            ],
        }
    return verdicts

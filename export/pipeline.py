"""The export pipeline: composes the single-purpose steps of this package.

``export_graph`` builds the final ONNX model in memory (torch -> ONNX for the model and for the
head's post-processing, simplification, FP16 / INT8 of the model part, joining, validation);
``export_artifact`` adds metadata, the TensorRT lint and writes ``<name>.onnx`` + ``<name>.json``
atomically. INT8 is delegated to a quantizer supplied by the caller (the calibration package
plugs in there; export never imports it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx
import torch

from contract.sidecar import Sidecar
from contract.sidecar_records import Provenance
from contract.vocabulary import DEFORM_IMPLS, HEADS, PRECISIONS, PREPROCESS_MODES
from export.compose import attach_postprocess
from export.decompose import with_decomposed_deform_conv
from export.errors import ExportError
from export.fp16 import Fp16Report, convert_to_fp16
from export.heads import (
    HEAD_OUTPUTS,
    INPUT_NAME,
    RAW_OUTPUTS,
    RawModel,
    build_postprocess,
    output_names,
)
from export.metadata import ArtifactWriter, GraphInterface, build_sidecar, embed_metadata, write_artifact
from export.onnx_export import EXPORTERS, DynamicDim, export_to_onnx
from export.simplify import SIMPLIFIERS, default_opset, finalize, op_counts, rewrite_integer_clip, simplify
from export.source import ModelSource, source_files, source_record
from export.symbolics import check_opset
from export.trt_lint import LintReport, lint_model

INT8_UNAVAILABLE = (
    "--precision int8: INT8 needs calibration images and the calibration step (`pem-deploy calibrate`), "
    "which is not available yet; export fp32 or fp16"
)

Progress = Callable[[str], None]


class Int8Quantizer(Protocol):
    """What the calibration package provides: FP32 model graph -> Q/DQ INT8 model graph.

    Called with the simplified FP32 graph of the model part (input ``images``, outputs
    ``pred_logits``/``pred_masks``) and the export context; the post-processing head is attached
    afterwards and stays FP32.
    """

    def __call__(self, model: onnx.ModelProto, context: ExportContext) -> onnx.ModelProto: ...


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``pem-deploy export`` can be told (see the CLI help for each flag)."""

    out_dir: str | Path = "."
    name: str = "model"
    head: str | None = None  # default: the model's task (semantic or panoptic)
    precision: str = "fp32"
    deform_impl: str = "native"
    preprocess: str = "none"
    dynamic: bool = False
    batch: int = 1
    opset: int = 19
    simplifier: str = "onnxslim"
    exporter: str = "dynamo"
    exist_ok: bool = False  # out_dir may hold other files (contract/output.py)
    overwrite: bool = False  # replace a NAME.onnx / NAME.json there that pem-deploy did not write
    engine: bool = False  # also build NAME.PRECISION.engine with TensorRT (export.tensorrt_engine)

    def validate(self) -> None:
        """Raise :class:`ExportError` naming the first bad option."""
        choices = (
            ("--head", self.head, HEADS),
            ("--precision", self.precision, PRECISIONS),
            ("--deform-impl", self.deform_impl, DEFORM_IMPLS),
            ("--preprocess", self.preprocess, PREPROCESS_MODES),
            ("--simplifier", self.simplifier, SIMPLIFIERS),
            ("--exporter", self.exporter, EXPORTERS),
        )
        for flag, value, allowed in choices:
            if value is not None and value not in allowed:
                raise ExportError(f"{flag} {value}: choose one of {', '.join(allowed)}")
        check_opset(self.opset)
        if self.batch < 1:
            raise ExportError(f"--batch {self.batch}: must be >= 1")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ExportError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-' only")
        if self.dynamic and self.exporter == "torchscript":
            raise ExportError("--dynamic needs --exporter dynamo (TorchScript traces sizes as constants)")


@dataclass
class ExportContext:
    """What the steps know about the export in progress (handed to an INT8 quantizer)."""

    source: ModelSource
    options: ExportOptions
    head: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    """The written artifact and what happened on the way."""

    onnx_path: Path
    sidecar_path: Path
    spec: Sidecar
    op_counts: dict[str, int]
    lint: LintReport
    fp16: Fp16Report | None
    timings: dict[str, float]
    engine_path: Path | None = None  # ExportOptions.engine: the TensorRT engine built from the ONNX

    def summary(self, lint_table: bool = False) -> str:
        """Human-readable report (paths, input/outputs, graph, FP16 plan, TensorRT lint, time)."""
        sc = self.spec
        shape = "(" + ", ".join(str(v) for v in sc.input.shape) + ")"
        src = sc.provenance.model_source
        graph = sc.provenance.graph
        size = (sc.provenance.size_bytes or 0) / 1e6
        top = ", ".join(f"{op} {n}" for op, n in list(self.op_counts.items())[:8])
        lines = [
            f"onnx         {self.onnx_path}  ({size:.1f} MB, sha256 {(sc.provenance.sha256 or '')[:12]})",
            f"sidecar      {self.sidecar_path}",
            f"model        {src.name} ({src.weights} weights), head {sc.head}, {sc.precision}",
            f"input        {sc.input.name} {shape} {sc.input.dtype} RGB NCHW"
            + (" (normalised in the graph)" if sc.input.normalize_in_graph else ""),
            "outputs      " + ", ".join(f"{o.name} {o.dtype}" for o in sc.outputs),
            f"graph        opset {graph.opset}, IR {graph.ir_version}, {graph.nodes} nodes ({top}, ...)",
        ]
        if self.fp16 is not None:
            lines.append(f"fp16         {self.fp16.summary()}")
        lines.append(f"tensorrt     {self.lint.summary()}")
        if lint_table:
            lines.append(self.lint.table())
        lines.append(f"export time  {self.timings['total']:.1f} s")
        return "\n".join(lines)


def _raw_part(source: ModelSource, options: ExportOptions) -> tuple[onnx.ModelProto, dict[str, Any]]:
    config = source.config
    model: torch.nn.Module = source.model
    info: dict[str, Any] = {"deform_impl": options.deform_impl}
    if options.deform_impl == "decomposed":
        model, count = with_decomposed_deform_conv(model)
        info["decomposed_deform_convs"] = count
    h, w = config.input_size
    batch = 2 if options.dynamic else options.batch  # size-1 dims would be specialised by torch.export
    dtype = torch.uint8 if options.preprocess == "uint8" else torch.float32
    example = torch.zeros((batch, 3, h, w), dtype=dtype)
    q = config.transformer_decoder.num_queries
    k1 = config.num_classes + 1
    if options.dynamic:
        dynamic = [{0: DynamicDim("batch"), 2: DynamicDim("height", 32), 3: DynamicDim("width", 32)}]
        shapes: dict[str, list[int | str]] = {
            "pred_logits": ["batch", q, k1],
            "pred_masks": ["batch", q, "height/4", "width/4"],
        }
    else:
        dynamic = None
        shapes = {"pred_logits": [batch, q, k1], "pred_masks": [batch, q, h // 4, w // 4]}
    graph = export_to_onnx(
        RawModel(model, options.preprocess),
        [example],
        input_names=[INPUT_NAME],
        output_names=list(RAW_OUTPUTS),
        opset=options.opset,
        dynamic=dynamic,
        output_shapes=shapes,
        exporter=options.exporter,
    )
    return graph, info


def _post_part(source: ModelSource, options: ExportOptions, head: str) -> onnx.ModelProto:
    config = source.config
    post = build_postprocess(head, config)
    assert post is not None
    h, w = config.input_size
    q = config.transformer_decoder.num_queries
    batch = 2 if options.dynamic else options.batch
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((batch, q, config.num_classes + 1), generator=gen)
    masks = torch.randn((batch, q, h // 4, w // 4), generator=gen)
    if options.dynamic:
        dynamic = [
            {0: DynamicDim("batch")},
            {0: DynamicDim("batch"), 2: DynamicDim("height/4", 8), 3: DynamicDim("width/4", 8)},
        ]
        sizes: dict[str, int | str] = {"B": "batch", "H": "height", "W": "width"}
    else:
        dynamic = None
        sizes = {"B": batch, "H": h, "W": w}
    sizes["Q"] = q
    shapes = {spec.name: [sizes.get(s, s) for s in spec.shape] for spec in HEAD_OUTPUTS[head]}
    return export_to_onnx(
        post,
        [logits, masks],
        input_names=list(RAW_OUTPUTS),
        output_names=list(output_names(head)),
        opset=options.opset,
        dynamic=dynamic,
        output_shapes=shapes,  # type: ignore[arg-type]
        exporter=options.exporter,
    )


def export_graph(
    source: ModelSource,
    options: ExportOptions,
    *,
    progress: Progress | None = None,
    int8_quantizer: Int8Quantizer | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[onnx.ModelProto, ExportContext, Fp16Report | None]:
    """Build the final ONNX model in memory (no metadata, nothing written).

    Returns (model, context, FP16 report or ``None``). Raises :class:`ExportError`.
    """
    options.validate()
    head = options.head or source.config.task
    if options.precision == "int8" and int8_quantizer is None:
        raise ExportError(INT8_UNAVAILABLE)
    context = ExportContext(source=source, options=options, head=head)
    timings = {} if timings is None else timings
    say = progress or (lambda message: None)

    def step(name: str, message: str) -> Callable[[], None]:
        say(message)
        start = time.perf_counter()
        return lambda: timings.__setitem__(name, timings.get(name, 0.0) + time.perf_counter() - start)

    done = step("export", f"exporting the model with torch.onnx ({options.exporter}, opset {options.opset})")
    raw, info = _raw_part(source, options)
    post = _post_part(source, options, head) if head != "raw" else None
    done()
    context.info.update(info)

    if options.simplifier != "none":
        done = step("simplify", f"simplifying with {options.simplifier}")
        raw = simplify(raw, options.simplifier)
        post = simplify(post, options.simplifier) if post is not None else None
        done()

    # TensorRT compatibility rewrites (no-ops for graphs that do not need them).
    context.info["integer_clips_rewritten"] = rewrite_integer_clip(raw)

    fp16_report = None
    if options.precision == "fp16":
        done = step("fp16", "converting to FP16 (normalisations, softmax, prototype similarity kept FP32)")
        raw, fp16_report = convert_to_fp16(raw)
        done()
    elif options.precision == "int8":
        assert int8_quantizer is not None
        done = step("int8", "quantizing to INT8 (Q/DQ)")
        raw = int8_quantizer(raw, context)
        done()

    done = step("check", "checking the graph (onnx.checker, shape inference)")
    model = attach_postprocess(raw, post) if post is not None else raw
    model = finalize(model)
    counts = op_counts(model)
    if options.deform_impl == "native" and "DeformConv" not in counts:
        raise ExportError("exported graph has no DeformConv node (custom translation not applied)")
    if options.deform_impl == "decomposed" and "DeformConv" in counts:
        raise ExportError("decomposed export still contains DeformConv")
    done()
    context.info["op_counts"] = counts
    return model, context, fp16_report


def export_artifact(
    source: ModelSource,
    options: ExportOptions,
    *,
    progress: Progress | None = None,
    int8_quantizer: Int8Quantizer | None = None,
) -> ExportResult:
    """Export ``source`` as ``<out_dir>/<name>.onnx`` + ``<name>.json``, atomically.

    A failed export leaves ``out_dir`` unchanged. Raises :class:`ExportError`. With
    ``options.engine`` it also builds ``<name>.<precision>.engine`` (+ sidecar) beside the ONNX
    (:func:`export.tensorrt_engine.export_engine`; TensorRT missing: ``TensorRTUnavailableError``,
    raised before the export).
    """
    options.validate()
    if options.precision == "int8" and int8_quantizer is None:
        raise ExportError(INT8_UNAVAILABLE)
    if options.engine:
        from export.tensorrt_engine import import_tensorrt

        import_tensorrt()  # fail before the slow export when TensorRT is missing
    writer = ArtifactWriter(
        options.out_dir,
        names=(f"{options.name}.onnx", f"{options.name}.json"),
        exist_ok=options.exist_ok,
        overwrite=options.overwrite,
        inputs=source_files(source),
    )
    writer.check()  # before the slow part
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model, context, fp16_report = export_graph(
        source, options, progress=progress, int8_quantizer=int8_quantizer, timings=timings
    )
    say = progress or (lambda message: None)
    say("linting against TensorRT 10/11 and writing the artifact")
    lint = lint_model(model)
    counts = context.info["op_counts"]
    onnx_info = {
        "exporter": options.exporter,
        "simplifier": options.simplifier,
        "deform_impl": options.deform_impl,
        "dynamic": options.dynamic,
        "nodes": sum(counts.values()),
        "op_counts": counts,
    }
    fp16 = None
    if fp16_report is not None:
        fp16 = {
            "kept_fp32": "LayerNormalization, Softmax, L2-normalize, prototype similarity feeding ArgMax, "
            "index math, graph inputs/outputs, post-processing head",
            **fp16_report.to_dict(),
        }
    interface = GraphInterface(
        source.config, context.head, options.precision, options.preprocess, options.batch, options.dynamic
    )
    int8 = context.info.get("int8") if options.precision == "int8" else None
    provenance = Provenance(
        model_file=f"{options.name}.onnx",
        onnx={"opset": default_opset(model), "ir_version": model.ir_version, **onnx_info},
        fp16=fp16,
        tensorrt_lint=lint.to_dict(),
        int8=None if int8 is None else dict(int8),
        source=source_record(source.description, options.out_dir),
    )
    sidecar = build_sidecar(interface, provenance)
    embed_metadata(model, sidecar)
    with writer:
        final_sidecar = write_artifact(writer, model, sidecar, options.name)
        onnx_path, json_path = writer.commit()
    timings["total"] = time.perf_counter() - start
    engine_path = None
    if options.engine:
        from export.tensorrt_engine import export_engine

        engine_path = export_engine(onnx_path, options.precision)
    return ExportResult(
        onnx_path=onnx_path,
        sidecar_path=json_path,
        spec=final_sidecar,
        op_counts=counts,
        lint=lint,
        fp16=fp16_report,
        timings=timings,
        engine_path=engine_path,
    )

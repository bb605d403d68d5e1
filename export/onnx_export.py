"""PyTorch module -> in-memory ONNX ``ModelProto`` (one job: run the exporter).

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is the default; our one custom op (the
deformable convolution) is translated by :mod:`export.symbolics`. The deprecated TorchScript
exporter is a fallback for older torch (static shapes only). Exporter chatter (prints, warnings,
log lines) is captured; on failure its last line is part of the :class:`ExportError` message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import Tensor, nn

from export.errors import ExportError
from export.symbolics import check_opset, custom_translation_table, torchscript_symbolics

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")


@dataclass(frozen=True)
class DynamicDim:
    """A dynamic axis: its name in the ONNX graph and the multiple its size must be (1 = any)."""

    name: str
    multiple: int = 1
    max_blocks: int = 4096


# Per input, per axis: the dynamic dims (static axes are left out).
DynamicSpec = Sequence[dict[int, DynamicDim]]


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Capture the exporters' prints, warnings and log records."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(buffer),
            contextlib.redirect_stderr(buffer),
        ):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _torch_dynamic_shapes(dynamic: DynamicSpec, example_inputs: Sequence[Tensor]) -> tuple[dict, ...]:
    from torch.export import Dim

    dims: dict[str, object] = {}
    spec = []
    for axes, example in zip(dynamic, example_inputs):
        entry: dict[int, object] = {}
        for axis, dim in axes.items():
            if dim.multiple == 1:
                if dim.name not in dims:
                    dims[dim.name] = Dim(dim.name.replace("/", "_"), min=1, max=dim.max_blocks)
                entry[axis] = dims[dim.name]
            else:
                if example.shape[axis] % dim.multiple:
                    raise ExportError(
                        f"example input size {example.shape[axis]} on axis {axis} is not a multiple of "
                        f"{dim.multiple}"
                    )
                key = f"{dim.name}_blocks"
                if key not in dims:
                    dims[key] = Dim(key.replace("/", "_"), min=1, max=dim.max_blocks)
                entry[axis] = dim.multiple * dims[key]  # type: ignore[operator]
        spec.append(entry)
    return tuple(spec)


def _name_io_dims(
    model: onnx.ModelProto,
    input_names: Sequence[str],
    output_shapes: dict[str, Sequence[int | str]] | None,
    dynamic: DynamicSpec | None,
) -> None:
    """Give the graph inputs/outputs readable symbolic dims (``batch``, ``height``, ...)."""
    if dynamic:
        for value in model.graph.input:
            if value.name not in input_names:
                continue
            axes = dynamic[list(input_names).index(value.name)]
            for axis, dim in axes.items():
                value.type.tensor_type.shape.dim[axis].dim_param = dim.name
    for value in model.graph.output:
        if not output_shapes or value.name not in output_shapes:
            continue
        template = output_shapes[value.name]
        shape = value.type.tensor_type.shape
        if len(shape.dim) != len(template):
            continue
        for dim, want in zip(shape.dim, template):
            if isinstance(want, int):
                if dim.HasField("dim_value") and dim.dim_value != want:
                    raise ExportError(f"output {value.name}: exported dim {dim.dim_value} != expected {want}")
                dim.dim_value = want
            elif not dim.HasField("dim_value"):
                dim.dim_param = want


def export_to_onnx(
    module: nn.Module,
    example_inputs: Sequence[Tensor],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = 19,
    dynamic: DynamicSpec | None = None,
    output_shapes: dict[str, Sequence[int | str]] | None = None,
    exporter: str = "dynamo",
) -> onnx.ModelProto:
    """Export ``module`` (in eval mode) and return the ONNX model.

    Args:
        module: the module to export; called as ``module(*example_inputs)``.
        example_inputs: one tensor per graph input.
        input_names, output_names: graph input/output names.
        opset: ONNX opset (19..22).
        dynamic: per input, the dynamic axes (``None``: all static).
        output_shapes: optional symbolic shapes written onto the graph outputs (e.g. ``["batch", 20,
            "height/4", "width/4"]``).
        exporter: ``dynamo`` (default) or ``torchscript`` (static shapes only).

    Raises:
        ExportError: on a bad option or when the exporter fails (message: the exporter's last line).
    """
    check_opset(opset)
    if exporter not in EXPORTERS:
        raise ExportError(f"--exporter {exporter}: choose one of {', '.join(EXPORTERS)}")
    module = module.eval()
    args = tuple(example_inputs)
    with _quiet():
        try:
            if exporter == "dynamo":
                program = torch.onnx.export(
                    module,
                    args,
                    dynamo=True,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_shapes=_torch_dynamic_shapes(dynamic, args) if dynamic else None,
                    custom_translation_table=custom_translation_table(opset),
                    verbose=False,
                )
                assert program is not None
                model = program.model_proto
            else:
                if dynamic:
                    raise ExportError(
                        "--dynamic needs the dynamo exporter (TorchScript traces sizes as constants)"
                    )
                with torchscript_symbolics(opset), tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "model.onnx"
                    torch.onnx.export(
                        module,
                        args,
                        str(path),
                        dynamo=False,
                        opset_version=opset,
                        input_names=list(input_names),
                        output_names=list(output_names),
                        do_constant_folding=True,
                    )
                    model = onnx.load(str(path))
        except ExportError:
            raise
        except Exception as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            detail = lines[-1] if lines else type(exc).__name__
            raise ExportError(f"torch.onnx ({exporter}) export failed: {detail}") from None
    _name_io_dims(model, input_names, output_shapes, dynamic)
    return model

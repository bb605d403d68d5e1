"""The engine step of ``pem-deploy export --format engine``.

The TensorRT logic lives in the torch-free :mod:`runtime.tools.engine_build` (what ``pem-deploy build``
runs on a device); this module only adapts it to the export pipeline (an engine path next to the
ONNX, the typed engine sidecar returned).
"""

from __future__ import annotations

import os
from pathlib import Path

from contract.sidecar import Sidecar
from runtime.tools.engine_build import (
    FP32_LAYER_TYPES,
    EngineBuildError,
    EngineOptions,
    EnginePrecision,
    ShapeProfile,
    TensorRTUnavailableError,
    engine_file_name,
    import_tensorrt,
    tensorrt_major,
)
from runtime.tools.engine_build import build_engine as _build

__all__ = [
    "FP32_LAYER_TYPES",
    "EngineBuildError",
    "EngineOptions",
    "EnginePrecision",
    "ShapeProfile",
    "TensorRTUnavailableError",
    "build_engine",
    "export_engine",
    "import_tensorrt",
    "tensorrt_major",
]


def build_engine(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], options: EngineOptions
) -> Sidecar:
    """Build ``engine_path`` (+ its ``.json`` sidecar) from the exported ``onnx_path``; returns the
    engine sidecar. Same code as ``pem-deploy build`` (:func:`runtime.tools.engine_build.build_engine`)."""
    return _build(Path(onnx_path), Path(engine_path), options).spec


def export_engine(onnx_path: str | os.PathLike[str], precision: str) -> Path:
    """The engine step of an export: ``STEM.PRECISION.engine`` (+ sidecar) beside ``onnx_path``.

    ``precision`` is the export's own (the graph's typing follows it: strongly typed for FP16 /
    INT8 graphs, which carry their precisions; on TensorRT 10 an FP32 graph builds weakly typed).
    Raises :class:`TensorRTUnavailableError` without TensorRT, :class:`EngineBuildError` when the
    build fails.
    """
    onnx_file = Path(onnx_path)
    engine_path = onnx_file.with_name(engine_file_name(onnx_file.stem, precision))
    build_engine(onnx_file, engine_path, EngineOptions(precision=precision))  # type: ignore[arg-type]
    return engine_path

"""The Q/DQ INT8 graph of a model from its scales, and an onnxruntime session for a graph.

Shared by calibration (:mod:`calib.calibrate`) and the accuracy checks (:mod:`calib.accuracy`),
which therefore do not import each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import onnx
from onnx import TensorProto, helper

from calib.errors import CalibrationError
from calib.graph import QuantTarget, check_qdq, find_targets, insert_qdq
from runtime.core.backends.ort_session import create_session


def model_session(model: onnx.ModelProto, threads: int) -> Any:
    """onnxruntime CPU session for an in-memory graph (``threads`` >= 1 intra-op threads)."""
    return create_session(model.SerializeToString(), threads=max(1, threads), error=CalibrationError)


def quantize_model(
    model: onnx.ModelProto,
    scales: Mapping[str, float],
    *,
    exclude: Iterable[str] = (),
    targets: list[QuantTarget] | None = None,
    layout: str = "tensorrt",
) -> onnx.ModelProto:
    """The Q/DQ INT8 graph of ``model`` with INT8 scales ``scales`` (``amax / 127`` per tensor);
    nodes named in ``exclude`` stay float. ``layout``: see :func:`calib.graph.insert_qdq`."""
    skip = set(exclude)
    targets = [t for t in (targets or find_targets(model)) if t.node not in skip]
    quantized = insert_qdq(model, targets, scales, layout=layout)
    problems = check_qdq(quantized, layout)
    if problems:
        raise CalibrationError(f"Q/DQ placement error: {problems[0]}")
    return quantized


def with_outputs(
    model: onnx.ModelProto, names: Iterable[str], elem_type: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensors ``names`` (of ONNX type ``elem_type``, float
    by default); names that already are graph outputs are left as they are."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in names:
        if name not in existing:
            out.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    return out

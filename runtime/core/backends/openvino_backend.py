"""OpenVINO backend (CPU): an ONNX artifact compiled by OpenVINO at FP32.

OpenVINO reads the ONNX file directly (no conversion step, no IR on disk). It has no rule for
ONNX ``DeformConv`` (opset 19), so it runs the ``--deform-impl decomposed`` export (standard ops
only); an artifact with ``DeformConv`` is refused with one line. Inference precision is pinned to
FP32 (``INFERENCE_PRECISION_HINT=f32``, ``EXECUTION_MODE_HINT=ACCURACY``): on CPUs with AVX-512
BF16 / AMX, OpenVINO's default would otherwise run in bf16 and change the labels.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from contract.errors import one_line
from runtime.core.backends.base import Backend, TensorSpec
from runtime.errors import ArtifactError, BackendUnavailableError

# OpenVINO element type names -> numpy dtypes (the ones an exported artifact uses).
_OV_TYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "f64": np.float64,
    "u8": np.uint8,
    "i8": np.int8,
    "i32": np.int32,
    "i64": np.int64,
    "boolean": np.bool_,
}
NATIVE_DEFORM_CONV = (
    "{path}: OpenVINO cannot run ONNX DeformConv; export with --deform-impl decomposed "
    "(or use --backend onnxruntime)"
)


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailableError(
            "OpenVINO is not installed (pip install 'pem-deploy[openvino]' or pip install openvino)"
        ) from None
    return ov


def _spec(port: Any) -> TensorSpec:  # port: an openvino Output
    shape = tuple(int(d.get_length()) if d.is_static else None for d in port.get_partial_shape())
    dtype = _OV_TYPES.get(port.get_element_type().get_type_name(), np.float32)
    return TensorSpec(port.get_any_name(), shape, np.dtype(dtype))


class OpenVINOBackend(Backend):
    """Runs an ONNX file with OpenVINO on the CPU, in FP32.

    Args:
        path: the ``.onnx`` file (a ``--deform-impl decomposed`` export).
        threads: inference threads (0 = OpenVINO's default, all cores).
        device: OpenVINO device name (``CPU``).

    Thread-safe: each calling thread gets its own infer request of the one compiled model.
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike[str], threads: int = 0, device: str = "CPU"):
        ov = _import_openvino()
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such model file")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError / its own types
            text = str(exc)
            if "DeformConv" in text:
                raise ArtifactError(NATIVE_DEFORM_CONV.format(path=path)) from None
            first = (text.strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{path}: OpenVINO cannot read the model ({one_line(first)})") from None
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "f32",
            "EXECUTION_MODE_HINT": "ACCURACY",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{path}: OpenVINO cannot compile the model ({one_line(first)})") from None
        self.device = device
        self.host_memory = device.upper() == "CPU"
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type, e.g. f32
        self.inference_precision = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
        self._inputs = [_spec(p) for p in self.compiled.inputs]
        self._outputs = [_spec(p) for p in self.compiled.outputs]
        self._local = threading.local()

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request()
        request.infer({name: np.ascontiguousarray(value) for name, value in inputs.items()})
        # The request reuses its output buffers on the next call: copy them out.
        return {
            spec.name: np.array(request.get_tensor(port).data, copy=True)
            for spec, port in zip(self._outputs, self.compiled.outputs)
        }

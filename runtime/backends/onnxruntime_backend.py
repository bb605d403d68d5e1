"""onnxruntime backend (CPU, CUDA and TensorRT execution providers when present)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from contract.sidecar import TENSOR_DTYPES, IOSignature, onnxruntime_dtype
from runtime.backends.base import Backend, TensorSpec
from runtime.errors import ArtifactError, BackendUnavailableError

# Preference order when the caller does not choose.
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _spec(arg) -> TensorSpec:  # arg: an onnxruntime NodeArg
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
    name = onnxruntime_dtype(arg.type)
    # Types numpy has no name for (strings, sequences) become object: no sidecar dtype matches.
    return TensorSpec(arg.name, shape, np.dtype(name) if name in TENSOR_DTYPES else np.dtype(object))


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file with onnxruntime.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers in preference order; default: TensorRT, CUDA, CPU,
            whichever are available.
        threads: intra-op threads (0 = onnxruntime's default).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], providers: list[str] | None = None, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError(
                f"{path}: onnxruntime is not installed (pip install onnxruntime or onnxruntime-gpu)"
            ) from None
        path = Path(path)
        self.path = path
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in DEFAULT_PROVIDERS if p in available]
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"{path}: execution provider(s) {', '.join(missing)} not available "
                f"(have {', '.join(available)})"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{path}: onnxruntime cannot load the model ({first})") from None
        self.providers = self.session.get_providers()
        self._inputs = [_spec(a) for a in self.session.get_inputs()]
        self._outputs = [_spec(a) for a in self.session.get_outputs()]

    def io_signature(self) -> IOSignature:
        """Inputs and outputs from ``session.get_inputs()`` / ``get_outputs()`` (rank kept even
        when onnxruntime cannot tell it: ``shape`` ``None``)."""
        return IOSignature.from_onnxruntime(self.session, self.path.name)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # InferenceSession.run is thread-safe; no lock needed.
        names = [o.name for o in self._outputs]
        return dict(zip(names, self.session.run(names, inputs)))

"""The one place an onnxruntime ``InferenceSession`` is made (threads, providers, profiling, errors).

The runtime backend, the parity check, calibration and the benchmarks all call
:func:`create_session`, so that they run models with the same options and report a model that
onnxruntime refuses in the same one-line way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from contract.errors import PemDeployError, one_line
from runtime.errors import ArtifactError, BackendUnavailableError

ProviderSpec = str | tuple[str, dict[str, Any]]


def create_session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int = 0,
    inter_op_threads: int = 1,
    providers: Sequence[ProviderSpec] | None = None,
    profile_prefix: str | None = None,
    error: type[PemDeployError] = ArtifactError,
    what: str | None = None,
    memory_arena: bool = True,
) -> Any:
    """An onnxruntime session for a model file or serialized model bytes.

    ``threads`` / ``inter_op_threads``: intra- and inter-op threads (0: onnxruntime's default).
    ``providers``: names or ``(name, options)`` pairs in priority order (default: CPU only).
    ``profile_prefix`` turns on onnxruntime's per-node profiler. A model onnxruntime cannot load
    raises ``error`` with one line naming ``what`` (default: the file, or "the model" for bytes).
    ``memory_arena=False`` turns off the CPU memory arena and pattern planning: slower, but memory
    goes back after each run instead of the session keeping its high-water mark (one-shot checks
    beside a PyTorch model at full size).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            "onnxruntime is not installed (pip install onnxruntime or onnxruntime-gpu)"
        ) from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3
    if not memory_arena:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    source = model if isinstance(model, bytes) else str(model)
    name = what or ("the model" if isinstance(model, bytes) else str(model))
    try:
        return ort.InferenceSession(source, options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{name}: onnxruntime cannot load the model ({one_line(first)})") from None

"""onnxruntime backend (CPU, CUDA and TensorRT execution providers when present)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.sidecar_records import TENSOR_DTYPES, IOSignature, onnxruntime_dtype
from runtime.core.backends.base import Backend, TensorSpec
from runtime.core.backends.ort_session import create_session
from runtime.errors import BackendUnavailableError

# Preference order when the caller does not choose.
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class GpuOptions:
    """Settings of onnxruntime's TensorRT and CUDA execution providers.

    Without an engine cache the TensorRT provider rebuilds its engine at every program start
    (minutes on a Jetson); with it, the first start builds and later ones load.

    Args:
        cache_dir: engine + timing caches; default ``<model stem>.trt-cache/`` beside the model.
        workspace_mib: TensorRT builder workspace.
        fp16: let TensorRT pick FP16 kernels; default: only for FP16 artifacts (an FP32 artifact
            stays FP32, an INT8 Q/DQ artifact keeps its float parts FP32).
        device_id: CUDA device.
        builder_optimization_level: TensorRT's 0-5 (default 3).
        cuda_graph: capture the run in a CUDA graph (static shapes; lower launch overhead).
    """

    cache_dir: Path | None = None
    workspace_mib: int = 2048
    fp16: bool | None = None
    device_id: int = 0
    builder_optimization_level: int | None = None
    cuda_graph: bool = False


def cache_dir_for(model_path: Path, gpu: GpuOptions) -> Path:
    """Where the TensorRT provider keeps its engines for ``model_path``."""
    return (
        Path(gpu.cache_dir)
        if gpu.cache_dir is not None
        else model_path.with_name(f"{model_path.stem}.trt-cache")
    )


def provider_options(
    model_path: str | os.PathLike[str], providers: list[str], precision: str, gpu: GpuOptions | None = None
) -> list[dict[str, Any]]:
    """One option dict per provider (``InferenceSession(provider_options=...)``), documented names.

    TensorRT provider: workspace, engine cache + timing cache beside the artifact, FP16 where the
    artifact allows it, INT8 for Q/DQ artifacts (explicit quantisation: no calibration table).
    CUDA provider: device, exhaustive cuDNN convolution search, memory arena grown as requested.
    """
    gpu = gpu or GpuOptions()
    model_path = Path(model_path)
    fp16 = gpu.fp16 if gpu.fp16 is not None else precision == "fp16"
    cache = str(cache_dir_for(model_path, gpu))
    options: list[dict[str, Any]] = []
    for provider in providers:
        if provider == "TensorrtExecutionProvider":
            trt: dict[str, Any] = {
                "device_id": gpu.device_id,
                "trt_max_workspace_size": gpu.workspace_mib << 20,
                "trt_fp16_enable": bool(fp16),
                "trt_int8_enable": precision == "int8",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_engine_cache_prefix": model_path.stem,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
            }
            if gpu.builder_optimization_level is not None:
                trt["trt_builder_optimization_level"] = gpu.builder_optimization_level
            if gpu.cuda_graph:
                trt["trt_cuda_graph_enable"] = True
            options.append(trt)
        elif provider == "CUDAExecutionProvider":
            cuda: dict[str, Any] = {
                "device_id": gpu.device_id,
                "cudnn_conv_algo_search": "EXHAUSTIVE",
                "arena_extend_strategy": "kSameAsRequested",
                "do_copy_in_default_stream": True,
            }
            if gpu.cuda_graph:
                cuda["enable_cuda_graph"] = True
            options.append(cuda)
        else:
            options.append({})
    return options


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
        precision: the artifact's precision (decides FP16 / INT8 of the TensorRT provider).
        gpu: TensorRT / CUDA provider settings (:class:`GpuOptions`; engine cache by default).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: list[str] | None = None,
        threads: int = 0,
        precision: str = "fp32",
        gpu: GpuOptions | None = None,
    ):
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
        self.provider_options = provider_options(path, providers, precision, gpu)
        if "TensorrtExecutionProvider" in providers:
            cache_dir_for(path, gpu or GpuOptions()).mkdir(parents=True, exist_ok=True)
        self.session = create_session(
            path, threads=threads, inter_op_threads=0, providers=list(zip(providers, self.provider_options))
        )
        self.providers = self.session.get_providers()
        self.host_memory = self.providers == ["CPUExecutionProvider"]
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

    @property
    def _io_binding_device(self) -> str | None:
        """``cuda`` when the CUDA provider runs the graph (I/O binding separates the copies)."""
        return "cuda" if self.providers and self.providers[0] == "CUDAExecutionProvider" else None

    @property
    def copy_timing(self) -> str:
        if self._io_binding_device:
            return "measured"
        return super().copy_timing

    def infer_timed(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """On the CUDA provider, through I/O binding: the inputs are copied to the device
        (``h2d``), the graph runs with outputs left there (``compute``), then they are copied back
        (``d2h``). Elsewhere the default split (see :meth:`Backend.infer_timed`)."""
        device = self._io_binding_device
        if device is None:
            return super().infer_timed(inputs)
        import onnxruntime as ort

        t0 = time.perf_counter()
        binding = self.session.io_binding()
        for spec in self._inputs:
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(inputs[spec.name]), device, 0)
            binding.bind_ortvalue_input(spec.name, value)
        for spec in self._outputs:
            binding.bind_output(spec.name, device, 0)
        t1 = time.perf_counter()
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = time.perf_counter()
        values = binding.get_outputs()
        outputs = {spec.name: value.numpy() for spec, value in zip(self._outputs, values)}
        t3 = time.perf_counter()
        ms = 1e3
        return outputs, {"h2d": (t1 - t0) * ms, "compute": (t2 - t1) * ms, "d2h": (t3 - t2) * ms}

"""TensorRT backend: a serialized engine run through the TensorRT 10/11 Python API.

Device memory and streams come from cuda-python (``cuda.bindings.runtime``; older releases
expose it as ``cuda.cudart``). Engines are tied to the TensorRT version and GPU they were built
on: :func:`check_engine_compatibility` compares the engine sidecar with this machine first.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend, TensorSpec
from runtime.errors import ArtifactError, BackendUnavailableError


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError("TensorRT is not installed (on Jetson it comes with JetPack)") from None
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise BackendUnavailableError("cuda-python is not installed (pip install cuda-python)") from None
    return cudart


def _check(result: Any) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {int(err)} ({err})")
    return values[0] if len(values) == 1 else values


def device_description(cudart: Any, device: int = 0) -> dict[str, str]:
    """Name and compute capability of a CUDA device, as written in engine sidecars."""
    props = _check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def check_engine_compatibility(
    sidecar: dict[str, Any], trt_version: str, device: dict[str, str], path: Path
) -> None:
    """Refuse an engine built for another TensorRT version or GPU, with a one-line reason."""
    built = sidecar.get("tensorrt", {})
    want_version = str(built.get("version", ""))
    # Engines are portable across patch releases only: compare major.minor.
    if want_version and want_version.split(".")[:2] != trt_version.split(".")[:2]:
        raise ArtifactError(
            f"{path}: engine was built with TensorRT {want_version}, this machine has {trt_version}; "
            "rebuild it here (pem-deploy export --format engine)"
        )
    want_cc = str(built.get("compute_capability", ""))
    if want_cc and want_cc != device["compute_capability"]:
        raise ArtifactError(
            f"{path}: engine was built for compute capability {want_cc} ({built.get('gpu_name', '?')}), "
            f"this GPU is {device['gpu_name']} ({device['compute_capability']}); rebuild it here"
        )


def engine_tensor_specs(trt: Any, engine: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a deserialized engine: names, shapes (-1 -> ``None``) and dtypes, as
    :meth:`Backend.io_signature` reports them for the sidecar check."""
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(name))
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (inputs if is_input else outputs).append(TensorSpec(name, shape, dtype))
    return inputs, outputs


class TensorRTBackend(Backend):
    """Runs a TensorRT engine (``execute_async_v3`` on its own CUDA stream).

    Args:
        path: the serialized engine (``.engine`` / ``.plan``).
        sidecar: the engine's sidecar dict (checked against this machine when given).
        cuda_graph: capture the enqueue in a CUDA graph after the first run and replay it
            (lower launch overhead on Jetson; only while input shapes stay the same).
        device: CUDA device index.
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        sidecar: dict[str, Any] | None = None,
        cuda_graph: bool = False,
        device: int = 0,
    ):
        trt = _import_tensorrt()
        cudart = _import_cudart()
        self._trt, self._cudart = trt, cudart
        path = Path(path)
        self.path = path
        _check(cudart.cudaSetDevice(device))
        if sidecar is not None:
            check_engine_compatibility(sidecar, trt.__version__, device_description(cudart, device), path)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")  # DeformConv's ModulatedDeformConv2d plugin
        self._runtime = trt.Runtime(logger)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read engine ({exc.strerror})") from None
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ArtifactError(f"{path}: TensorRT could not deserialize the engine (other version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self._lock = threading.Lock()  # one execution context: serialise callers
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._use_graph = cuda_graph
        self._graph_exec: Any = None
        self._graph_key: tuple[Any, ...] | None = None
        self._inputs, self._outputs = engine_tensor_specs(trt, self.engine)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = int(_check(self._cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (ptr, nbytes)
            self._graph_exec = None  # addresses changed: the captured graph is stale
        return ptr

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            for spec in self._inputs:
                array = np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype)
                self.context.set_input_shape(spec.name, array.shape)
                ptr = self._device_buffer(spec.name, array.nbytes)
                _check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, self.stream))
                self.context.set_tensor_address(spec.name, ptr)
            results: dict[str, np.ndarray] = {}
            for spec in self._outputs:
                shape = tuple(self.context.get_tensor_shape(spec.name))
                results[spec.name] = np.empty(shape, dtype=spec.dtype)
                ptr = self._device_buffer(spec.name, results[spec.name].nbytes)
                self.context.set_tensor_address(spec.name, ptr)
            self._enqueue(tuple(inputs[s.name].shape for s in self._inputs))
            for spec in self._outputs:
                out = results[spec.name]
                _check(
                    cudart.cudaMemcpyAsync(
                        out.ctypes.data, self._buffers[spec.name][0], out.nbytes, d2h, self.stream
                    )
                )
            _check(cudart.cudaStreamSynchronize(self.stream))
        return results

    def _enqueue(self, key: tuple[Any, ...]) -> None:
        cudart = self._cudart
        if not self._use_graph:
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            return
        if self._graph_exec is None or self._graph_key != key:
            # One plain run first so TensorRT finishes its lazy set-up outside the capture.
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
            _check(cudart.cudaStreamBeginCapture(self.stream, mode))
            self.context.execute_async_v3(self.stream)
            graph = _check(cudart.cudaStreamEndCapture(self.stream))
            self._graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
            self._graph_key = key
        _check(cudart.cudaGraphLaunch(self._graph_exec, self.stream))

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None

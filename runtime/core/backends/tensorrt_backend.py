"""TensorRT backend: a serialized engine run through the TensorRT 10/11 Python API.

Device memory, pinned host memory and streams come from cuda-python (``cuda.bindings.runtime``; older releases
expose it as ``cuda.cudart``). Engines are tied to the TensorRT version and GPU they were built
on: :func:`check_engine_compatibility` compares the engine sidecar with this machine first.
"""

from __future__ import annotations

import ctypes
import os
import queue
from pathlib import Path
from typing import Any

import numpy as np

from contract.sidecar import Sidecar
from contract.sidecar_records import EngineRecord
from runtime.core.backends.base import Backend, TensorSpec
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
    sidecar: Sidecar, trt_version: str, device: dict[str, str], path: Path
) -> None:
    """Refuse an engine built for another TensorRT version or GPU, with a one-line reason."""
    built = sidecar.provenance.engine or EngineRecord()
    want_version = built.version or ""
    # Engines are portable across patch releases only: compare major.minor.
    if want_version and want_version.split(".")[:2] != trt_version.split(".")[:2]:
        raise ArtifactError(
            f"{path}: engine was built with TensorRT {want_version}, this machine has {trt_version}; "
            "rebuild it here (pem-deploy export --format engine)"
        )
    want_cc = built.compute_capability or ""
    if want_cc and want_cc != device["compute_capability"]:
        raise ArtifactError(
            f"{path}: engine was built for compute capability {want_cc} ({built.gpu_name or '?'}), "
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


class _Slot:
    """One execution context with its own CUDA stream, device buffers and pinned host buffers."""

    def __init__(self, index: int, context: Any, stream: Any, profile: int | None):
        self.index = index
        self.context = context
        self.stream = stream
        self.profile = profile
        self.device: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self.host: dict[str, tuple[int, int]] = {}  # pinned: name -> (pointer, bytes)
        self.graph_exec: Any = None
        self.graph_key: tuple[Any, ...] | None = None


class Ticket:
    """A submitted inference; pass it to :meth:`TensorRTBackend.collect` (once)."""

    def __init__(self, slot: _Slot, outputs: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self._slot: _Slot | None = slot
        self._outputs = outputs


class TensorRTBackend(Backend):
    """Runs a TensorRT engine with a pool of execution contexts (``execute_async_v3``).

    Each context has its own CUDA stream, device buffers and page-locked (pinned) host buffers,
    so host-device copies run asynchronously and several callers (threads) run at once, up to
    ``contexts``. :meth:`submit` enqueues copy-in, inference and copy-out and returns at once;
    :meth:`collect` waits for that result: a pipeline submits frame k+1 before it collects
    frame k, so the copy of one frame overlaps the inference of the other.

    Args:
        path: the serialized engine (``.engine`` / ``.plan``).
        sidecar: the engine's sidecar (checked against this machine when given).
        cuda_graph: capture the enqueue in a CUDA graph after the first run and replay it
            (lower launch overhead on Jetson; recaptured when input shapes change).
        device: CUDA device index.
        contexts: execution contexts in the pool. A dynamic-shape engine gets at most one per
            optimisation profile (``pem-deploy build --contexts N`` writes N profiles).
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        sidecar: Sidecar | None = None,
        cuda_graph: bool = False,
        device: int = 0,
        contexts: int = 1,
    ):
        if contexts < 1:
            raise ValueError(f"contexts must be >= 1, got {contexts}")
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
        self._use_graph = cuda_graph
        self._inputs, self._outputs = engine_tensor_specs(trt, self.engine)
        dynamic = any(d is None for spec in self._inputs for d in spec.shape)
        profiles = int(getattr(self.engine, "num_optimization_profiles", 1) or 1)
        # A dynamic engine's context owns one optimisation profile; static ones share profile 0.
        self.num_contexts = min(contexts, profiles) if dynamic else contexts
        self._slots: list[_Slot] = []
        self._free: queue.Queue[_Slot] = queue.Queue()
        self._closed = False
        for i in range(self.num_contexts):
            context = self.engine.create_execution_context()
            stream = _check(cudart.cudaStreamCreate())
            slot = _Slot(i, context, stream, i if dynamic else None)
            if dynamic and profiles > 1 and not context.set_optimization_profile_async(i, stream):
                raise ArtifactError(f"{path}: cannot select optimisation profile {i}")
            self._slots.append(slot)
            self._free.put(slot)

    # -- memory --------------------------------------------------------------------------------

    def _device_buffer(self, slot: _Slot, name: str, nbytes: int) -> int:
        ptr, size = slot.device.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = int(_check(self._cudart.cudaMalloc(nbytes)))
            slot.device[name] = (ptr, nbytes)
            slot.graph_exec = None  # addresses changed: the captured graph is stale
        return ptr

    def _host_buffer(self, slot: _Slot, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A pinned (page-locked) host array of ``shape``: async copies need pinned memory."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        ptr, size = slot.host.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFreeHost(ptr))
            ptr = int(_check(self._cudart.cudaMallocHost(max(nbytes, 1))))
            slot.host[name] = (ptr, max(nbytes, 1))
        raw = (ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr)
        return np.frombuffer(raw, dtype=np.uint8, count=nbytes).view(dtype).reshape(shape)

    # -- inference -----------------------------------------------------------------------------

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.collect(self.submit(inputs))

    def submit(self, inputs: dict[str, np.ndarray]) -> Ticket:
        """Enqueue one inference on a free context (waits while all are busy); returns at once."""
        if self._closed:
            raise RuntimeError("TensorRT backend is closed")
        slot = self._free.get()
        try:
            return self._enqueue_all(slot, inputs)
        except BaseException:
            self._free.put(slot)
            raise

    def collect(self, ticket: Ticket) -> dict[str, np.ndarray]:
        """Wait for a submitted inference and return its outputs (host arrays)."""
        slot = ticket._slot
        if slot is None:
            raise RuntimeError("this ticket was already collected")
        ticket._slot = None
        try:
            _check(self._cudart.cudaStreamSynchronize(slot.stream))
            return {
                name: self._host_buffer(slot, name, shape, dtype).copy()
                for name, (shape, dtype) in ticket._outputs.items()
            }
        finally:
            self._free.put(slot)

    def _enqueue_all(self, slot: _Slot, inputs: dict[str, np.ndarray]) -> Ticket:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        context = slot.context
        shapes = []
        for spec in self._inputs:
            array = np.asarray(inputs[spec.name])
            context.set_input_shape(spec.name, array.shape)
            host = self._host_buffer(slot, spec.name, array.shape, spec.dtype)
            host[...] = array  # into pinned memory (cast to the engine's dtype)
            ptr = self._device_buffer(slot, spec.name, host.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, slot.stream))
            context.set_tensor_address(spec.name, ptr)
            shapes.append(array.shape)
        outputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for spec in self._outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
            context.set_tensor_address(spec.name, self._device_buffer(slot, spec.name, nbytes))
            outputs[spec.name] = (shape, spec.dtype)
        self._enqueue(slot, tuple(shapes))
        for name, (shape, dtype) in outputs.items():
            host = self._host_buffer(slot, name, shape, dtype)
            _check(
                cudart.cudaMemcpyAsync(host.ctypes.data, slot.device[name][0], host.nbytes, d2h, slot.stream)
            )
        return Ticket(slot, outputs)

    def _enqueue(self, slot: _Slot, key: tuple[Any, ...]) -> None:
        cudart = self._cudart
        if not self._use_graph:
            if not slot.context.execute_async_v3(slot.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            return
        if slot.graph_exec is None or slot.graph_key != key:
            # One plain run first so TensorRT finishes its lazy set-up outside the capture.
            if not slot.context.execute_async_v3(slot.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            if slot.graph_exec is not None:
                cudart.cudaGraphExecDestroy(slot.graph_exec)
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
            _check(cudart.cudaStreamBeginCapture(slot.stream, mode))
            slot.context.execute_async_v3(slot.stream)
            graph = _check(cudart.cudaStreamEndCapture(slot.stream))
            slot.graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
            cudart.cudaGraphDestroy(graph)
            slot.graph_key = key
        _check(cudart.cudaGraphLaunch(slot.graph_exec, slot.stream))

    def close(self) -> None:
        """Wait for work in flight, then free every buffer, graph and stream."""
        if self._closed:
            return
        self._closed = True
        cudart = self._cudart
        for slot in self._slots:
            cudart.cudaStreamSynchronize(slot.stream)  # nothing in flight any more
            for ptr, _ in slot.device.values():
                cudart.cudaFree(ptr)
            for ptr, _ in slot.host.values():
                cudart.cudaFreeHost(ptr)
            slot.device.clear()
            slot.host.clear()
            if slot.graph_exec is not None:
                cudart.cudaGraphExecDestroy(slot.graph_exec)
                slot.graph_exec = None
            cudart.cudaStreamDestroy(slot.stream)

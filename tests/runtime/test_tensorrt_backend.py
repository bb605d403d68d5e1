"""TensorRT backend against a recording stand-in of the TensorRT 10 runtime API and cuda-python
(real host memory behind fake device pointers, so copies and results are real): pinned host
buffers, the execution-context pool, submit/collect, CUDA-graph capture and replay, the
engine-compatibility refusals, and the pipelined stream on top."""

import ctypes
import inspect
import json
import sys
import threading
import time
import types

import numpy as np
import pytest

from contract.fs import sha256_file
from contract.sidecar import Sidecar
from runtime import Segmenter
from runtime.core.backends.tensorrt_backend import TensorRTBackend
from runtime.errors import ArtifactError
from tests.helpers.concurrency import run_in_threads
from tests.helpers.real_api_surface import CUDA_BINDINGS_VERSIONS, surface_or_reason
from tests.helpers.runtime_models import semantic_model, sidecar_for
from tests.helpers.strict_api import StrictApi


class FakeCudart(types.ModuleType):
    """cuda.bindings.runtime: calls return (err, value) tuples; memory is real host memory."""

    def __init__(self):
        super().__init__("cuda.bindings.runtime")
        self.calls, self.buffers, self.streams = [], {}, 0
        self.capturing, self.captured = None, None
        self.cudaMemcpyKind = types.SimpleNamespace(
            cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h"
        )
        self.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeGlobal="global")

    def _alloc(self, kind, n):
        buf = ctypes.create_string_buffer(n)
        self.buffers[ctypes.addressof(buf)] = buf
        self.calls.append((kind, n))
        return 0, ctypes.addressof(buf)

    def cudaSetDevice(self, d):
        return (0,)

    def cudaGetDeviceProperties(self, d):
        return 0, types.SimpleNamespace(name=b"Orin\x00", major=8, minor=7)

    def cudaMalloc(self, n):
        return self._alloc("cudaMalloc", n)

    def cudaMallocHost(self, n):
        return self._alloc("cudaMallocHost", n)

    def cudaFree(self, p):
        self.calls.append(("cudaFree",))
        self.buffers.pop(p)
        return (0,)

    def cudaFreeHost(self, p):
        self.calls.append(("cudaFreeHost",))
        self.buffers.pop(p)
        return (0,)

    def cudaStreamCreate(self):
        self.streams += 1
        return 0, f"stream{self.streams}"

    def cudaStreamDestroy(self, s):
        self.calls.append(("cudaStreamDestroy", s))
        return (0,)

    def cudaStreamSynchronize(self, s):
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert src in self.buffers or dst in self.buffers  # one side is always our memory
        ctypes.memmove(dst, src, n)
        self.calls.append(("memcpy", kind, stream))
        return (0,)

    def cudaStreamBeginCapture(self, s, mode):
        self.capturing = s
        return (0,)

    def cudaStreamEndCapture(self, s):
        self.capturing = None
        return 0, ("graph", self.captured)

    def cudaGraphInstantiate(self, graph, flags):
        self.calls.append(("instantiate",))
        return 0, ("exec", graph[1])

    def cudaGraphLaunch(self, graph_exec, s):
        self.calls.append(("launch", s))
        graph_exec[1]()
        return (0,)

    def cudaGraphDestroy(self, g):
        return (0,)

    def cudaGraphExecDestroy(self, g):
        return (0,)


def fake_tensorrt(cudart, dynamic=False, profiles=1, delay=0.0, version="10.3.0"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda t: {"float32": np.float32, "int32": np.int32}[t]
    stats = {"active": 0, "peak": 0, "executed": 0, "profiles": [], "contexts": 0}
    lock = threading.Lock()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Context:
        def __init__(self):
            self.shapes, self.addresses = {}, {}

        def set_optimization_profile_async(self, profile_index, stream_handle):
            stats["profiles"].append(profile_index)
            return True

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

        def get_tensor_shape(self, name):
            n, _, h, w = self.shapes["images"]
            return (n, h, w)

        def set_tensor_address(self, name, memory):
            self.addresses[name] = memory

        def _run(self, addresses):
            shape = self.shapes["images"]
            count = int(np.prod(shape))
            raw = (ctypes.c_float * count).from_address(addresses["images"])
            x = np.frombuffer(raw, np.float32).reshape(shape)
            labels = x.argmax(1).astype(np.int32)
            ctypes.memmove(addresses["labels"], labels.ctypes.data, labels.nbytes)
            stats["executed"] += 1

        def execute_async_v3(self, stream_handle):
            addresses = dict(self.addresses)
            if cudart.capturing == stream_handle:  # recorded into the graph, not run
                cudart.captured = lambda: self._run(addresses)
                return True
            with lock:
                stats["active"] += 1
                stats["peak"] = max(stats["peak"], stats["active"])
            time.sleep(delay)
            self._run(addresses)
            with lock:
                stats["active"] -= 1
            return True

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = profiles

        def get_tensor_name(self, index):
            return ("images", "labels")[index]

        def get_tensor_dtype(self, name):
            return "float32" if name == "images" else "int32"

        def get_tensor_shape(self, name):
            if name == "images":
                return (-1, 3, -1, -1) if dynamic else (1, 3, 8, 16)
            return (-1, -1, -1) if dynamic else (1, 8, 16)

        def get_tensor_mode(self, name):
            return "in" if name == "images" else "out"

        def create_execution_context(self, strategy=None):
            stats["contexts"] += 1
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            return Engine() if serialized_engine == b"ENGINE" else None

    trt.Logger, trt.Runtime = Logger, Runtime
    trt.init_libnvinfer_plugins = lambda logger, ns: True
    trt.stats, trt.Engine = stats, Engine
    return trt


@pytest.fixture
def install(monkeypatch):
    """Installs the stand-ins as ``tensorrt`` and ``cuda.bindings.runtime``, each behind the strict
    proxy of the real release it pretends to be (when that release's module can be fetched); at
    teardown, asserts that the backend made no call either real module would refuse."""
    apis: list[StrictApi] = []

    def strict(fake, kind, version):
        surface, _ = surface_or_reason("tensorrt" if kind == "tensorrt" else "cuda", version)
        if surface is None:
            return fake
        apis.append(StrictApi(surface, f"{kind} {version}"))
        return apis[-1].module(fake)

    def go(version="10.3.0", cuda="12.9.10", **kwargs):
        cudart = FakeCudart()
        trt = fake_tensorrt(cudart, version=version, **kwargs)
        strict_cudart = strict(cudart, "cuda-bindings", cuda)
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = strict_cudart
        monkeypatch.setitem(sys.modules, "tensorrt", strict(trt, "tensorrt", version))
        monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", strict_cudart)
        return trt, cudart

    yield go
    mismatches = [m for api in apis for m in api.mismatches]
    assert not mismatches, "calls the real modules would refuse:\n" + "\n".join(mismatches)


def _engine(tmp_path, **trt_info):
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"ENGINE")
    sidecar = {
        **sidecar_for(semantic_model(8, 16), shape=(1, 3, 8, 16), precision="fp16"),
        "sha256": sha256_file(path),
        "tensorrt": {"version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin", **trt_info},
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path, Sidecar.from_dict(sidecar)


def _x(seed, shape=(1, 3, 8, 16)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_pinned_buffers_are_allocated_once_and_results_are_real(install, tmp_path):
    _trt, cudart = install()
    path, sidecar = _engine(tmp_path)
    with TensorRTBackend(path, sidecar) as backend:
        for seed in range(3):
            x = _x(seed)
            np.testing.assert_array_equal(backend.infer({"images": x})["labels"], x.argmax(1))
        pinned = [c for c in cudart.calls if c[0] == "cudaMallocHost"]
        device = [c for c in cudart.calls if c[0] == "cudaMalloc"]
        assert pinned == [("cudaMallocHost", 3 * 8 * 16 * 4), ("cudaMallocHost", 8 * 16 * 4)]  # once each
        assert len(device) == 2 and backend.num_contexts == 1
        kinds = [c[1] for c in cudart.calls if c[0] == "memcpy"]
        assert kinds == ["h2d", "d2h"] * 3
    assert ("cudaFreeHost",) in cudart.calls and cudart.buffers == {}  # everything freed on close


def test_context_pool_runs_callers_at_once(install, tmp_path):
    trt, cudart = install(delay=0.02)
    path, sidecar = _engine(tmp_path)
    backend = TensorRTBackend(path, sidecar, contexts=3)
    assert backend.num_contexts == 3 and trt.stats["contexts"] == 3 and cudart.streams == 3
    failures = []

    def work(seed):
        for i in range(5):
            x = _x(seed * 10 + i)
            if not np.array_equal(backend.infer({"images": x})["labels"], x.argmax(1)):
                failures.append(seed)

    run_in_threads(work, 5)
    assert failures == [] and trt.stats["executed"] == 25
    assert 1 < trt.stats["peak"] <= 3  # several contexts busy at once, never more than the pool
    backend.close()
    assert len([c for c in cudart.calls if c[0] == "cudaStreamDestroy"]) == 3


def test_dynamic_engines_get_one_profile_per_context(install, tmp_path):
    trt, _ = install(dynamic=True, profiles=2)
    path, sidecar = _engine(tmp_path)
    backend = TensorRTBackend(path, sidecar, contexts=4)
    assert backend.num_contexts == 2 and trt.stats["profiles"] == [0, 1]
    x = _x(0, (2, 3, 16, 32))
    np.testing.assert_array_equal(backend.infer({"images": x})["labels"], x.argmax(1))


def test_submit_then_collect_overlaps_and_keeps_order(install, tmp_path):
    _trt, _ = install()
    path, sidecar = _engine(tmp_path)
    backend = TensorRTBackend(path, sidecar, contexts=2)
    xs = [_x(i) for i in range(2)]
    tickets = [backend.submit({"images": x}) for x in xs]  # both in flight
    assert backend._free.qsize() == 0
    for ticket, x in zip(tickets, xs):
        np.testing.assert_array_equal(backend.collect(ticket)["labels"], x.argmax(1))
    with pytest.raises(RuntimeError, match="already collected"):
        backend.collect(tickets[0])
    assert backend._free.qsize() == 2


def test_cuda_graph_capture_and_replay(install, tmp_path):
    _trt, cudart = install(dynamic=True)
    path, sidecar = _engine(tmp_path)
    backend = TensorRTBackend(path, sidecar, cuda_graph=True)
    for seed in range(3):
        x = _x(seed)
        np.testing.assert_array_equal(backend.infer({"images": x})["labels"], x.argmax(1))
    assert [c[0] for c in cudart.calls].count("instantiate") == 1  # captured once, replayed
    assert [c[0] for c in cudart.calls].count("launch") == 3
    x = _x(9, (1, 3, 16, 16))  # a new shape: new buffers, recaptured
    np.testing.assert_array_equal(backend.infer({"images": x})["labels"], x.argmax(1))
    assert [c[0] for c in cudart.calls].count("instantiate") == 2


def test_engines_from_another_tensorrt_or_gpu_are_refused(install, tmp_path):
    install()
    path, sidecar = _engine(tmp_path, version="10.4.0")
    with pytest.raises(ArtifactError, match=r"built with TensorRT 10\.4\.0, this machine has 10\.3\.0"):
        TensorRTBackend(path, sidecar)
    path, sidecar = _engine(tmp_path, compute_capability="8.6")
    with pytest.raises(ArtifactError, match="compute capability 8.6"):
        TensorRTBackend(path, sidecar)


def test_pipelined_stream_on_the_engine_equals_predict(install, tmp_path):
    _trt, _ = install(delay=0.005)
    path, _ = _engine(tmp_path, contexts=2)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 32, 3), np.uint8) for _ in range(12)]
    with Segmenter.open(path) as seg:
        assert seg.backend.num_contexts == 2  # as built (sidecar tensorrt.contexts)
        expected = [seg.predict(f).labels for f in frames]
        got = [r.labels for r in seg.stream(frames)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))


# JetPack 6 pairs TensorRT 10.3 with CUDA 12; the newer releases run with cuda-python 13.
_RELEASES = [("10.3.0", "12.9.10"), ("10.16.1.11", "13.5.0"), ("11.4.0.106", "13.5.0")]


@pytest.mark.parametrize(("version", "cuda"), _RELEASES)
def test_backend_against_the_real_releases(install, tmp_path, version, cuda):
    """Set-up, a dynamic engine with two contexts, CUDA-graph capture and replay, and close, run
    through the strict proxies of the real TensorRT and cuda-python releases (teardown asserts no
    call either would refuse)."""
    for kind, v in (("tensorrt", version), ("cuda", cuda)):
        _, reason = surface_or_reason(kind, v)
        if reason:
            pytest.skip(reason)
    trt, cudart = install(version=version, cuda=cuda, dynamic=True, profiles=2)
    path, sidecar = _engine(tmp_path, version=version)
    with TensorRTBackend(path, sidecar, cuda_graph=True, contexts=2) as backend:
        assert backend.num_contexts == 2 and trt.stats["profiles"] == [0, 1]
        for seed in range(2):
            x = _x(seed, (1, 3, 16, 32))
            np.testing.assert_array_equal(backend.infer({"images": x})["labels"], x.argmax(1))
    # one graph captured per context (the two inferences ran on the two contexts in turn)
    assert [c[0] for c in cudart.calls].count("instantiate") == 2 and cudart.buffers == {}


@pytest.mark.parametrize("cuda", CUDA_BINDINGS_VERSIONS)
def test_cudart_stand_in_offers_only_real_functions(cuda):
    """Every cuda* function of the stand-in exists in the real cuda.bindings.runtime of that
    release with the same parameters, and the enum members it offers are real."""
    surface, reason = surface_or_reason("cuda", cuda)
    if surface is None:
        pytest.skip(reason)
    real = surface["module"]
    fake = FakeCudart()
    wrong = []
    for name in dir(FakeCudart):
        if not name.startswith("cuda") or not callable(getattr(FakeCudart, name)):
            continue
        if name not in real:
            wrong.append(f"{name}: not in cuda-bindings {cuda}")
            continue
        ours = list(inspect.signature(getattr(fake, name)).parameters)
        theirs = [p["name"] for p in real[name]["signatures"][0]["params"]]
        if len(ours) != len(theirs):
            wrong.append(f"{name}{tuple(ours)}: the real one takes {tuple(theirs)}")
    for enum in ("cudaMemcpyKind", "cudaStreamCaptureMode"):
        for member in vars(getattr(fake, enum)):
            if member not in (real[enum]["enum"] or {}):
                wrong.append(f"{enum}.{member}: not a member in cuda-bindings {cuda}")
    assert not wrong, "\n".join(wrong)

"""Engine building: the real thing needs TensorRT and a GPU (skipped here, with the reason); the
TensorRT 10 / 11 code paths are exercised against a recording stand-in of the documented API."""

import hashlib
import json
import sys
import types
import typing
from pathlib import Path

import pytest

from contract.sidecar import Sidecar
from export.errors import ExportError
from export.tensorrt_engine import EngineOptions, ShapeProfile, TensorRTUnavailableError, build_engine


class _Recorder:
    def __init__(self):
        self.calls = []


def _fake_tensorrt(version: str, rec: _Recorder) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"

    class Enum:
        def __init__(self, **members):
            self.__dict__.update(members)

    trt.NetworkDefinitionCreationFlag = Enum(STRONGLY_TYPED=5)
    trt.BuilderFlag = Enum(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY")
    trt.MemoryPoolType = Enum(WORKSPACE="WORKSPACE")
    trt.LayerType = Enum(
        NORMALIZATION="norm",
        SOFTMAX="softmax",
        REDUCE="reduce",
        TOPK="topk",
        CONVOLUTION="conv",
        PLUGIN_V2="plugin",
    )

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Tensor:
        dtype = "float32"

    class Layer:
        def __init__(self, name, type_):
            self.name, self.type, self.num_outputs, self.precision = name, type_, 1, None

        def get_output(self, i):
            return Tensor()

        def set_output_type(self, i, t):
            rec.calls.append(("set_output_type", self.name, t))

    class Network:
        layers: typing.ClassVar = [
            Layer("ln", "norm"),
            Layer("conv", "conv"),
            Layer("argmax", "topk"),
            Layer("DeformConv_1", "plugin"),
        ]
        num_layers = len(layers)

        def get_layer(self, i):
            return self.layers[i]

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec.calls.append(("parse", Path(path).name))
            return True

    class Config:
        int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("workspace", size))

        def set_flag(self, flag):
            rec.calls.append(("flag", flag))

        def add_optimization_profile(self, profile):
            rec.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: b"timing")

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.calls.append(("timing_cache",))

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"timing")

    class Profile:
        def __init__(self):
            self.shapes = []

        def set_shape(self, name, lo, opt, hi):
            self.shapes.append((name, lo, opt, hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            self.config = Config()
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.calls.append(("calibrator", config.int8_calibrator is not None))
            return b"ENGINE"

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    trt.Logger, trt.OnnxParser, trt.Builder = Logger, Parser, Builder
    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    trt.init_libnvinfer_plugins = lambda logger, ns: rec.calls.append(("plugins",))
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version):
        rec = _Recorder()
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version, rec))
        monkeypatch.setattr(
            "export.tensorrt_engine._device_description",
            lambda: {"gpu_name": "Orin", "compute_capability": "8.7"},
        )
        return rec

    return install


def _onnx(tmp_path):
    """A stand-in ONNX file with a valid sidecar (the engine sidecar is built from it)."""
    from test_runtime_segmenter import _semantic_model, sidecar_for

    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    sidecar = {**sidecar_for(_semantic_model(32, 64)), "sha256": hashlib.sha256(b"onnx").hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def test_tensorrt_11_is_strongly_typed_without_flags(fake_trt, tmp_path):
    rec = fake_trt("11.1.0")
    sidecar = build_engine(_onnx(tmp_path), tmp_path / "m.engine", EngineOptions(precision="fp16"))
    assert ("create_network", 0) in rec.calls
    assert not [c for c in rec.calls if c[0] == "flag"]
    assert sidecar["tensorrt"] == {
        **sidecar["tensorrt"],
        "version": "11.1.0",
        "strongly_typed": True,
        "compute_capability": "8.7",
    }
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE"
    written = Sidecar.from_file(tmp_path / "m.json")  # the runtime's schema accepts it
    assert written.head == "semantic" and written.precision == "fp16"
    assert written.provenance.sha256 == hashlib.sha256(b"ENGINE").hexdigest()
    assert written.provenance.model_file == "m.engine" and written.provenance.tensorrt["version"] == "11.1.0"
    with pytest.raises(ExportError, match="strongly typed networks only"):
        build_engine(_onnx(tmp_path), tmp_path / "m.engine", EngineOptions(strongly_typed=False))


def test_tensorrt_10_weak_typing_flags_constraints_and_cache(fake_trt, tmp_path):
    rec = fake_trt("10.3.0")
    with pytest.raises(ExportError, match="needs --calib-cache"):
        build_engine(_onnx(tmp_path), tmp_path / "m.engine", EngineOptions(precision="int8"))
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\nimages: 3c010204\n")
    options = EngineOptions(
        precision="int8",
        calibration_cache=cache,
        timing_cache=tmp_path / "timing.cache",
        profiles=[ShapeProfile("images", (1, 3, 256, 512), (1, 3, 512, 1024), (2, 3, 1024, 2048))],
    )
    sidecar = build_engine(_onnx(tmp_path), tmp_path / "m.engine", options)
    flags = [c[1] for c in rec.calls if c[0] == "flag"]
    assert flags == ["FP16", "INT8", "OBEY"]
    assert ("calibrator", True) in rec.calls and ("plugins",) in rec.calls
    assert sidecar["tensorrt"]["pinned_layers"] == ["ln", "argmax", "DeformConv_1"]
    assert ("profile", [("images", (1, 3, 256, 512), (1, 3, 512, 1024), (2, 3, 1024, 2048))]) in rec.calls
    assert (tmp_path / "timing.cache").read_bytes() == b"timing"
    strongly = build_engine(
        _onnx(tmp_path), tmp_path / "s.engine", EngineOptions(precision="fp16", strongly_typed=True)
    )
    assert strongly["tensorrt"]["strongly_typed"] and ("create_network", 1 << 5) in rec.calls


def test_without_tensorrt_the_error_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        build_engine(_onnx(tmp_path), tmp_path / "m.engine", EngineOptions())


def test_real_engine_build_and_run(tmp_path):
    """On a machine with TensorRT and a GPU: build a tiny engine and run it through the runtime."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    pytest.importorskip("cuda", reason="cuda-python is not installed on this machine")
    import numpy as np
    import onnx
    from test_runtime_segmenter import _semantic_model, sidecar_for

    from runtime.backends.tensorrt_backend import TensorRTBackend

    path = tmp_path / "tiny.onnx"
    onnx.save(_semantic_model(32, 64), path)  # labels = argmax over the RGB channels
    path.with_suffix(".json").write_text(json.dumps(sidecar_for(_semantic_model(32, 64))))
    sidecar = build_engine(path, tmp_path / "tiny.engine", EngineOptions(precision="fp32"))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 64)).astype(np.float32)
    with TensorRTBackend(tmp_path / "tiny.engine", sidecar) as backend:
        labels = backend.infer({"images": x})["labels"]
    np.testing.assert_array_equal(labels, x.argmax(1))


def test_engine_io_signature_from_a_stand_in_engine():
    """TensorRT's view of the engine's tensors (-1 = dynamic) is what the sidecar is checked against."""
    import numpy as np
    from test_runtime_segmenter import _semantic_model, sidecar_for

    from contract.errors import SidecarError
    from runtime.backends.base import Backend
    from runtime.backends.tensorrt_backend import engine_tensor_specs

    trt = types.SimpleNamespace(
        TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
        nptype=lambda t: {"f": np.float32, "i": np.int32}[t],
    )
    tensors = {"images": ("in", "f", (-1, 3, 32, 64)), "labels": ("out", "i", (-1, 32, 64))}
    engine = types.SimpleNamespace(
        num_io_tensors=2,
        get_tensor_name=lambda i: list(tensors)[i],
        get_tensor_mode=lambda n: tensors[n][0],
        get_tensor_dtype=lambda n: tensors[n][1],
        get_tensor_shape=lambda n: tensors[n][2],
    )

    class Stand(Backend):
        name = "tensorrt"

        def infer(self, inputs):
            raise NotImplementedError

    backend = Stand()
    backend._inputs, backend._outputs = engine_tensor_specs(trt, engine)
    signature = backend.io_signature()
    assert signature.inputs[0].shape == (None, 3, 32, 64) and signature.outputs[0].dtype == "int32"
    spec = Sidecar.from_dict(sidecar_for(_semantic_model(32, 64)), "m.json")
    spec.check_against(signature, "m.json")  # static batch 1 fits a dynamic engine batch
    tensors["images"] = ("in", "f", (1, 3, 64, 64))
    backend._inputs, backend._outputs = engine_tensor_specs(trt, engine)
    with pytest.raises(
        SidecarError, match=r"m\.json: input\.shape\[2\] is 32 but tensorrt's 'images' has 64"
    ):
        spec.check_against(backend.io_signature(), "m.json")

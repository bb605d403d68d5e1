"""Engine building (runtime.tools.engine_build, torch-free): the real thing needs TensorRT and a GPU
(skipped here, with the reason); the TensorRT 10 / 11 call sequences are exercised against a
recording stand-in of the documented Python API (builder flags, precision constraints, calibrator,
optimisation profiles, timing cache, DLA + GPU fallback, engine inspector, plugin registry)."""

import json
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract.fs import sha256_file
from runtime import load_artifact
from runtime.errors import ArtifactError
from runtime.tools.engine_build import (
    EngineBuildError,
    EngineOptions,
    ShapeProfile,
    TensorRTUnavailableError,
    build_engine,
    parse_shape,
)
from tests.helpers.real_api_surface import TENSORRT_VERSIONS, surface_or_reason
from tests.helpers.runtime_models import semantic_model, write_artifact
from tests.helpers.strict_api import StrictApi


class _Recorder:
    def __init__(self):
        self.calls = []
        self.strict = False  # True: the stand-in runs behind the strict proxy of the real release


def _fake_tensorrt(version: str, rec: _Recorder, plugins=("ModulatedDeformConv2d",)) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"

    class Enum:
        def __init__(self, **members):
            self.__dict__.update(members)

    # The real values (10.x: EXPLICIT_BATCH 0, STRONGLY_TYPED 1; 11.x: STRONGLY_TYPED 0, EXPLICIT_BATCH
    # gone): the code shifts 1 by them, so a wrong value here would hide a wrong flag word.
    if version.startswith("10."):
        trt.NetworkDefinitionCreationFlag = Enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    else:
        trt.NetworkDefinitionCreationFlag = Enum(STRONGLY_TYPED=0)
    trt.BuilderFlag = Enum(
        FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY", TF32="TF32", GPU_FALLBACK="GPU_FALLBACK"
    )
    trt.MemoryPoolType = Enum(WORKSPACE="WORKSPACE")
    trt.DeviceType = Enum(GPU="GPU", DLA="DLA")
    trt.ProfilingVerbosity = Enum(DETAILED="DETAILED")
    trt.LayerInformationFormat = Enum(JSON="JSON", ONELINE="ONELINE")
    trt.LayerType = Enum(
        NORMALIZATION="norm",
        SOFTMAX="softmax",
        REDUCE="reduce",
        TOPK="topk",
        CONVOLUTION="conv",
        PLUGIN_V2="plugin",
        PLUGIN_V3="plugin_v3",
    )

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class ILogger:  # TensorRT's Python logger base class (subclassed for --log)
        def __init__(self):
            pass

    class Tensor:
        dtype = "float32"

    class Layer:
        def __init__(self, name, type_):
            self.name, self.type, self.num_outputs, self.precision = name, type_, 1, None

        def get_output(self, index):
            return Tensor()

        def set_output_type(self, index, dtype):
            rec.calls.append(("set_output_type", self.name, dtype))

    class Network:
        _layers: typing.ClassVar = [
            Layer("ln", "norm"),
            Layer("conv", "conv"),
            Layer("argmax", "topk"),
            Layer("DeformConv_1", "plugin"),
        ]
        num_layers = len(_layers)

        def get_layer(self, index):
            return self._layers[index]

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.logger = logger

        def parse_from_file(self, model):
            rec.calls.append(("parse", Path(model).name))
            if hasattr(self.logger, "log"):
                self.logger.log(types.SimpleNamespace(name="INFO"), f"parsed {Path(model).name}")
            return True

    class Config:
        default_device_type = "GPU"
        DLA_core = -1
        profiling_verbosity = None
        builder_optimization_level = 3

        def set_memory_pool_limit(self, pool, pool_size):
            rec.calls.append(("workspace", pool_size))

        def set_flag(self, flag):
            rec.calls.append(("flag", flag))

        def clear_flag(self, flag):
            rec.calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            rec.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            rec.calls.append(("timing_cache_in", data))
            return types.SimpleNamespace(serialize=lambda: data + b"+timing")

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache
            rec.calls.append(("timing_cache",))

        def get_timing_cache(self):
            return self._cache

        def can_run_on_DLA(self, layer):
            return layer.type == "conv"

    class Profile:
        def __init__(self):
            self.shapes = []

        def set_shape(self, input, min, opt, max):  # the real argument names
            self.shapes.append((input, tuple(min), tuple(opt), tuple(max)))

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
            rec.calls.append(("calibrator", getattr(config, "int8_calibrator", None) is not None))
            rec.calls.append(("device", config.default_device_type, config.DLA_core))
            rec.calls.append(("verbosity", config.profiling_verbosity))
            return b"ENGINE"

    class Inspector:
        def get_engine_information(self, format):
            assert format == "JSON"
            return json.dumps({"Layers": [{"Name": "{ForeignNode[conv]}"}, {"Name": "DeformConv_1"}]})

    class Engine:
        def create_engine_inspector(self):
            return Inspector()

    class Runtime:
        DLA_core = -1

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            rec.calls.append(("deserialize", bytes(serialized_engine), self.DLA_core))
            return Engine()

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    registry = types.SimpleNamespace(all_creators=[types.SimpleNamespace(name=n) for n in plugins])
    trt.Logger, trt.ILogger, trt.OnnxParser, trt.Builder, trt.Runtime = (
        Logger,
        ILogger,
        Parser,
        Builder,
        Runtime,
    )
    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    trt.get_plugin_registry = lambda: registry

    def init_plugins(logger, namespace):
        rec.calls.append(("plugins",))
        return True

    trt.init_libnvinfer_plugins = init_plugins
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    """Installs the stand-in as ``tensorrt``; for a release in TENSORRT_VERSIONS, behind the strict
    proxy of that release's real API (when its bindings can be fetched), and at teardown asserts
    that the code made no call the real release would refuse."""
    apis: list[StrictApi] = []

    def install(version, **kwargs):
        rec = _Recorder()
        module = _fake_tensorrt(version, rec, **kwargs)
        if version in TENSORRT_VERSIONS:
            surface, _ = surface_or_reason("tensorrt", version)
            if surface is not None:
                apis.append(StrictApi(surface, f"TensorRT {version}"))
                module = apis[-1].module(module)
                rec.strict = True
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        monkeypatch.setattr(
            "runtime.tools.engine_build.device_description",
            lambda: {"gpu_name": "Orin", "compute_capability": "8.7"},
        )
        return rec

    yield install
    mismatches = [m for api in apis for m in api.mismatches]
    assert not mismatches, "calls the real TensorRT would refuse:\n" + "\n".join(mismatches)


def _artifact(tmp_path, precision="fp32", dynamic=False, model=None):
    folder = tmp_path / f"{precision}{'-dyn' if dynamic else ''}"
    folder.mkdir(exist_ok=True)
    shape = ("batch", 3, "height", "width") if dynamic else (1, 3, 64, 128)
    path = write_artifact(folder, model or semantic_model(64, 128), shape=shape)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["precision"] = precision
    if dynamic:
        sidecar["input"].update({"default_size": [64, 128], "size_multiple": 32, "dynamic": True})
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def _flags(rec):
    return [c[1] for c in rec.calls if c[0] == "flag"]


def test_tensorrt_11_is_strongly_typed_without_flags(fake_trt, tmp_path):
    rec = fake_trt("11.4.0.106")
    result = build_engine(_artifact(tmp_path, "fp16"), tmp_path / "out")
    assert result.engine_path == tmp_path / "out" / "model.fp16.engine"
    # TensorRT 11 keeps the STRONGLY_TYPED flag (value 0); every network is strongly typed and the
    # builder is asked for it explicitly, as on 10.x.
    assert ("create_network", 1 << 0) in rec.calls and _flags(rec) == []
    info = result.spec.provenance.tensorrt
    assert (info["version"], info["strongly_typed"], info["precision"]) == ("11.4.0.106", True, "fp16")
    assert info["compute_capability"] == "8.7" and info["profiles"] == []
    assert result.engine_path.read_bytes() == b"ENGINE"
    # The engine + sidecar pair is an artifact the runtime opens (tensorrt backend, checksum ok).
    engine = load_artifact(result.engine_path)
    assert engine.backend == "tensorrt" and engine.precision == "fp16" and engine.head == "semantic"
    assert engine.spec.provenance.sha256 == sha256_file(result.engine_path)
    with pytest.raises(EngineBuildError, match="strongly typed as FP32 only"):
        build_engine(_artifact(tmp_path), tmp_path / "out", EngineOptions(precision="fp16"))
    with pytest.raises(EngineBuildError, match="strongly typed networks only"):
        build_engine(_artifact(tmp_path), tmp_path / "out", EngineOptions(strongly_typed=False))
    with pytest.raises(EngineBuildError, match="the graph is fp16"):
        build_engine(_artifact(tmp_path, "fp16"), tmp_path / "out", EngineOptions(precision="int8"))


def test_tensorrt_10_weak_typing_flags_constraints_and_caches(fake_trt, tmp_path):
    rec = fake_trt("10.3.0")
    onnx_path = _artifact(tmp_path)
    with pytest.raises(EngineBuildError, match="needs --calib-cache"):
        build_engine(onnx_path, tmp_path / "out", EngineOptions(precision="int8"))
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\nimages: 3c010204\n")
    timing = tmp_path / "timing.cache"
    options = EngineOptions(precision="int8", calibration_cache=cache, timing_cache=timing, workspace_mib=512)
    result = build_engine(onnx_path, tmp_path / "out", options)
    assert _flags(rec) == ["FP16", "INT8", "OBEY"]
    assert (
        ("calibrator", True) in rec.calls
        and ("plugins",) in rec.calls
        and ("workspace", 512 << 20) in rec.calls
    )
    assert result.spec.provenance.tensorrt["pinned_layers"] == ["ln", "argmax", "DeformConv_1"]
    assert result.spec.provenance.tensorrt["strongly_typed"] is False
    # Timing cache: created empty, written back; the next build reads what the first one wrote.
    assert ("timing_cache_in", b"") in rec.calls and timing.read_bytes() == b"+timing"
    build_engine(onnx_path, tmp_path / "out", options)
    assert ("timing_cache_in", b"+timing") in rec.calls and timing.read_bytes() == b"+timing+timing"
    # FP32 on TensorRT 10: weakly typed with TF32 off; Q/DQ INT8 graphs build strongly typed.
    rec.calls.clear()
    build_engine(onnx_path, tmp_path / "out", EngineOptions(precision="fp32"))
    assert ("clear_flag", "TF32") in rec.calls and _flags(rec) == []
    rec.calls.clear()
    int8 = build_engine(_artifact(tmp_path, "int8"), tmp_path / "out")
    assert int8.spec.provenance.tensorrt["strongly_typed"] and ("create_network", 1 << 1) in rec.calls
    assert _flags(rec) == [] and ("calibrator", False) in rec.calls


def test_dynamic_exports_get_a_profile_from_the_sidecar(fake_trt, tmp_path):
    rec = fake_trt("10.3.0")
    dyn = _artifact(tmp_path, "fp16", dynamic=True, model=semantic_model("height", "width", batch="batch"))
    result = build_engine(dyn, tmp_path / "out")
    profile = ("images", (1, 3, 32, 64), (1, 3, 64, 128), (1, 3, 64, 128))
    assert [c for c in rec.calls if c[0] == "profile"] == [("profile", [profile])]
    assert tuple(result.spec.provenance.tensorrt["profiles"][0]["opt"]) == (1, 3, 64, 128)
    rec.calls.clear()
    options = EngineOptions(max_shape=parse_shape("2x3x128x256"), contexts=2)
    build_engine(dyn, tmp_path / "out", options)
    wider = ("images", (1, 3, 32, 64), (1, 3, 64, 128), (2, 3, 128, 256))
    assert [c for c in rec.calls if c[0] == "profile"] == [("profile", [wider])] * 2  # one per context
    with pytest.raises(EngineBuildError, match="outside the exported range: axis 1 is fixed to 3"):
        build_engine(dyn, tmp_path / "out", EngineOptions(max_shape=(1, 4, 64, 128)))
    with pytest.raises(EngineBuildError, match="multiples of 32"):
        build_engine(dyn, tmp_path / "out", EngineOptions(opt_shape=parse_shape("100x200")))
    with pytest.raises(EngineBuildError, match="min <= opt <= max"):
        build_engine(dyn, tmp_path / "out", EngineOptions(min_shape=(1, 3, 128, 256)))
    explicit = ShapeProfile("images", (1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 96, 96))
    rec.calls.clear()
    build_engine(dyn, tmp_path / "out", EngineOptions(profiles=[explicit]))
    assert [c for c in rec.calls if c[0] == "profile"] == [
        ("profile", [(explicit.input_name, explicit.min, explicit.opt, explicit.max)])
    ]
    with pytest.raises(EngineBuildError, match="need a --dynamic export"):
        build_engine(_artifact(tmp_path, "fp16"), tmp_path / "out", EngineOptions(max_shape=(2, 3, 64, 128)))
    with pytest.raises(EngineBuildError, match="expected NxCxHxW"):
        parse_shape("big")


def test_dla_with_gpu_fallback_reports_the_layer_split(fake_trt, tmp_path):
    rec = fake_trt("10.3.0")
    onnx_path = _artifact(tmp_path, "fp16")
    with pytest.raises(EngineBuildError, match="cannot run on DLA .*add --gpu-fallback"):
        build_engine(onnx_path, tmp_path / "out", EngineOptions(dla_core=0))
    with pytest.raises(EngineBuildError, match="give --dla-core"):
        build_engine(onnx_path, tmp_path / "out", EngineOptions(gpu_fallback=True))
    with pytest.raises(EngineBuildError, match="DLA runs FP16 / INT8 only"):
        build_engine(_artifact(tmp_path), tmp_path / "out", EngineOptions(dla_core=0, precision="fp32"))
    rec.calls.clear()
    result = build_engine(onnx_path, tmp_path / "out", EngineOptions(dla_core=1, gpu_fallback=True))
    assert ("device", "DLA", 1) in rec.calls and "GPU_FALLBACK" in _flags(rec)
    assert ("verbosity", "DETAILED") in rec.calls and ("deserialize", b"ENGINE", 1) in rec.calls
    dla = result.spec.provenance.tensorrt["dla"]
    assert dla["network_layers_on_dla"] == 1 and dla["network_layers_on_gpu"] == [
        "ln",
        "argmax",
        "DeformConv_1",
    ]
    assert dla["engine_layers"] == ["{ForeignNode[conv]}", "DeformConv_1"]
    assert "1 on DLA, 3 on the GPU" in result.summary()
    fake_trt("11.4.0.106")
    with pytest.raises(EngineBuildError, match="no DLA support on Jetson"):
        build_engine(onnx_path, tmp_path / "out", EngineOptions(dla_core=0, gpu_fallback=True))


def test_build_cli_passes_its_options(fake_trt, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    rec = fake_trt("10.3.0")
    dyn = _artifact(tmp_path, "fp16", dynamic=True, model=semantic_model("height", "width", batch="batch"))
    args = ["build", str(dyn), "--out", str(tmp_path / "o"), "--max", "2x3x128x256", "--workspace", "256"]
    args += [
        "--timing-cache",
        str(tmp_path / "t.cache"),
        "--log",
        str(tmp_path / "b.log"),
        "--opt-level",
        "4",
    ]
    args += ["--dla-core", "0", "--gpu-fallback", "--contexts", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "engine       " in result.output and "profile      images: min [1, 3, 32, 64]" in result.output
    assert ("workspace", 256 << 20) in rec.calls and ("device", "DLA", 0) in rec.calls
    assert len([c for c in rec.calls if c[0] == "profile"]) == 2
    assert (tmp_path / "t.cache").is_file() and (tmp_path / "b.log").is_file()
    bad = CliRunner().invoke(app, ["build", str(dyn), "--out", str(tmp_path / "o"), "--max", "1x3x100x100"])
    assert bad.exit_code == 2 and "error: " in bad.output and "multiples of 32" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def _deform_model() -> onnx.ModelProto:
    """labels = argmax(DeformConv(images)): a semantic head whose graph holds ONNX DeformConv."""
    nodes = [
        helper.make_node("DeformConv", ["images", "W", "offset"], ["y"], kernel_shape=[1, 1]),
        helper.make_node("ArgMax", ["y"], ["idx"], axis=1, keepdims=0),
        helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.INT32),
    ]
    graph = helper.make_graph(
        nodes,
        "deform",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 128])],
        [helper.make_tensor_value_info("labels", TensorProto.INT32, [1, 64, 128])],
        [
            numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "W"),
            numpy_helper.from_array(np.zeros((1, 2, 64, 128), np.float32), "offset"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def test_deformconv_needs_the_plugin_library(fake_trt, tmp_path):
    deform = _artifact(tmp_path, "fp16", model=_deform_model())
    fake_trt("10.0.1")
    with pytest.raises(EngineBuildError, match=r"needs >= 10\.1"):
        build_engine(deform, tmp_path / "out")
    fake_trt("10.3.0", plugins=("BatchedNMS_TRT",))
    with pytest.raises(EngineBuildError, match="plugin library .*ModulatedDeformConv2d"):
        build_engine(deform, tmp_path / "out")
    fake_trt("10.3.0")
    assert build_engine(deform, tmp_path / "out").engine_path.is_file()
    fake_trt("10.0.1")  # a graph without DeformConv does not need the plugin
    assert build_engine(_artifact(tmp_path, "fp16"), tmp_path / "out").engine_path.is_file()


def test_wrong_artifacts_and_build_log(fake_trt, tmp_path):
    fake_trt("10.3.0")
    result = build_engine(
        _artifact(tmp_path, "fp16"), tmp_path / "out", EngineOptions(log_path=tmp_path / "b.log")
    )
    assert "[INFO] parsed model.onnx" in (tmp_path / "b.log").read_text()
    with pytest.raises(ArtifactError, match="already a TensorRT engine"):
        build_engine(result.engine_path, tmp_path / "again")
    changed = _artifact(tmp_path, "fp16")
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="checksum does not match"):
        build_engine(changed, tmp_path / "out")
    with pytest.raises(EngineBuildError, match="--opt-level 9"):
        build_engine(
            _artifact(tmp_path, "fp16"), tmp_path / "out", EngineOptions(builder_optimization_level=9)
        )


def test_export_engine_step_is_the_same_code(fake_trt, tmp_path):
    from export.tensorrt_engine import build_engine as export_build

    fake_trt("11.4.0.106")
    onnx_path = _artifact(tmp_path, "fp16")
    sidecar = export_build(
        onnx_path, onnx_path.with_name("model.fp16.engine"), EngineOptions(precision="fp16")
    )
    assert sidecar.provenance.engine.strongly_typed and onnx_path.with_name("model.fp16.json").is_file()


def test_without_tensorrt_the_error_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        build_engine(_artifact(tmp_path), tmp_path / "out")


def test_build_verify_and_tensorrt_backend_import_without_torch(tmp_path):
    """Done-when: build, verify and the TensorRT backend never import torch (nor pem/, export/)."""
    onnx_path = _artifact(tmp_path)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['pem'] = None; sys.modules['export'] = None\n"
        "import runtime.tools.engine_build, runtime.tools.verify, runtime.core.backends.tensorrt_backend\n"
        "from typer.testing import CliRunner; from cli import app\n"
        f"r = CliRunner().invoke(app, ['build', {str(onnx_path)!r}, '--out', {str(tmp_path / 'o')!r}])\n"
        "print(r.exit_code, r.output.strip().splitlines()[-1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=Path.cwd()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 error: TensorRT is not installed"), out.stdout


def test_real_engine_build_and_run(tmp_path):
    """On a machine with TensorRT and a GPU: build a tiny engine and run it through the runtime."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    pytest.importorskip("cuda", reason="cuda-python is not installed on this machine")
    from runtime.core.backends.tensorrt_backend import TensorRTBackend

    result = build_engine(_artifact(tmp_path), tmp_path / "out", EngineOptions(precision="fp32"))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    with TensorRTBackend(result.engine_path, result.spec) as backend:
        labels = backend.infer({"images": x})["labels"]
    np.testing.assert_array_equal(labels, x.argmax(1))


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_every_build_path_against_the_real_release(fake_trt, tmp_path, version):
    """Each path of build_engine, run through the strict proxy of the real bindings of ``version``:
    any attribute, enum member, property or argument the release lacks fails the test (at the call,
    or at teardown where the code caught it)."""
    _, reason = surface_or_reason("tensorrt", version)
    if reason:
        pytest.skip(reason)
    rec = fake_trt(version)
    assert rec.strict
    dyn = _artifact(tmp_path, "fp16", dynamic=True, model=semantic_model("height", "width", batch="batch"))
    log, timing = tmp_path / "build.log", tmp_path / "timing.cache"
    options = EngineOptions(contexts=2, timing_cache=timing, log_path=log, builder_optimization_level=4)
    result = build_engine(dyn, tmp_path / "dyn", options)  # strongly typed FP16, profiles, contexts
    assert len(result.spec.provenance.tensorrt["profiles"]) == 1 and timing.is_file() and log.is_file()
    int8 = build_engine(_artifact(tmp_path, "int8"), tmp_path / "int8-engine")  # Q/DQ INT8, strongly typed
    assert int8.spec.provenance.tensorrt["strongly_typed"]
    strongly = 1 << (1 if version.startswith("10.") else 0)
    assert [c for c in rec.calls if c[0] == "create_network"] == [("create_network", strongly)] * 2
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\nimages: 3c010204\n")
    if version.startswith("10."):  # the weakly typed path: builder flags, calibrator, DLA
        weak = build_engine(
            _artifact(tmp_path), tmp_path / "w", EngineOptions(precision="int8", calibration_cache=cache)
        )
        assert not weak.spec.provenance.tensorrt["strongly_typed"] and _flags(rec) == ["FP16", "INT8", "OBEY"]
        build_engine(_artifact(tmp_path), tmp_path / "w32", EngineOptions(precision="fp32"))
        dla = build_engine(
            _artifact(tmp_path, "fp16"), tmp_path / "d", EngineOptions(dla_core=0, gpu_fallback=True)
        )
        assert dla.spec.provenance.tensorrt["dla"]["core"] == 0
    else:  # TensorRT 11 refuses the weakly typed requests before touching the API
        with pytest.raises(EngineBuildError, match="strongly typed"):
            build_engine(
                _artifact(tmp_path), tmp_path / "w", EngineOptions(precision="int8", calibration_cache=cache)
            )
        with pytest.raises(EngineBuildError, match="no DLA support"):
            build_engine(
                _artifact(tmp_path, "fp16"), tmp_path / "d", EngineOptions(dla_core=0, gpu_fallback=True)
            )


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_calibration_cache_algorithms_are_the_real_ones(version):
    """calib/trt_cache.py writes TensorRT's cache header by algorithm name: every name must be a
    CalibrationAlgoType of TensorRT 10; TensorRT 11 has no implicit calibration at all."""
    from calib.trt_cache import ALGORITHMS

    surface, reason = surface_or_reason("tensorrt", version)
    if surface is None:
        pytest.skip(reason)
    algo = surface["module"].get("CalibrationAlgoType")
    if version.startswith("10."):
        real = {name.replace("_", "").lower() for name in algo["enum"]}
        assert {name.lower() for name in ALGORITHMS} <= real
        assert "IInt8EntropyCalibrator2" in surface["module"]
    else:
        assert algo is None and "IInt8EntropyCalibrator2" not in surface["module"]


def test_an_onnxruntime_layout_int8_graph_is_refused_with_what_to_run(tmp_path):
    """No TensorRT needed: the layout is read from the sidecar before TensorRT is imported."""
    path = _artifact(tmp_path, "int8")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["int8"] = {"target": "onnxruntime", "activation_dtype": "uint8"}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(EngineBuildError, match=r"onnxruntime layout .* --target tensorrt") as caught:
        build_engine(path, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()

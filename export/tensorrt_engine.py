"""TensorRT engines from exported ONNX files, for TensorRT 10 (JetPack 6) and 11 (strongly typed).

Two paths:

* **Strongly typed** (TensorRT 11, and TensorRT >= 9 on request): the ONNX graph already carries
  its precisions (the FP16 graph written by ``pem-deploy export --precision fp16``, or the Q/DQ
  INT8 graph written by calibration). TensorRT only compiles it: no precision flags, no
  calibrator.
* **Weakly typed** (TensorRT 10 only): an FP32 ONNX plus builder flags (FP16 / INT8), precision
  constraints that pin the fragile layers (L2-normalize, LayerNorm, softmax, the prototype
  similarity/argmax, DeformConv) to FP32/FP16, and for INT8 a calibrator that serves a
  calibration cache written by ``pem-deploy calibrate`` (TensorRT's own text format).

TensorRT is imported lazily: this module loads on machines without it, and every entry point
raises :class:`TensorRTUnavailableError` with the reason when it is missing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from contract.errors import SidecarError
from contract.fs import atomic_write_bytes
from contract.sidecar import Sidecar
from export.errors import ExportError

EnginePrecision = Literal["fp32", "fp16", "int8"]

# Weakly typed path: TensorRT layer types pinned to FP32, the FP16 failure modes named in
# shared/design/deploy-notes.md (overflow in LayerNorm / L2-normalize / softmax; ties flipping the
# prototype argmax, an ITopK layer). DeformConv (a plugin) has no INT8 kernel: pinned to FP16.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "TOPK")


class TensorRTUnavailableError(ExportError):
    """TensorRT (or CUDA) is not installed on this machine."""


@dataclass(frozen=True)
class ShapeProfile:
    """An optimisation profile for one input: min / opt / max shapes."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass
class EngineOptions:
    """How to build an engine.

    Args:
        precision: what the engine should compute in. With ``strongly_typed`` it only labels
            the result (the graph decides); on the weakly typed path it sets builder flags.
        strongly_typed: ``None`` picks it from the TensorRT version (TensorRT >= 11: always).
        calibration_cache: TensorRT-format cache for the weakly typed INT8 path.
        workspace_mib: builder workspace limit.
        timing_cache: path of a timing cache to reuse and update (speeds up rebuilds).
        profiles: shapes for dynamic inputs (required when the ONNX input is dynamic).
        builder_optimization_level: 0-5 (TensorRT's default is 3).
    """

    precision: EnginePrecision = "fp16"
    strongly_typed: bool | None = None
    calibration_cache: Path | None = None
    workspace_mib: int = 2048
    timing_cache: Path | None = None
    profiles: list[ShapeProfile] = field(default_factory=list)
    builder_optimization_level: int | None = None


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailableError` saying why not."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed ({exc}); on Jetson it comes with JetPack, on x86 install "
            "NVIDIA's tensorrt wheel"
        ) from None
    return trt


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> Any:
    if strongly_typed:
        flags = 0 if tensorrt_major(trt) >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:
        flags = 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    return network


def _pin_fragile_layers(trt: Any, network: Any, precision: EnginePrecision) -> list[str]:
    """Weakly typed path: precision constraints on layers that must not run in FP16/INT8."""
    pinned: list[str] = []
    fp32_types = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES if hasattr(trt.LayerType, name)}
    plugin_types = {
        getattr(trt.LayerType, name) for name in ("PLUGIN_V2", "PLUGIN_V3") if hasattr(trt.LayerType, name)
    }
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in fp32_types:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float16, trt.float32):
                    layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
        elif precision == "int8" and layer.type in plugin_types and "deform" in layer.name.lower():
            layer.precision = trt.float16
            pinned.append(layer.name)
    return pinned


class _CacheCalibrator:
    """Factory for a TensorRT 10 entropy calibrator that only serves an existing cache.

    TensorRT reads the cache first; when it is valid it never asks for batches, so no images (and
    no CUDA buffers) are needed at build time. Calibrate with ``pem-deploy calibrate``.
    """

    @staticmethod
    def create(trt: Any, cache: bytes) -> Any:
        class CacheOnlyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                super().__init__()
                self._cache = cache

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: list[str]) -> None:  # cache only: no data
                return None

            def read_calibration_cache(self) -> bytes:
                return self._cache

            def write_calibration_cache(self, cache: bytes) -> None:
                return None

        return CacheOnlyCalibrator()


def build_engine(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], options: EngineOptions
) -> dict[str, Any]:
    """Build ``engine_path`` (+ its ``.json`` sidecar) from ``onnx_path``; returns the sidecar.

    The ONNX file's own sidecar (``<onnx>.json``) is copied into the engine sidecar with a
    ``tensorrt`` section (version, GPU, compute capability, precision, typing, profiles), which the
    runtime checks before it loads the engine. Files are written atomically.
    """
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file")
    source_sidecar = onnx_path.with_suffix(".json")
    if not source_sidecar.is_file():
        raise ExportError(f"{onnx_path}: its sidecar {source_sidecar.name} is missing (export writes both)")
    onnx_spec = Sidecar.from_file(source_sidecar)  # the one schema; refused before the slow build
    major = tensorrt_major(trt)
    strongly_typed = options.strongly_typed if options.strongly_typed is not None else major >= 11
    if major >= 11 and not strongly_typed:
        raise ExportError("TensorRT 11 builds strongly typed networks only: export an FP16 or Q/DQ INT8 ONNX")
    if not strongly_typed and options.precision == "int8" and options.calibration_cache is None:
        raise ExportError("weakly typed INT8 needs --calib-cache (run pem-deploy calibrate first)")

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # ModulatedDeformConv2d plugin behind ONNX DeformConv
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, logger, onnx_path, strongly_typed)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    pinned: list[str] = []
    if not strongly_typed:
        if options.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            cache = Path(options.calibration_cache).read_bytes()  # type: ignore[arg-type]
            config.int8_calibrator = _CacheCalibrator.create(trt, cache)
        if options.precision != "fp32":
            pinned = _pin_fragile_layers(trt, network, options.precision)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if options.profiles:
        profile = builder.create_optimization_profile()
        for p in options.profiles:
            profile.set_shape(p.input_name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    timing_cache = None
    if options.timing_cache is not None:
        existing = Path(options.timing_cache).read_bytes() if Path(options.timing_cache).is_file() else b""
        timing_cache = config.create_timing_cache(existing)
        config.set_timing_cache(timing_cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")

    device = _device_description()
    data = bytes(serialized)
    trt_section = {
        "version": str(trt.__version__),
        **device,
        "strongly_typed": strongly_typed,
        "precision": options.precision,
        "pinned_layers": pinned,
        "profiles": [vars(p) for p in options.profiles],
        "source_onnx": onnx_path.name,
    }
    try:
        engine_spec = onnx_spec.replace(
            precision=options.precision,
            model_file=engine_path.name,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            tensorrt=trt_section,
        )
    except SidecarError as exc:
        raise ExportError(f"refusing to write an engine sidecar the runtime would refuse: {exc}") from None
    atomic_write_bytes(engine_path, data)
    atomic_write_bytes(engine_path.with_suffix(".json"), engine_spec.to_json().encode())
    sidecar = engine_spec.to_dict()
    if timing_cache is not None and options.timing_cache is not None:
        atomic_write_bytes(Path(options.timing_cache), bytes(config.get_timing_cache().serialize()))
    return sidecar


def _device_description() -> dict[str, str]:
    """GPU name and compute capability of device 0 (what the engine is tied to)."""
    # The runtime owns the CUDA plumbing; the engine's sidecar must match what it checks.
    from runtime.backends.tensorrt_backend import _import_cudart, device_description
    from runtime.errors import BackendUnavailableError

    try:
        return device_description(_import_cudart(), 0)
    except BackendUnavailableError as exc:
        raise TensorRTUnavailableError(str(exc)) from None

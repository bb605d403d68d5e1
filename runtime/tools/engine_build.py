"""TensorRT engines from exported ONNX artifacts, torch-free (``pem-deploy build``, and the engine
step of ``pem-deploy export --format engine``).

Needs TensorRT, numpy and onnx only: engines are tied to the GPU and TensorRT version they are
built on, so a Jetson builds its own from the ONNX + sidecar shipped to it.

Two paths, chosen from the installed TensorRT and the artifact's precision:

* **Strongly typed** (TensorRT 11 always; TensorRT 10 for FP16 / Q/DQ INT8 graphs): the ONNX
  graph carries its precisions (``pem-deploy export --precision fp16`` or ``pem-deploy
  calibrate``); TensorRT only compiles it. No precision flags, no calibrator.
* **Weakly typed** (TensorRT 10, from an FP32 ONNX): builder flags (FP16 / INT8), precision
  constraints pinning the fragile layers (L2-normalize, LayerNorm, softmax, the prototype
  similarity / argmax, DeformConv), and for INT8 a calibrator serving a TensorRT-format
  calibration cache written by ``pem-deploy calibrate``.

Dynamic exports get optimisation profiles from the sidecar (``input.shape`` / ``default_size`` /
``size_multiple``), overridable; a profile outside the exported range is refused. A timing cache
is read and written back atomically. On Jetson, DLA with GPU fallback reports the layer split.

TensorRT is imported lazily: this module loads anywhere, and every entry point raises
:class:`TensorRTUnavailableError` with the reason when TensorRT is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import SidecarError
from contract.fs import atomic_write_bytes
from contract.output import check_file, check_folder, staged_folder, write_file
from contract.sidecar import Sidecar
from contract.sidecar_records import EngineRecord, ShapeProfile
from contract.vocabulary import PRECISIONS, Precision
from runtime.core.artifact import Artifact, load_artifact
from runtime.errors import ArtifactError, BackendUnavailableError, RuntimeToolError

EnginePrecision = Precision

# Weakly typed path: TensorRT layer types pinned to FP32, the FP16 failure modes named in
# shared/design/deploy-notes.md (overflow in LayerNorm / L2-normalize / softmax; ties flipping the
# prototype argmax, an ITopK layer). DeformConv (a plugin) has no INT8 kernel: pinned to FP16.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "TOPK")
# TensorRT's ONNX parser maps ONNX DeformConv to this plugin of libnvinfer_plugin (TensorRT >= 10.1).
DEFORM_PLUGIN = "ModulatedDeformConv2d"


class EngineBuildError(RuntimeToolError):
    """An engine cannot be built from this artifact with these options (one line, names the cause)."""


class TensorRTUnavailableError(BackendUnavailableError):
    """TensorRT (or CUDA) is not installed on this machine."""


@dataclass
class EngineOptions:
    """How to build an engine.

    Args:
        precision: what the engine computes in; ``None``: the artifact's own precision. For FP16 /
            INT8 graphs (strongly typed) it must equal the graph's; on the weakly typed path it
            sets builder flags.
        strongly_typed: ``None`` picks it (TensorRT >= 11, or a graph that carries its precision).
        calibration_cache: TensorRT-format cache for the weakly typed INT8 path.
        workspace_mib: builder workspace limit.
        timing_cache: a timing cache to reuse and update (rebuilds are much faster).
        profiles: explicit shapes for dynamic inputs (default: from the sidecar).
        min_shape / opt_shape / max_shape: override one corner of the default profile.
        builder_optimization_level: 0-5 (TensorRT's default is 3).
        dla_core: build for this DLA core (Jetson); ``gpu_fallback`` lets unsupported layers run
            on the GPU (PEM's DeformConv and attention always need it).
        contexts: copies of the optimisation profile, so that this many execution contexts of a
            dynamic engine can run at once (each context owns one profile).
        log_path: write TensorRT's log (INFO and above) to this file.
        exist_ok / overwrite: how the outputs may meet existing files (:mod:`contract.output`):
            ``exist_ok`` an output folder holding other files; ``overwrite`` replace an existing
            explicit ``.engine`` / log file, or files pem-deploy did not write in the folder.
    """

    precision: EnginePrecision | None = None
    strongly_typed: bool | None = None
    calibration_cache: Path | None = None
    workspace_mib: int = 2048
    timing_cache: Path | None = None
    profiles: list[ShapeProfile] = field(default_factory=list)
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    builder_optimization_level: int | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    contexts: int = 1
    log_path: Path | None = None
    exist_ok: bool = False
    overwrite: bool = False

    def validate(self) -> None:
        """Refuse inconsistent options (one line each)."""
        if self.precision is not None and self.precision not in PRECISIONS:
            raise EngineBuildError(f"--precision {self.precision}: choose fp32, fp16 or int8")
        if self.workspace_mib < 1:
            raise EngineBuildError(f"--workspace {self.workspace_mib}: must be >= 1 MiB")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= 5:
            raise EngineBuildError(f"--opt-level {level}: TensorRT accepts 0 to 5")
        if self.dla_core is not None and self.dla_core < 0:
            raise EngineBuildError(f"--dla-core {self.dla_core}: must be >= 0")
        if self.gpu_fallback and self.dla_core is None:
            raise EngineBuildError("--gpu-fallback is for DLA builds: give --dla-core N too")
        if self.contexts < 1:
            raise EngineBuildError(f"--contexts {self.contexts}: must be >= 1")
        if self.calibration_cache is not None and not Path(self.calibration_cache).is_file():
            raise EngineBuildError(f"--calib-cache {self.calibration_cache}: no such file")


@dataclass
class BuildResult:
    """What :func:`build_engine` wrote."""

    engine_path: Path
    sidecar_path: Path
    spec: Sidecar
    layer_split: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        trt_info = self.spec.provenance.engine or EngineRecord()
        typing_ = "strongly typed" if trt_info.strongly_typed else "weakly typed"
        lines = [
            f"engine       {self.engine_path}",
            f"sidecar      {self.sidecar_path}",
            f"tensorrt     {trt_info.version}, {typing_}, {trt_info.precision}, "
            f"{trt_info.gpu_name or '?'} (compute {trt_info.compute_capability or '?'})",
        ]
        for p in trt_info.profiles[:1]:
            lines.append(
                f"profile      {p.input_name}: min {list(p.min)} opt {list(p.opt)} max {list(p.max)}"
            )
        if self.layer_split:
            dla, gpu = self.layer_split.get("dla", []), self.layer_split.get("gpu", [])
            lines.append(f"layers       {len(dla)} on DLA, {len(gpu)} on the GPU (fallback)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# TensorRT plumbing


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


def tensorrt_version(trt: Any) -> tuple[int, int]:
    """(major, minor) of the installed TensorRT."""
    parts = [int(p) for p in re.findall(r"\d+", str(trt.__version__))[:2]]
    major, minor = [*parts, 0, 0][:2]
    return major, minor


def tensorrt_major(trt: Any) -> int:
    return tensorrt_version(trt)[0]


def _make_logger(trt: Any, lines: list[str] | None) -> Any:
    """TensorRT's WARNING logger, or (``lines`` given, for ``--log``) one that keeps every INFO+
    line and prints warnings and errors."""
    base = getattr(trt, "ILogger", None)
    if lines is None or base is None:
        return trt.Logger(trt.Logger.WARNING)

    class _Logger(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity))
            lines.append(f"[{name}] {msg}")
            if name in ("WARNING", "ERROR", "INTERNAL_ERROR", "kWARNING", "kERROR", "kINTERNAL_ERROR"):
                print(f"tensorrt {name.lower().lstrip('k')}: {msg}", file=sys.stderr)

    return _Logger()


def plugin_names(trt: Any) -> set[str]:
    """Names of the plugin creators registered with TensorRT."""
    registry = trt.get_plugin_registry()
    creators = getattr(registry, "all_creators", None)
    if creators is None:  # TensorRT < 10
        creators = getattr(registry, "plugin_creator_list", [])
    return {str(getattr(c, "name", "")) for c in creators}


def _require_plugins(trt: Any, logger: Any, onnx_ops: set[str], model_path: Path) -> None:
    """DeformConv needs TensorRT >= 10.1's plugin library (libnvinfer_plugin)."""
    ok = trt.init_libnvinfer_plugins(logger, "")
    if "DeformConv" not in onnx_ops:
        return
    version = tensorrt_version(trt)
    if version < (10, 1):
        raise EngineBuildError(
            f"{model_path}: the graph uses ONNX DeformConv, which TensorRT {trt.__version__} cannot import "
            "(needs >= 10.1); upgrade TensorRT or export with --deform-impl decomposed"
        )
    if ok is False or DEFORM_PLUGIN not in plugin_names(trt):
        raise EngineBuildError(
            f"{model_path}: the graph uses ONNX DeformConv but TensorRT's plugin library "
            f"(libnvinfer_plugin, {DEFORM_PLUGIN}) is not loaded; install it (JetPack: "
            "libnvinfer-plugin10) or export with --deform-impl decomposed"
        )


def onnx_op_types(path: Path) -> set[str]:
    """Operator types of an ONNX file's main graph (weights are not loaded)."""
    try:
        import onnx
    except ImportError:
        return set()  # TensorRT's parser will report what it cannot import
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ArtifactError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return {node.op_type for node in model.graph.node}


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> Any:
    # STRONGLY_TYPED is 1 on TensorRT 10 and 0 on 11 (whose networks are all strongly typed, but
    # whose bindings still have the flag: checked against the real 10.3 / 10.16 / 11.4 bindings).
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    return network


def _pin_fragile_layers(trt: Any, network: Any, precision: str) -> list[str]:
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


def _cache_calibrator(trt: Any, cache: bytes) -> Any:
    """A TensorRT 10 entropy calibrator that only serves an existing cache.

    TensorRT reads the cache first; when it is valid it never asks for batches, so no images (and
    no CUDA buffers) are needed at build time. Calibrate with ``pem-deploy calibrate``.
    """

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


# ---------------------------------------------------------------------------------------------
# Optimisation profiles


def parse_shape(text: str, option: str = "--shape") -> tuple[int, ...]:
    """``1x3x512x1024`` (N x C x H x W) or ``512x1024`` (H x W, batch 1) -> a 4-D shape."""
    try:
        dims = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise EngineBuildError(f"{option} {text}: expected NxCxHxW or HxW, e.g. 1x3x512x1024") from None
    if len(dims) == 2:
        dims = (1, 3, *dims)
    if len(dims) != 4 or min(dims) < 1:
        raise EngineBuildError(f"{option} {text}: expected NxCxHxW or HxW with positive sizes")
    return dims


def _round_to(value: int, multiple: int) -> int:
    return max(multiple, (value // multiple) * multiple)


def default_profile(artifact: Artifact, options: EngineOptions) -> ShapeProfile | None:
    """The profile of a dynamic export (None for a static one), with the options' overrides.

    Default: batch 1; height/width from half the exported ``default_size`` (min) to the
    ``default_size`` (opt = max). Every corner is checked against the exported range.
    """
    inp = artifact.spec.input
    shape = list(inp.shape)
    dynamic = [not (isinstance(d, int) and d > 0) for d in shape]
    given = [options.min_shape, options.opt_shape, options.max_shape]
    if not any(dynamic):
        if any(s is not None and tuple(s) != tuple(shape) for s in given):
            raise EngineBuildError(
                f"{artifact.sidecar_path}: the export is static {tuple(shape)}; --min/--opt/--max "
                "need a --dynamic export"
            )
        return None
    multiple = inp.size_multiple
    fmt = artifact.input_format
    h, w = fmt.height, fmt.width
    opt = [1, 3, h, w]
    lo = [1, 3, _round_to(h // 2, multiple), _round_to(w // 2, multiple)]
    for i, d in enumerate(shape):
        if not dynamic[i]:
            opt[i] = lo[i] = int(d)
    corners = [tuple(lo), tuple(opt), tuple(opt)]
    if options.opt_shape is not None:  # an explicit opt moves the defaults around it
        want = options.opt_shape
        lower = tuple(min(a, b) for a, b in zip(corners[0], want))
        upper = tuple(max(a, b) for a, b in zip(corners[2], want))
        corners = [lower, tuple(want), upper]
    corners = [tuple(g) if g is not None else c for g, c in zip(given, corners)]
    profile = ShapeProfile(artifact.input_name, *corners)  # type: ignore[arg-type]
    check_profile(artifact, profile)
    return profile


def check_profile(artifact: Artifact, profile: ShapeProfile) -> None:
    """Refuse a profile outside what the ONNX export accepts (rank, static dims, size multiple)."""
    shape = list(artifact.spec.input.shape)
    multiple = artifact.spec.input.size_multiple
    where = f"{artifact.sidecar_path}"
    if profile.input_name != artifact.input_name:
        raise EngineBuildError(
            f"{where}: profile for {profile.input_name!r}, the input is {artifact.input_name!r}"
        )
    for label, dims in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        if len(dims) != len(shape):
            raise EngineBuildError(
                f"{where}: --{label} {dims} has {len(dims)} dims, the input has {len(shape)}"
            )
        for axis, (d, exported) in enumerate(zip(dims, shape)):
            if isinstance(exported, int) and exported > 0 and d != exported:
                raise EngineBuildError(
                    f"{where}: --{label} {dims} is outside the exported range: axis {axis} is fixed to "
                    f"{exported}"
                )
            if axis >= 2 and not isinstance(exported, int) and d % multiple:
                raise EngineBuildError(
                    f"{where}: --{label} {dims} is outside the exported range: height and width must be "
                    f"multiples of {multiple}"
                )
    if not all(a <= b <= c for a, b, c in zip(profile.min, profile.opt, profile.max)):
        raise EngineBuildError(f"{where}: profile needs min <= opt <= max per axis, got {asdict(profile)}")


# ---------------------------------------------------------------------------------------------
# Build


def _choose_typing(trt: Any, artifact: Artifact, options: EngineOptions) -> tuple[bool, str]:
    """(strongly typed?, precision) for this artifact on the installed TensorRT, or a refusal."""
    graph = artifact.precision if artifact.precision in PRECISIONS else "fp32"
    precision = options.precision or graph
    major = tensorrt_major(trt)
    if graph != "fp32":  # the graph carries its precisions (FP16 or Q/DQ INT8)
        if precision != graph:
            raise EngineBuildError(
                f"{artifact.model_path}: the graph is {graph} (its precisions are in the ONNX); "
                f"--precision {precision} needs the {precision} export (or omit --precision)"
            )
        if options.strongly_typed is False and major >= 11:
            raise EngineBuildError("TensorRT 11 builds strongly typed networks only")
        return (True if options.strongly_typed is None else options.strongly_typed), precision
    strongly = options.strongly_typed if options.strongly_typed is not None else major >= 11
    if major >= 11 and not strongly:
        raise EngineBuildError(
            "TensorRT 11 builds strongly typed networks only: export an FP16 or Q/DQ INT8 ONNX"
        )
    if strongly and precision != "fp32":
        raise EngineBuildError(
            f"{artifact.model_path}: an FP32 graph builds strongly typed as FP32 only (TensorRT "
            f"{trt.__version__}); for {precision} export --precision {precision} (or calibrate for int8)"
        )
    if not strongly and precision == "int8" and options.calibration_cache is None:
        raise EngineBuildError("weakly typed INT8 needs --calib-cache (run pem-deploy calibrate first)")
    return strongly, precision


def _layer_split(trt: Any, config: Any, network: Any) -> dict[str, list[str]]:
    """Which network layers DLA takes and which fall back to the GPU (``can_run_on_DLA``)."""
    split: dict[str, list[str]] = {"dla": [], "gpu": []}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        split["dla" if config.can_run_on_DLA(layer) else "gpu"].append(layer.name)
    return split


def _engine_layers(trt: Any, data: bytes, logger: Any, dla_core: int) -> list[str]:
    """Layer names of the built engine, from the engine inspector (DLA subgraphs show as one)."""
    runtime = trt.Runtime(logger)
    runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        return []
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return [
        str(layer.get("Name", layer)) if isinstance(layer, dict) else str(layer) for layer in info["Layers"]
    ]


def engine_file_name(stem: str, precision: str) -> str:
    """The engine built from ``STEM.onnx`` at ``precision``: ``STEM.PRECISION.engine`` (its sidecar
    ``STEM.PRECISION.json``), so engines of several precisions can sit beside one ONNX artifact."""
    return f"{stem}.{precision}.engine"


def build_engine(
    artifact_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: EngineOptions | None = None,
) -> BuildResult:
    """Build ``out`` (an engine file, or a folder for ``STEM.PRECISION.engine``) + its sidecar.

    The ONNX artifact's sidecar is read through :func:`runtime.core.artifact.load_artifact` (checksum
    verified) and copied into the engine sidecar with a ``tensorrt`` section (version, GPU, compute
    capability, precision, typing, profiles, DLA), which the runtime checks before it loads the
    engine. Files are written atomically.

    Raises:
        TensorRTUnavailableError: TensorRT is not installed.
        ArtifactError: not an ONNX pem-deploy artifact, or its file does not match its sidecar.
        EngineBuildError: options that do not fit the artifact / TensorRT, or a failed build.
    """
    options = options or EngineOptions()
    options.validate()
    artifact = load_artifact(artifact_path)
    _check_source(artifact)
    out = Path(out)
    explicit = out.suffix in (".engine", ".plan")
    read = [artifact.model_path, artifact.sidecar_path, options.calibration_cache]
    _check_targets(out, explicit, options, read)
    trt = import_tensorrt()
    strongly_typed, precision = _choose_typing(trt, artifact, options)
    engine_path = out if explicit else out / engine_file_name(artifact.model_path.stem, precision)
    _check_dla(trt, options, precision)

    log_lines: list[str] | None = [] if options.log_path is not None else None
    logger = _make_logger(trt, log_lines)
    _require_plugins(
        trt, trt.Logger(trt.Logger.WARNING), onnx_op_types(artifact.model_path), artifact.model_path
    )
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, logger, artifact.model_path, strongly_typed)
    config = builder.create_builder_config()
    pinned = _configure_precision(trt, config, network, options, strongly_typed, precision)
    profiles = _add_profiles(builder, config, artifact, options)
    split = _place_on_dla(trt, config, network, artifact, options)
    timing_cache = _use_timing_cache(config, options)

    serialized = builder.build_serialized_network(network, config)
    if options.log_path is not None and log_lines is not None:
        write_file(options.log_path, "\n".join(log_lines) + "\n", overwrite=options.overwrite, inputs=read)
    if serialized is None:
        where = f" (log: {options.log_path})" if options.log_path else " (see the TensorRT errors above)"
        raise EngineBuildError(f"{artifact.model_path}: TensorRT failed to build an engine{where}")
    data = bytes(serialized)

    trt_section: dict[str, Any] = {
        "version": str(trt.__version__),
        **device_description(),
        "strongly_typed": strongly_typed,
        "precision": precision,
        "pinned_layers": pinned,
        "profiles": [asdict(p) for p in profiles],
        "contexts": options.contexts if profiles else None,
        "source_onnx": artifact.model_path.name,
        "source_sha256": artifact.spec.provenance.sha256,
    }
    if options.dla_core is not None:
        trt_section["dla"] = {
            "core": options.dla_core,
            "gpu_fallback": options.gpu_fallback,
            "network_layers_on_dla": len(split.get("dla", [])),
            "network_layers_on_gpu": split.get("gpu", []),
            "engine_layers": _engine_layers(trt, data, logger, options.dla_core),
        }
    engine_spec = _engine_spec(artifact, engine_path, data, precision, trt_section)
    sidecar_path = engine_path.with_suffix(".json")
    _write_engine(out, engine_path, data, engine_spec.to_json(), explicit, options, read)
    if timing_cache is not None and options.timing_cache is not None:
        atomic_write_bytes(Path(options.timing_cache), bytes(config.get_timing_cache().serialize()))
    return BuildResult(engine_path, sidecar_path, engine_spec, split)


def _check_source(artifact: Artifact) -> None:
    """Refuse an engine as source and an INT8 graph in onnxruntime's layout (checked before
    TensorRT is imported: the answer does not depend on it)."""
    if artifact.model_path.suffix != ".onnx":
        raise ArtifactError(
            f"{artifact.model_path}: already a TensorRT engine; build takes the ONNX artifact"
        )
    int8 = artifact.spec.provenance.quantization
    if (
        artifact.precision == "int8"
        and int8 is not None
        and (int8.target == "onnxruntime" or int8.activation_dtype == "uint8")
    ):
        raise EngineBuildError(
            f"{artifact.model_path}: INT8 graph in the onnxruntime layout (UINT8 Q/DQ), which TensorRT "
            "refuses; make the TensorRT layout with pem-deploy calibrate ... --target tensorrt (or "
            "export --precision int8 --target tensorrt) and build that"
        )


def _check_targets(out: Path, explicit: bool, options: EngineOptions, read: list[Any]) -> None:
    """Refused before TensorRT runs: an input as target (whatever the flags), an existing file
    without --overwrite, a folder holding other files without --exist-ok."""
    if explicit:
        for path in (out, out.with_suffix(".json")):
            check_file(path, overwrite=options.overwrite, inputs=read)
    else:
        check_folder(out, exist_ok=options.exist_ok, overwrite=options.overwrite, inputs=read)
    if options.log_path is not None:
        check_file(options.log_path, overwrite=options.overwrite, inputs=read)


def _check_dla(trt: Any, options: EngineOptions, precision: str) -> None:
    if options.dla_core is not None and precision == "fp32":
        raise EngineBuildError(f"--dla-core {options.dla_core}: DLA runs FP16 / INT8 only, not fp32")
    if options.dla_core is not None and tensorrt_major(trt) >= 11:
        # NVIDIA's TensorRT 11 documentation: no DLA support on JetPack / SBSA / DriveOS.
        raise EngineBuildError(
            f"--dla-core {options.dla_core}: TensorRT {trt.__version__} has no DLA support on Jetson; "
            "use TensorRT 10 (JetPack 6) for DLA, or build for the GPU"
        )


def _configure_precision(
    trt: Any, config: Any, network: Any, options: EngineOptions, strongly_typed: bool, precision: str
) -> list[str]:
    """Workspace, optimisation level, profiling verbosity and (weakly typed) the precision flags
    and INT8 calibrator; returns the layers pinned to FP32."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    if hasattr(trt, "ProfilingVerbosity"):  # layer names + tactics for the inspector
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    pinned: list[str] = []
    if not strongly_typed:
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32 (TF32 is on by default)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            cache = Path(options.calibration_cache).read_bytes()  # type: ignore[arg-type]
            config.int8_calibrator = _cache_calibrator(trt, cache)
        if precision != "fp32":
            pinned = _pin_fragile_layers(trt, network, precision)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return pinned


def _add_profiles(
    builder: Any, config: Any, artifact: Artifact, options: EngineOptions
) -> list[ShapeProfile]:
    """The checked (or default) optimisation profiles, added once per concurrent context."""
    profiles = list(options.profiles)
    for p in profiles:
        check_profile(artifact, p)
    if not profiles:
        default = default_profile(artifact, options)
        profiles = [default] if default is not None else []
    for _ in range(options.contexts if profiles else 0):  # one profile per concurrent context
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.input_name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    return profiles


def _place_on_dla(
    trt: Any, config: Any, network: Any, artifact: Artifact, options: EngineOptions
) -> dict[str, list[str]]:
    """With ``--dla-core``: the DLA settings and the network's layers by device (empty without)."""
    split: dict[str, list[str]] = {}
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        split = _layer_split(trt, config, network)
        if split["gpu"] and not options.gpu_fallback:
            raise EngineBuildError(
                f"{artifact.model_path}: {len(split['gpu'])} layers cannot run on DLA "
                f"(first: {split['gpu'][0]}); add --gpu-fallback"
            )
    return split


def _use_timing_cache(config: Any, options: EngineOptions) -> Any:
    """``--timing-cache``: the cache the build reads (the file's, or a new one) and fills."""
    if options.timing_cache is None:
        return None
    path = Path(options.timing_cache)
    existing = path.read_bytes() if path.is_file() else b""
    timing_cache = config.create_timing_cache(existing)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    return timing_cache


def _engine_spec(
    artifact: Artifact, engine_path: Path, data: bytes, precision: str, trt_section: dict[str, Any]
) -> Sidecar:
    """The source's sidecar describing the engine, through the one schema: never write an engine
    sidecar the runtime would refuse."""
    try:
        return artifact.spec.replace(
            precision=precision,
            model_file=engine_path.name,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            tensorrt=trt_section,
        )
    except SidecarError as exc:
        raise EngineBuildError(
            f"refusing to write an engine sidecar the runtime would refuse: {exc}"
        ) from None


def _write_engine(
    out: Path,
    engine_path: Path,
    data: bytes,
    sidecar_text: str,
    explicit: bool,
    options: EngineOptions,
    read: list[Any],
) -> None:
    sidecar_path = engine_path.with_suffix(".json")
    if explicit:  # the engine, then its sidecar (a sidecar always describes the engine beside it)
        write_file(engine_path, data, overwrite=options.overwrite, inputs=read)
        write_file(sidecar_path, sidecar_text, overwrite=options.overwrite, inputs=read)
    else:
        names = [engine_path.name, sidecar_path.name]
        with staged_folder(
            out, exist_ok=options.exist_ok, overwrite=options.overwrite, inputs=read, names=names
        ) as folder:
            folder.write(engine_path.name, data)
            folder.write(sidecar_path.name, sidecar_text)


def device_description() -> dict[str, str]:
    """GPU name and compute capability of device 0 (what the engine is tied to)."""
    from runtime.core.backends.tensorrt_backend import _import_cudart
    from runtime.core.backends.tensorrt_backend import device_description as describe

    try:
        return describe(_import_cudart(), 0)
    except BackendUnavailableError as exc:
        raise TensorRTUnavailableError(str(exc)) from None


def profiles_from_options(values: Sequence[str | None]) -> tuple[tuple[int, ...] | None, ...]:
    """CLI helper: (--min, --opt, --max) texts -> shapes (None where not given)."""
    return tuple(parse_shape(v, f"--{name}") if v else None for v, name in zip(values, ("min", "opt", "max")))

"""The sidecar's records: its limits and names, the model's real interface as a backend reports
it (:class:`IOSignature`), and one frozen dataclass per section of the schema.

:mod:`contract.sidecar_sections` reads each section into them and :mod:`contract.sidecar`
assembles them into :class:`~contract.sidecar.Sidecar`; packages import the records from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.json_reader import (
    Dim,
)

FORMAT = "pem-deploy"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

# Resource bounds (a real sidecar is ~10-40 KB, nesting depth ~6).
MAX_SIDE = 16384  # input height / width
MAX_BATCH = 1024
MAX_INPUT_ELEMENTS = 1 << 31
MAX_RANK = 8
MAX_OUTPUTS = 64
MAX_CLASSES = 65535  # class ids must fit a 16-bit label PNG
MAX_QUERIES = 65535
MAX_TEXT = 4096
MAX_ABS_MEAN = 1e6
MIN_STD = 1e-6
MAX_CONTEXTS = 64  # TensorRT execution contexts of an engine (pem-deploy build --contexts)
MAX_PROFILES = 64
MAX_LAYERS = 100_000

INPUT_DTYPES = ("float32", "float16", "uint8")
TENSOR_DTYPES = (
    "float32",
    "float16",
    "float64",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "int32",
    "int64",
    "bool",
)
LAYOUTS = ("NCHW",)
COLORS = ("RGB", "BGR")
VALUE_RANGES = ("normalized", "0-255")
DEFAULT_FORMULA = "(x - mean) / std per RGB channel, x in 0..255"

# Outputs each head promises: name -> (dtype, rank, shape template). Templates use B (batch),
# Q (queries), K+1 (classes + "no object"), H / W (input size), H/4 / W/4 (mask resolution).
HEAD_OUTPUTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "raw": {
        "pred_logits": ("float32", ("B", "Q", "K+1")),
        "pred_masks": ("float32", ("B", "Q", "H/4", "W/4")),
    },
    "semantic": {"labels": ("int32", ("B", "H", "W"))},
    "panoptic": {
        "scores": ("float32", ("B", "Q")),
        "classes": ("int32", ("B", "Q")),
        "owner": ("int32", ("B", "H", "W")),
        "owner_fg": ("uint8", ("B", "H", "W")),
        "mask_area": ("int32", ("B", "Q")),
    },
}

# Consumer profiles (`pem-deploy package --for ...`, export/consumers): the graph of a packaged
# artifact is the semantic head's, with its label map renamed / reshaped into what the consumer's
# stock decoder reads. Name -> (dtype, shape template); literal "1" is a size-1 axis.
CONSUMER_PROFILES = ("deepstream", "isaac-ros")
PROFILE_OUTPUTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    # DeepStream's NvDsInferParseCustomPeopleSemSegNet: INT32 layer "argmax_1", H x W x 1.
    "deepstream": {"argmax_1": ("int32", ("B", "H", "W", "1"))},
    # Isaac ROS UNetDecoderNode, network_output_type argmax, data_format NCHW: int32 N x 1 x H x W.
    "isaac-ros": {"output": ("int32", ("B", "1", "H", "W"))},
}
PROFILE_INPUT_NAMES: dict[str, str | None] = {"deepstream": None, "isaac-ros": "input"}
# The checkpoint an artifact was exported from, recorded in ``source`` three ways (best first):
# relative to the sidecar's folder, absolute, and as given to the export.
CHECKPOINT_FIELDS = ("checkpoint_relative", "checkpoint_absolute", "checkpoint")


# -- the model's real interface ----------------------------------------------------------------

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(uint16)": "uint16",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def onnxruntime_dtype(type_name: str) -> str:
    """onnxruntime's ``tensor(float)`` -> ``float32``; unknown types keep their own name."""
    return _ORT_DTYPES.get(type_name, type_name)


@dataclass(frozen=True)
class TensorSignature:
    """One model input or output as the backend reports it.

    ``shape``: static sizes, ``None`` for dynamic dimensions; ``None`` as a whole when even the
    rank is unknown. ``dtype``: numpy name (``float32``, ``int32``, ``uint8``...).
    """

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str


@dataclass(frozen=True)
class IOSignature:
    """A model's inputs and outputs (``model``: its file name, for messages)."""

    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    model: str = "the model"

    @classmethod
    def from_onnxruntime(cls, session: Any, model: str = "the model") -> IOSignature:
        """From an ``onnxruntime.InferenceSession`` (``get_inputs`` / ``get_outputs``)."""

        def spec(arg: Any) -> TensorSignature:
            shape = arg.shape
            dims = (
                None if shape is None else tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
            )
            return TensorSignature(arg.name, dims, onnxruntime_dtype(arg.type))

        return cls(
            tuple(spec(a) for a in session.get_inputs()), tuple(spec(a) for a in session.get_outputs()), model
        )


# -- the schema --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSpec:
    """One class: contiguous id (its index), name, RGB colour, thing or stuff."""

    id: int
    name: str
    color: tuple[int, int, int]
    isthing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": list(self.color), "isthing": self.isthing}


class HasClasses:
    """What a class list tells: its size and its thing ids (for :class:`Sidecar` and the runtime's
    ``Artifact``, which both hold a ``classes`` tuple)."""

    classes: tuple[ClassSpec, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def thing_ids(self) -> frozenset[int]:
        return frozenset(c.id for c in self.classes if c.isthing)


@dataclass(frozen=True)
class InputSpec:
    """The model input: ``(batch, 3, height, width)`` NCHW, its dtype and normalisation.

    ``shape`` entries are sizes or symbols (dynamic); ``default_size`` is the size the model was
    configured for (required when height / width are dynamic).
    """

    name: str
    shape: tuple[Dim, Dim, Dim, Dim]
    dtype: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalize_in_graph: bool = False
    layout: str = "NCHW"
    color: str = "RGB"
    formula: str = DEFAULT_FORMULA
    default_size: tuple[int, int] | None = None
    size_multiple: int = 32
    dynamic: bool = False

    @property
    def value_range(self) -> str:
        return "0-255" if self.normalize_in_graph else "normalized"

    @property
    def batch(self) -> int | None:
        """Static batch size, ``None`` when dynamic."""
        return self.shape[0] if isinstance(self.shape[0], int) else None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) fed to the model: the static size, else ``default_size``."""
        h, w = self.shape[2], self.shape[3]
        if isinstance(h, int) and isinstance(w, int):
            return h, w
        assert self.default_size is not None  # guaranteed by validation
        return (
            h if isinstance(h, int) else self.default_size[0],
            w if isinstance(w, int) else self.default_size[1],
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "color": self.color,
            "value_range": self.value_range,
            "normalize_in_graph": self.normalize_in_graph,
            "normalization": {
                "in_graph": self.normalize_in_graph,
                "mean": list(self.mean),
                "std": list(self.std),
                "formula": self.formula,
            },
        }
        if self.default_size is not None:
            data["default_size"] = list(self.default_size)
        data["size_multiple"] = self.size_multiple
        data["dynamic"] = self.dynamic
        return data


@dataclass(frozen=True)
class OutputSpec:
    """One model output, in graph order."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    shape_symbols: tuple[str, ...] | None = None
    meaning: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.shape_symbols is not None:
            data["shape_symbols"] = list(self.shape_symbols)
        data["meaning"] = self.meaning
        return data


@dataclass(frozen=True)
class Thresholds:
    """Panoptic fusion thresholds (``object_mask_threshold_in_graph``: baked into the graph)."""

    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    object_mask_threshold_in_graph: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "object_mask_threshold": self.object_mask_threshold,
            "overlap_threshold": self.overlap_threshold,
            "object_mask_threshold_in_graph": self.object_mask_threshold_in_graph,
        }


@dataclass(frozen=True)
class Provenance:
    """Where the model file came from: its name and checksum, and free-form build records
    (``onnx``, ``fp16``, ``tensorrt_lint``, ``tools``, ``source``, engine ``tensorrt``), each a
    JSON object or ``None`` when absent. The dicts are copied on :meth:`Sidecar.to_dict`."""

    model_file: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    created_utc: str | None = None
    onnx: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None
    tensorrt_lint: dict[str, Any] | None = None
    int8: dict[str, Any] | None = None  # INT8 exports: {"target": "onnxruntime" | "tensorrt", ...}
    tools: dict[str, str] | None = None
    source: dict[str, Any] | None = None
    tensorrt: dict[str, Any] | None = None
    # Typed views of the sections (set from them on construction): engine = ``tensorrt``
    # (``None`` for an ONNX artifact), graph = ``onnx``, quantization = ``int8`` (``None`` unless
    # an INT8 export), model_source = ``source``.
    engine: EngineRecord | None = field(init=False, repr=False, compare=False)
    graph: GraphRecord = field(init=False, repr=False, compare=False)
    quantization: QuantizationRecord | None = field(init=False, repr=False, compare=False)
    model_source: SourceRecord = field(init=False, repr=False, compare=False)

    def checkpoint_candidates(self, sidecar_dir: str | os.PathLike[str]) -> tuple[tuple[str, Path], ...]:
        """Where the checkpoint the model was exported from may be, best first, each with the
        ``source`` field it comes from: ``checkpoint_relative`` (relative to the sidecar's folder,
        so an artifact folder moved together with its checkpoint still finds it),
        ``checkpoint_absolute``, then ``checkpoint`` as given to the export (relative to the folder
        the export ran in). Empty when the source was not a checkpoint."""
        src = self.source or {}
        found: list[tuple[str, Path]] = []
        for key in CHECKPOINT_FIELDS:
            value = src.get(key)
            if not value:
                continue
            path = Path(sidecar_dir) / value if key == "checkpoint_relative" else Path(value)
            if all(path != p for _, p in found):
                found.append((f"source.{key}", path))
        return tuple(found)

    def __post_init__(self) -> None:
        # The typed views of the sections, made again by every constructor (and replace()).
        views = {
            "engine": None if self.tensorrt is None else EngineRecord.from_section(self.tensorrt),
            "graph": GraphRecord.from_section(self.onnx or {}),
            "quantization": None if self.int8 is None else QuantizationRecord.from_section(self.int8),
            "model_source": SourceRecord.from_section(self.source or {}),
        }
        for name, view in views.items():
            object.__setattr__(self, name, view)


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimisation profile for one input: min / opt / max shapes (N, C, H, W); an
    engine's are its sidecar's ``tensorrt.profiles``."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineRecord:
    """What ``pem-deploy build`` recorded about an engine (the validated ``tensorrt`` section)."""

    # The machine it is tied to: TensorRT version (major.minor must match) and GPU.
    version: str | None = None
    compute_capability: str | None = None
    gpu_name: str | None = None
    # How it computes: strongly typed (the graph's precisions) or builder flags, and which.
    strongly_typed: bool | None = None
    precision: str | None = None
    # Execution contexts built for (one per profile of a dynamic engine) and the profiles.
    contexts: int | None = None
    profiles: tuple[ShapeProfile, ...] = ()
    pinned_layers: tuple[str, ...] = ()  # layers kept in FP32
    # The ONNX file it was built from (name and sha256), and its DLA core when built for one.
    source_onnx: str | None = None
    source_sha256: str | None = None
    dla_core: int | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> EngineRecord:
        """From a ``tensorrt`` section already checked by the schema."""
        dla = section.get("dla") or {}
        profiles = tuple(
            ShapeProfile(p["input_name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
            for p in section.get("profiles") or ()
        )
        return cls(
            version=_text(section, "version"),
            compute_capability=_text(section, "compute_capability"),
            gpu_name=_text(section, "gpu_name"),
            strongly_typed=section.get("strongly_typed"),
            precision=_text(section, "precision"),
            contexts=section.get("contexts"),
            profiles=profiles,
            pinned_layers=tuple(section.get("pinned_layers") or ()),
            source_onnx=_text(section, "source_onnx"),
            source_sha256=_text(section, "source_sha256"),
            dla_core=dla.get("core"),
        )


@dataclass(frozen=True)
class GraphRecord:
    """How the ONNX graph was made (the ``onnx`` section): opset, IR version, node and op counts."""

    opset: int | None = None
    ir_version: int | None = None
    nodes: int | None = None
    deform_impl: str | None = None
    op_counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> GraphRecord:
        counts = section.get("op_counts")
        return cls(
            opset=section.get("opset"),
            ir_version=section.get("ir_version"),
            nodes=section.get("nodes"),
            deform_impl=_text(section, "deform_impl"),
            op_counts=dict(counts) if isinstance(counts, dict) else {},
        )


@dataclass(frozen=True)
class QuantizationRecord:
    """What the INT8 quantizer recorded (the ``int8`` section): the runtime its Q/DQ layout is for
    (``target``) and the activations' integer type."""

    target: str | None = None
    activation_dtype: str | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> QuantizationRecord:
        return cls(target=_text(section, "target"), activation_dtype=_text(section, "activation_dtype"))


@dataclass(frozen=True)
class SourceRecord:
    """The model an artifact was exported from (the ``source`` section): a preset with random or
    pretrained weights, or a checkpoint (with its sha256)."""

    name: str | None = None
    preset: str | None = None
    weights: str | None = None
    seed: int | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> SourceRecord:
        seed = section.get("seed")
        return cls(
            name=_text(section, "name"),
            preset=_text(section, "preset"),
            weights=_text(section, "weights"),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            checkpoint=_text(section, "checkpoint"),
            checkpoint_sha256=_text(section, "checkpoint_sha256"),
        )


@dataclass(frozen=True)
class ConsumerProfile:
    """How a packaged artifact's graph was edited for a consumer (sidecar ``consumer``).

    ``profile``: one of :data:`CONSUMER_PROFILES`; ``packaged_from`` / ``packaged_from_sha256``:
    the artifact's model file it was made from; ``edits``: one line per graph edit, in order.
    """

    profile: str
    packaged_from: str | None = None
    packaged_from_sha256: str | None = None
    edits: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"profile": self.profile}
        if self.packaged_from is not None:
            data["packaged_from"] = self.packaged_from
        if self.packaged_from_sha256 is not None:
            data["packaged_from_sha256"] = self.packaged_from_sha256
        data["edits"] = list(self.edits)
        return data

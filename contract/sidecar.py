"""The typed, versioned schema of an artifact's sidecar JSON: the one reader and writer of it.

An artifact is ``NAME.onnx`` (or ``NAME.engine``) plus ``NAME.json``, the sidecar; contract/ARTIFACT.md
documents every field. :class:`Sidecar` parses and validates a sidecar (types, ranges, consistency
between its fields), :meth:`Sidecar.check_against` compares it with the model's real inputs and
outputs as a backend reports them (:class:`IOSignature`), and :meth:`Sidecar.to_json` writes the
same layout back. Export builds a :class:`Sidecar` before it writes one, so it never writes an
artifact the runtime refuses.

Every error is a :class:`~contract.errors.SidecarError`: one line naming the sidecar file and the
field, e.g. ``model.json: input.std[1] must be > 0, got 0``.

The JSON itself is read by :mod:`contract.json_reader` (hostile files refused before they cost
anything: size, nesting depth, duplicate keys); this module holds the schema: NaN in typed fields,
oversized integers and inconsistent fields are its errors.

Only the standard library: ``runtime``, ``export`` and ``calib`` all import this module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MAX_DEPTH / MAX_SIDECAR_BYTES: the reader's bounds, part of this module's documented API.
from contract.json_reader import MAX_DEPTH as MAX_DEPTH
from contract.json_reader import (
    MAX_DIM,
    MAX_NAME,
    Dim,
    Reader,
    check_tree,
    parse_json_text,
    read_sidecar_text,
    show,
    type_name,
)
from contract.json_reader import MAX_SIDECAR_BYTES as MAX_SIDECAR_BYTES
from contract.vocabulary import HEADS, PRECISIONS, TASKS

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

_TOP_KEYS = (
    "format",
    "consumer",
    "format_version",
    "model_file",
    "task",
    "head",
    "precision",
    "input",
    "outputs",
    "num_classes",
    "num_queries",
    "classes",
    "panoptic",
    "onnx",
    "fp16",
    "tensorrt_lint",
    "int8",
    "tools",
    "source",
    "sha256",
    "size_bytes",
    "created_utc",
    "tensorrt",
)
# The checkpoint an artifact was exported from, recorded in ``source`` three ways (best first):
# relative to the sidecar's folder, absolute, and as given to the export.
CHECKPOINT_FIELDS = ("checkpoint_relative", "checkpoint_absolute", "checkpoint")
_FREE_SECTIONS = ("onnx", "fp16", "tensorrt_lint", "int8", "tools", "source", "tensorrt")
_INPUT_KEYS = (
    "name",
    "shape",
    "dtype",
    "layout",
    "color",
    "value_range",
    "normalize_in_graph",
    "normalization",
    "default_size",
    "size_multiple",
    "dynamic",
)
_NORM_KEYS = ("in_graph", "mean", "std", "formula")
_OUTPUT_KEYS = ("name", "dtype", "shape", "shape_symbols", "meaning")
_CLASS_KEYS = ("id", "name", "color", "isthing")
_CONSUMER_KEYS = ("profile", "packaged_from", "packaged_from_sha256", "edits")
_PANOPTIC_KEYS = ("object_mask_threshold", "overlap_threshold", "object_mask_threshold_in_graph")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9]{1,4}(\.[0-9]{1,6}){0,4}[0-9A-Za-z.+-]{0,32}")  # 10.3.0.26, 10.0.0b6
_CAPABILITY = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")
_PROFILE_KEYS = ("input_name", "min", "opt", "max")


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


@dataclass(frozen=True)
class Sidecar(HasClasses):
    """A validated sidecar (``format_version`` :data:`FORMAT_VERSION`). Build it with
    :meth:`from_json` / :meth:`from_file`; ``to_json`` writes the documented layout."""

    head: str
    task: str
    precision: str
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    classes: tuple[ClassSpec, ...]
    num_queries: int | None = None
    panoptic: Thresholds = field(default_factory=Thresholds)
    provenance: Provenance = field(default_factory=Provenance)
    format_version: int = FORMAT_VERSION
    consumer: ConsumerProfile | None = None

    # -- derived (num_classes and thing_ids: HasClasses) -----------------------------------------

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def replace(self, **changes: Any) -> Sidecar:
        """A copy with fields replaced, validated again (raises :class:`SidecarError`)."""
        provenance = {k: changes.pop(k) for k in list(changes) if k in _PROVENANCE_FIELDS}
        updated = dataclasses.replace(self, **changes)
        if provenance:
            updated = dataclasses.replace(
                updated, provenance=dataclasses.replace(self.provenance, **provenance)
            )
        return Sidecar.from_dict(updated.to_dict(), source="sidecar")

    # -- (de)serialisation -------------------------------------------------------------------------

    @classmethod
    def from_json(
        cls, data: str | bytes | Mapping[str, Any], source: str | os.PathLike[str] = "sidecar"
    ) -> Sidecar:
        """Parse and validate sidecar JSON text (or an already parsed dict).

        ``source`` names the file in error messages. Raises :class:`SidecarError`.
        """
        source = str(source)
        if isinstance(data, (str, bytes)):
            data = parse_json_text(data, source)
        return cls.from_dict(data, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Sidecar:
        """Read, parse and validate a sidecar file (size checked before it is read)."""
        return cls.from_json(read_sidecar_text(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "sidecar") -> Sidecar:
        """Validate a parsed sidecar. Raises :class:`SidecarError` naming ``source`` and the field."""
        r = Reader(str(source))
        if not isinstance(data, dict):
            raise r.fail(None, f"not a pem-deploy sidecar (a JSON object is needed, got {type_name(data)})")
        check_tree(data, r.source)
        if "format" not in data:
            raise r.fail("format", f"is missing: not a {FORMAT} sidecar")
        if data["format"] != FORMAT:
            raise r.fail("format", f"must be {FORMAT!r}, got {show(data['format'])}: not a {FORMAT} sidecar")
        if "format_version" not in data:
            raise r.fail(
                "format_version", f"is missing (sidecars of {FORMAT} carry one; re-export the model)"
            )
        version = data["format_version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise r.fail("format_version", f"must be an integer, got {type_name(version)} {show(version)}")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            reads = ", ".join(map(str, SUPPORTED_FORMAT_VERSIONS))
            raise r.fail(
                "format_version",
                f"{version} is not supported: this pem-deploy reads format_version {reads} "
                "(re-export the model with this version, or upgrade pem-deploy)",
            )
        r.obj(
            data, "", _TOP_KEYS, ("head", "task", "precision", "input", "outputs", "num_classes", "classes")
        )
        head = r.string(data["head"], "head", HEADS)
        task = r.string(data["task"], "task", TASKS)
        precision = r.string(data["precision"], "precision", PRECISIONS)
        inp = _read_input(r, data["input"])
        classes = _read_classes(r, data["classes"])
        num_classes = r.integer(data["num_classes"], "num_classes", 1, MAX_CLASSES)
        if num_classes != len(classes):
            raise r.fail("num_classes", f"is {num_classes} but classes lists {len(classes)}")
        num_queries = None
        if data.get("num_queries") is not None:
            num_queries = r.integer(data["num_queries"], "num_queries", 1, MAX_QUERIES)
        outputs = _read_outputs(r, data["outputs"])
        thresholds = _read_thresholds(r, data.get("panoptic"), head)
        provenance = _read_provenance(r, data)
        consumer = _read_consumer(r, data.get("consumer"), head, inp)
        sidecar = cls(
            head=head,
            task=task,
            precision=precision,
            input=inp,
            outputs=outputs,
            classes=classes,
            num_queries=num_queries,
            panoptic=thresholds,
            provenance=provenance,
            format_version=version,
            consumer=consumer,
        )
        _check_head_outputs(r, sidecar)
        return sidecar

    def to_dict(self) -> dict[str, Any]:
        """The sidecar as JSON-ready data, in the documented layout (contract/ARTIFACT.md)."""
        p = self.provenance
        data: dict[str, Any] = {"format": FORMAT, "format_version": self.format_version}
        if p.model_file is not None:
            data["model_file"] = p.model_file
        data.update(
            {
                "task": self.task,
                "head": self.head,
                "precision": self.precision,
                "input": self.input.to_dict(),
                "outputs": [o.to_dict() for o in self.outputs],
                "num_classes": self.num_classes,
            }
        )
        if self.num_queries is not None:
            data["num_queries"] = self.num_queries
        data["classes"] = [c.to_dict() for c in self.classes]
        data["panoptic"] = self.panoptic.to_dict()
        for key in ("onnx", "fp16", "tensorrt_lint", "int8", "tools", "source"):
            if getattr(p, key) is not None:
                data[key] = copy.deepcopy(getattr(p, key))
        for key in ("sha256", "size_bytes", "created_utc"):
            if getattr(p, key) is not None:
                data[key] = getattr(p, key)
        if p.tensorrt is not None:
            data["tensorrt"] = copy.deepcopy(p.tensorrt)
        if self.consumer is not None:
            data["consumer"] = self.consumer.to_dict()
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text (ending in a newline) that :meth:`from_json` reads back to an equal sidecar."""
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    # -- the model behind it ----------------------------------------------------------------------

    def check_against(self, signature: IOSignature, source: str | os.PathLike[str] = "sidecar") -> None:
        """Refuse a sidecar that does not describe the model's real inputs and outputs.

        Compares names, ranks, static sizes (a static size in the sidecar must equal the model's;
        a dynamic one in the sidecar needs a dynamic one in the model) and dtypes. Raises
        :class:`SidecarError` naming ``source``, the field and ``signature.model``.
        """
        r = Reader(str(source))
        model = signature.model
        names = [t.name for t in signature.inputs]
        if names != [self.input.name]:
            raise r.fail("input.name", f"is {self.input.name!r} but {model} has input(s) {show(names)}")
        _compare_tensor(r, "input", self.input.shape, self.input.dtype, signature.inputs[0], model)
        ours = {o.name: (i, o) for i, o in enumerate(self.outputs)}
        theirs = {t.name: t for t in signature.outputs}
        for name, (i, _) in ours.items():
            if name not in theirs:
                raise r.fail(
                    f"outputs[{i}].name",
                    f"is {name!r} but {model} has no such output "
                    f"(its outputs: {', '.join(theirs) or 'none'})",
                )
        for name in theirs:
            if name not in ours:
                raise r.fail("outputs", f"does not list {model}'s output {name!r}")
        for name, (i, out) in ours.items():
            _compare_tensor(r, f"outputs[{i}]", out.shape, out.dtype, theirs[name], model)


_PROVENANCE_FIELDS = tuple(f.name for f in dataclasses.fields(Provenance) if f.init)


def _compare_tensor(
    r: Reader, where: str, shape: Sequence[Dim], dtype: str, real: TensorSignature, model: str
) -> None:
    if real.dtype != dtype:
        raise r.fail(f"{where}.dtype", f"is {dtype} but {model}'s {real.name!r} is {real.dtype}")
    if real.shape is None:
        return
    if len(real.shape) != len(shape):
        raise r.fail(
            f"{where}.shape", f"has {len(shape)} dimensions but {model}'s {real.name!r} has {len(real.shape)}"
        )
    for axis, (ours, theirs) in enumerate(zip(shape, real.shape)):
        if theirs is None:
            continue  # the model accepts any size there
        if isinstance(ours, str):
            raise r.fail(
                f"{where}.shape[{axis}]",
                f"is dynamic ({ours!r}) but {model}'s {real.name!r} has a fixed {theirs}",
            )
        if ours != theirs:
            raise r.fail(f"{where}.shape[{axis}]", f"is {ours} but {model}'s {real.name!r} has {theirs}")


def _read_input(r: Reader, value: Any) -> InputSpec:
    inp = r.obj(value, "input", _INPUT_KEYS, ("name", "shape", "dtype", "normalization"))
    name = r.string(inp["name"], "input.name")
    shape_list = r.array(inp["shape"], "input.shape", 4, 4)
    batch = r.dim(shape_list[0], "input.shape[0]", MAX_BATCH)
    channels = r.integer(shape_list[1], "input.shape[1]", 3, 3)
    height = r.dim(shape_list[2], "input.shape[2]", MAX_SIDE)
    width = r.dim(shape_list[3], "input.shape[3]", MAX_SIDE)
    shape = (batch, channels, height, width)
    dtype = r.string(inp["dtype"], "input.dtype", INPUT_DTYPES)
    layout = r.string(inp.get("layout", "NCHW"), "input.layout", LAYOUTS)
    color = r.string(inp.get("color", "RGB"), "input.color", COLORS)
    norm = r.obj(inp["normalization"], "input.normalization", _NORM_KEYS, ("mean", "std"))
    in_graph: bool | None = None
    for where, raw in (
        ("input.normalize_in_graph", inp.get("normalize_in_graph")),
        ("input.normalization.in_graph", norm.get("in_graph")),
    ):
        if raw is None:
            continue
        flag = r.boolean(raw, where)
        if in_graph is not None and flag != in_graph:
            raise r.fail(where, f"is {show(flag)} but input.normalize_in_graph is {show(in_graph)}")
        in_graph = flag
    in_graph = bool(in_graph)
    if "value_range" in inp:
        value_range = r.string(inp["value_range"], "input.value_range", VALUE_RANGES)
        expected = "0-255" if in_graph else "normalized"
        if value_range != expected:
            raise r.fail(
                "input.value_range",
                f"is {value_range!r} but normalize_in_graph {show(in_graph)} means {expected!r}",
            )
    if dtype == "uint8" and not in_graph:
        raise r.fail(
            "input.dtype", "is uint8, which needs normalize_in_graph true (normalised values are not bytes)"
        )
    mean = tuple(
        r.number(v, f"input.normalization.mean[{i}]", -MAX_ABS_MEAN, MAX_ABS_MEAN)
        for i, v in enumerate(r.array(norm["mean"], "input.normalization.mean", 3, 3))
    )
    std_values = []
    for i, v in enumerate(r.array(norm["std"], "input.normalization.std", 3, 3)):
        where = f"input.normalization.std[{i}]"
        if not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v <= 0:
            raise r.fail(where, f"must be > 0, got {show(v)}")
        std_values.append(r.number(v, where, MIN_STD, MAX_ABS_MEAN))
    formula = DEFAULT_FORMULA
    if "formula" in norm:
        formula = r.string(norm["formula"], "input.normalization.formula", max_len=MAX_TEXT)
    size_multiple = r.integer(inp.get("size_multiple", 32), "input.size_multiple", 1, 1024)
    symbolic = [isinstance(d, str) for d in shape]
    dynamic = any(symbolic)
    if "dynamic" in inp:
        declared = r.boolean(inp["dynamic"], "input.dynamic")
        if declared != dynamic:
            raise r.fail("input.dynamic", f"is {show(declared)} but input.shape is {show(list(shape))}")
    default_size = None
    if "default_size" in inp:
        pair = r.array(inp["default_size"], "input.default_size", 2, 2)
        default_size = (
            int(r.integer(pair[0], "input.default_size[0]", 1, MAX_SIDE)),
            int(r.integer(pair[1], "input.default_size[1]", 1, MAX_SIDE)),
        )
        for axis, side in ((2, default_size[0]), (3, default_size[1])):
            if isinstance(shape[axis], int) and shape[axis] != side:
                raise r.fail(
                    "input.default_size", f"is {list(default_size)} but input.shape is {show(list(shape))}"
                )
            if isinstance(shape[axis], str) and side % size_multiple:
                raise r.fail(
                    "input.default_size",
                    f"is {list(default_size)}: dynamic sides must be multiples of "
                    f"input.size_multiple {size_multiple}",
                )
    elif symbolic[2] or symbolic[3]:
        raise r.fail("input.default_size", "is missing (a dynamic height / width needs it)")
    h, w = (default_size or (0, 0)) if (symbolic[2] or symbolic[3]) else (int(height), int(width))
    h = int(height) if isinstance(height, int) else h
    w = int(width) if isinstance(width, int) else w
    elements = (batch if isinstance(batch, int) else 1) * 3 * h * w
    if elements > MAX_INPUT_ELEMENTS:
        raise r.fail(
            "input.shape",
            f"{show(list(shape))} is {elements} values, over the limit of {MAX_INPUT_ELEMENTS}",
        )
    return InputSpec(
        name=name,
        shape=shape,  # type: ignore[arg-type]
        dtype=dtype,
        mean=mean,  # type: ignore[arg-type]
        std=tuple(std_values),  # type: ignore[arg-type]
        normalize_in_graph=in_graph,
        layout=layout,
        color=color,
        formula=formula,
        default_size=default_size,
        size_multiple=size_multiple,
        dynamic=dynamic,
    )


def _read_outputs(r: Reader, value: Any) -> tuple[OutputSpec, ...]:
    entries = r.array(value, "outputs", 1, MAX_OUTPUTS)
    outputs: list[OutputSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"outputs[{i}]"
        out = r.obj(entry, where, _OUTPUT_KEYS, ("name", "dtype", "shape"))
        name = r.string(out["name"], f"{where}.name")
        if name in seen:
            raise r.fail(f"{where}.name", f"{name!r} is listed twice")
        seen.add(name)
        dtype = r.string(out["dtype"], f"{where}.dtype", TENSOR_DTYPES)
        dims = r.array(out["shape"], f"{where}.shape", 0, MAX_RANK)
        shape = tuple(r.dim(d, f"{where}.shape[{j}]") for j, d in enumerate(dims))
        symbols = None
        if "shape_symbols" in out:
            listed = r.array(out["shape_symbols"], f"{where}.shape_symbols", len(shape), len(shape))
            symbols = tuple(
                r.string(s, f"{where}.shape_symbols[{j}]", max_len=64) for j, s in enumerate(listed)
            )
        meaning = r.string(out["meaning"], f"{where}.meaning", max_len=MAX_TEXT) if out.get("meaning") else ""
        outputs.append(OutputSpec(name, dtype, shape, symbols, meaning))
    return tuple(outputs)


def _read_classes(r: Reader, value: Any) -> tuple[ClassSpec, ...]:
    entries = r.array(value, "classes", 1, MAX_CLASSES)
    classes = []
    for i, entry in enumerate(entries):
        where = f"classes[{i}]"
        c = r.obj(entry, where, _CLASS_KEYS, ("id", "name", "color"))
        class_id = r.integer(c["id"], f"{where}.id", 0, MAX_CLASSES - 1)
        if class_id != i:
            raise r.fail(f"{where}.id", f"must be {i} (ids are contiguous from 0, in order), got {class_id}")
        name = r.string(c["name"], f"{where}.name")
        rgb = r.array(c["color"], f"{where}.color", 3, 3)
        color = tuple(r.integer(v, f"{where}.color[{j}]", 0, 255) for j, v in enumerate(rgb))
        isthing = r.boolean(c.get("isthing", False), f"{where}.isthing")
        classes.append(ClassSpec(class_id, name, color, isthing))  # type: ignore[arg-type]
    return tuple(classes)


def _read_thresholds(r: Reader, value: Any, head: str) -> Thresholds:
    if value is None:
        return Thresholds(object_mask_threshold_in_graph=head == "panoptic")
    p = r.obj(value, "panoptic", _PANOPTIC_KEYS)
    return Thresholds(
        object_mask_threshold=r.number(
            p.get("object_mask_threshold", 0.8), "panoptic.object_mask_threshold", 0, 1
        ),
        overlap_threshold=r.number(p.get("overlap_threshold", 0.8), "panoptic.overlap_threshold", 0, 1),
        object_mask_threshold_in_graph=r.boolean(
            p.get("object_mask_threshold_in_graph", head == "panoptic"),
            "panoptic.object_mask_threshold_in_graph",
        ),
    )


def _read_provenance(r: Reader, data: dict[str, Any]) -> Provenance:
    model_file = None
    if data.get("model_file") is not None:
        model_file = r.string(data["model_file"], "model_file")
        if "/" in model_file or "\\" in model_file or model_file in (".", ".."):
            raise r.fail("model_file", f"must be a file name beside the sidecar, got {show(model_file)}")
    sha256 = None
    if data.get("sha256") is not None:
        sha256 = r.string(data["sha256"], "sha256", max_len=64).lower()
        if not _SHA256.fullmatch(sha256):
            raise r.fail("sha256", f"must be 64 hex digits, got {show(data['sha256'])}")
    size_bytes = None
    if data.get("size_bytes") is not None:
        size_bytes = r.integer(data["size_bytes"], "size_bytes", 0, 1 << 50)
    created = (
        r.string(data["created_utc"], "created_utc", max_len=64)
        if data.get("created_utc") is not None
        else None
    )
    sections: dict[str, dict[str, Any] | None] = {}
    for key in _FREE_SECTIONS:
        # Through JSON once: tuples become lists, so a written sidecar reads back equal.
        sections[key] = None if data.get(key) is None else json.loads(json.dumps(r.section(data[key], key)))
    tools = sections["tools"]
    if tools is not None:
        for name, version in tools.items():
            r.string(version, f"tools.{name}", max_len=MAX_NAME)
    trt = sections["tensorrt"]
    if trt is not None:
        _check_tensorrt(r, trt)
    source = sections["source"]
    if source is not None:
        for key in CHECKPOINT_FIELDS:
            if source.get(key) is not None:
                r.string(source[key], f"source.{key}")
    onnx = sections["onnx"]
    if onnx is not None and onnx.get("opset") is not None:
        r.integer(onnx["opset"], "onnx.opset", 1, 1000)
    return Provenance(
        model_file=model_file,
        sha256=sha256,
        size_bytes=size_bytes,
        created_utc=created,
        onnx=onnx,
        fp16=sections["fp16"],
        tensorrt_lint=sections["tensorrt_lint"],
        int8=sections["int8"],
        tools=tools,
        source=sections["source"],
        tensorrt=trt,
    )


def _read_consumer(r: Reader, value: Any, head: str, inp: InputSpec) -> ConsumerProfile | None:
    if value is None:
        return None
    c = r.obj(value, "consumer", _CONSUMER_KEYS, ("profile",))
    profile = r.string(c["profile"], "consumer.profile", CONSUMER_PROFILES)
    if head != "semantic":
        raise r.fail("consumer.profile", f"{profile!r} is for the semantic head, not {head!r}")
    wanted_input = PROFILE_INPUT_NAMES[profile]
    if wanted_input is not None and inp.name != wanted_input:
        raise r.fail("input.name", f"must be {wanted_input!r} for consumer {profile!r}, got {inp.name!r}")
    if profile in CONSUMER_PROFILES and inp.dtype != "float32":
        raise r.fail("input.dtype", f"must be float32 for consumer {profile!r}, got {inp.dtype}")
    source = (
        None if c.get("packaged_from") is None else r.string(c["packaged_from"], "consumer.packaged_from")
    )
    sha = None
    if c.get("packaged_from_sha256") is not None:
        sha = r.string(c["packaged_from_sha256"], "consumer.packaged_from_sha256", max_len=64).lower()
        if not _SHA256.fullmatch(sha):
            raise r.fail("consumer.packaged_from_sha256", f"must be 64 hex digits, got {show(sha)}")
    edits = tuple(
        r.string(e, f"consumer.edits[{i}]", max_len=MAX_TEXT)
        for i, e in enumerate(r.array(c.get("edits", []), "consumer.edits", 0, 64))
    )
    return ConsumerProfile(profile, source, sha, edits)


def _check_tensorrt(r: Reader, trt: dict[str, Any]) -> None:
    """The engine section (written by ``pem-deploy build``): every field the runtime uses is
    checked here, so an edited or corrupt engine sidecar is one line at load, not a crash in
    ``infer`` / ``bench`` / ``verify`` when the field is used. Unknown keys stay allowed (newer
    builders may record more)."""
    if trt.get("version") is not None:
        version = r.string(trt["version"], "tensorrt.version", max_len=64)
        if not _VERSION.fullmatch(version):
            raise r.fail("tensorrt.version", f"must be a version like 10.3.0, got {show(version)}")
    if trt.get("compute_capability") is not None:
        capability = r.string(trt["compute_capability"], "tensorrt.compute_capability", max_len=16)
        if not _CAPABILITY.fullmatch(capability):
            raise r.fail("tensorrt.compute_capability", f"must look like 8.7, got {show(capability)}")
    for key in ("gpu_name", "source_onnx"):
        if trt.get(key) is not None:
            r.string(trt[key], f"tensorrt.{key}")
    if trt.get("source_sha256") is not None:
        digest = r.string(trt["source_sha256"], "tensorrt.source_sha256", max_len=64)
        if not _SHA256.fullmatch(digest.lower()):
            raise r.fail("tensorrt.source_sha256", f"must be 64 hex digits, got {show(digest)}")
    if trt.get("strongly_typed") is not None:
        r.boolean(trt["strongly_typed"], "tensorrt.strongly_typed")
    if trt.get("precision") is not None:
        r.string(trt["precision"], "tensorrt.precision", PRECISIONS)
    if trt.get("contexts") is not None:
        r.integer(trt["contexts"], "tensorrt.contexts", 1, MAX_CONTEXTS)
    if trt.get("pinned_layers") is not None:
        for i, name in enumerate(r.array(trt["pinned_layers"], "tensorrt.pinned_layers", 0, MAX_LAYERS)):
            r.string(name, f"tensorrt.pinned_layers[{i}]", max_len=MAX_TEXT)
    if trt.get("profiles") is not None:
        for i, entry in enumerate(r.array(trt["profiles"], "tensorrt.profiles", 0, MAX_PROFILES)):
            where = f"tensorrt.profiles[{i}]"
            profile = r.obj(entry, where, _PROFILE_KEYS, _PROFILE_KEYS)
            r.string(profile["input_name"], f"{where}.input_name")
            corners = {}
            for corner in ("min", "opt", "max"):
                dims = r.array(profile[corner], f"{where}.{corner}", 1, MAX_RANK)
                corners[corner] = [
                    r.integer(d, f"{where}.{corner}[{j}]", 1, MAX_DIM) for j, d in enumerate(dims)
                ]
            if not len(corners["min"]) == len(corners["opt"]) == len(corners["max"]):
                raise r.fail(where, "min, opt and max must have the same number of dimensions")
            for j, (lo, mid, hi) in enumerate(zip(corners["min"], corners["opt"], corners["max"])):
                if not lo <= mid <= hi:
                    raise r.fail(
                        f"{where}.opt[{j}]", f"must satisfy min <= opt <= max, got {lo}, {mid}, {hi}"
                    )
    if trt.get("dla") is not None:
        dla = r.section(trt["dla"], "tensorrt.dla")
        if dla.get("core") is not None:
            r.integer(dla["core"], "tensorrt.dla.core", 0, 15)
        if dla.get("gpu_fallback") is not None:
            r.boolean(dla["gpu_fallback"], "tensorrt.dla.gpu_fallback")


def _check_head_outputs(r: Reader, sc: Sidecar) -> None:
    """The head's documented outputs (or its consumer profile's) are listed, with their dtypes,
    ranks and consistent sizes."""
    wanted = PROFILE_OUTPUTS[sc.consumer.profile] if sc.consumer is not None else HEAD_OUTPUTS[sc.head]
    needs = f"head {sc.head!r}" if sc.consumer is None else f"consumer {sc.consumer.profile!r}"
    index = {o.name: (i, o) for i, o in enumerate(sc.outputs)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise r.fail("outputs", f"lacks output(s) {', '.join(missing)} that {needs} needs")
    b, _, h, w = sc.input.shape
    sizes: dict[str, Dim | None] = {
        "B": b,
        "H": h,
        "W": w,
        "H/4": h // 4 if isinstance(h, int) else None,
        "W/4": w // 4 if isinstance(w, int) else None,
        "K+1": sc.num_classes + 1,
        "Q": sc.num_queries,
        "1": 1,
    }
    queries: int | None = sc.num_queries
    for name, (dtype, template) in wanted.items():
        i, out = index[name]
        if out.dtype != dtype:
            raise r.fail(f"outputs[{i}].dtype", f"of {name!r} must be {dtype} ({needs}), got {out.dtype}")
        if len(out.shape) != len(template):
            raise r.fail(
                f"outputs[{i}].shape",
                f"of {name!r} must have {len(template)} dimensions {tuple(template)}, "
                f"got {show(list(out.shape))}",
            )
        for axis, (symbol, dim) in enumerate(zip(template, out.shape)):
            expected = sizes[symbol]
            if symbol == "Q" and expected is None and isinstance(dim, int):
                if queries is not None and dim != queries:
                    raise r.fail(
                        f"outputs[{i}].shape[{axis}]", f"is {dim} but other outputs have {queries} queries"
                    )
                queries = dim
                continue
            if isinstance(expected, int) and isinstance(dim, int) and dim != expected:
                what = {"B": "the input batch", "H": "the input height", "W": "the input width",
                        "H/4": "input height / 4", "W/4": "input width / 4", "K+1": "num_classes + 1",
                        "Q": "num_queries", "1": "a size-1 axis"}[symbol]  # fmt: skip
                raise r.fail(f"outputs[{i}].shape[{axis}]", f"of {name!r} is {dim} but {what} is {expected}")


def read_sidecar(path: str | os.PathLike[str]) -> Sidecar:
    """:meth:`Sidecar.from_file` (the one way every package reads a sidecar file)."""
    return Sidecar.from_file(path)

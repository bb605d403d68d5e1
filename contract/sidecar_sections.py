"""Reading and checking each section of a sidecar into its record (:mod:`contract.sidecar_records`).

One function per section; each raises :class:`~contract.errors.SidecarError` through its
:class:`~contract.json_reader.Reader`, naming the field. :meth:`contract.sidecar.Sidecar.from_dict`
calls them in order and then checks the sections against each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from contract.json_reader import (
    MAX_DIM,
    MAX_NAME,
    Dim,
    Reader,
    show,
)
from contract.sidecar_records import (
    CHECKPOINT_FIELDS,
    COLORS,
    CONSUMER_PROFILES,
    DEFAULT_FORMULA,
    INPUT_DTYPES,
    LAYOUTS,
    MAX_ABS_MEAN,
    MAX_BATCH,
    MAX_CLASSES,
    MAX_CONTEXTS,
    MAX_INPUT_ELEMENTS,
    MAX_LAYERS,
    MAX_OUTPUTS,
    MAX_PROFILES,
    MAX_RANK,
    MAX_SIDE,
    MAX_TEXT,
    MIN_STD,
    PROFILE_INPUT_NAMES,
    TENSOR_DTYPES,
    VALUE_RANGES,
    ClassSpec,
    ConsumerProfile,
    InputSpec,
    OutputSpec,
    Provenance,
    TensorSignature,
    Thresholds,
)
from contract.vocabulary import PRECISIONS

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


PROVENANCE_FIELDS = tuple(f.name for f in dataclasses.fields(Provenance) if f.init)


def compare_tensor(
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


def read_input(r: Reader, value: Any) -> InputSpec:
    inp = r.obj(value, "input", _INPUT_KEYS, ("name", "shape", "dtype", "normalization"))
    name = r.string(inp["name"], "input.name")
    shape = _read_input_shape(r, inp)
    dtype = r.string(inp["dtype"], "input.dtype", INPUT_DTYPES)
    layout = r.string(inp.get("layout", "NCHW"), "input.layout", LAYOUTS)
    color = r.string(inp.get("color", "RGB"), "input.color", COLORS)
    norm = r.obj(inp["normalization"], "input.normalization", _NORM_KEYS, ("mean", "std"))
    in_graph = _read_in_graph(r, inp, norm, dtype)
    mean, std = _read_mean_std(r, norm)
    formula = DEFAULT_FORMULA
    if "formula" in norm:
        formula = r.string(norm["formula"], "input.normalization.formula", max_len=MAX_TEXT)
    size_multiple = r.integer(inp.get("size_multiple", 32), "input.size_multiple", 1, 1024)
    dynamic = any(isinstance(d, str) for d in shape)
    if "dynamic" in inp:
        declared = r.boolean(inp["dynamic"], "input.dynamic")
        if declared != dynamic:
            raise r.fail("input.dynamic", f"is {show(declared)} but input.shape is {show(list(shape))}")
    default_size = _read_default_size(r, inp, shape, size_multiple)
    _check_input_elements(r, shape, default_size)
    return InputSpec(
        name=name,
        shape=shape,  # type: ignore[arg-type]
        dtype=dtype,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        normalize_in_graph=in_graph,
        layout=layout,
        color=color,
        formula=formula,
        default_size=default_size,
        size_multiple=size_multiple,
        dynamic=dynamic,
    )


def _read_input_shape(r: Reader, inp: dict[str, Any]) -> tuple[Dim, ...]:
    """``input.shape``: N x 3 x H x W, each side a size or a symbol."""
    shape_list = r.array(inp["shape"], "input.shape", 4, 4)
    batch = r.dim(shape_list[0], "input.shape[0]", MAX_BATCH)
    channels = r.integer(shape_list[1], "input.shape[1]", 3, 3)
    height = r.dim(shape_list[2], "input.shape[2]", MAX_SIDE)
    width = r.dim(shape_list[3], "input.shape[3]", MAX_SIDE)
    return (batch, channels, height, width)


def _read_in_graph(r: Reader, inp: dict[str, Any], norm: dict[str, Any], dtype: str) -> bool:
    """Whether the graph normalises its input, from the two places a sidecar may say it (which must
    agree), checked against ``input.value_range`` and a uint8 input."""
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
    return in_graph


def _read_mean_std(r: Reader, norm: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``input.normalization.mean`` / ``std``: three finite numbers each, every std > 0."""
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
    return mean, tuple(std_values)


def _read_default_size(
    r: Reader, inp: dict[str, Any], shape: tuple[Dim, ...], size_multiple: int
) -> tuple[int, int] | None:
    """``input.default_size``: required with a dynamic height / width, equal to a static one, a
    multiple of ``size_multiple`` on a dynamic one."""
    symbolic = [isinstance(d, str) for d in shape]
    if "default_size" not in inp:
        if symbolic[2] or symbolic[3]:
            raise r.fail("input.default_size", "is missing (a dynamic height / width needs it)")
        return None
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
    return default_size


def _check_input_elements(r: Reader, shape: tuple[Dim, ...], default_size: tuple[int, int] | None) -> None:
    """The input at its run size (a symbolic batch counts 1) stays under :data:`MAX_INPUT_ELEMENTS`."""
    batch, _, height, width = shape
    dynamic_side = isinstance(height, str) or isinstance(width, str)
    h, w = (default_size or (0, 0)) if dynamic_side else (int(height), int(width))
    h = int(height) if isinstance(height, int) else h
    w = int(width) if isinstance(width, int) else w
    elements = (batch if isinstance(batch, int) else 1) * 3 * h * w
    if elements > MAX_INPUT_ELEMENTS:
        raise r.fail(
            "input.shape",
            f"{show(list(shape))} is {elements} values, over the limit of {MAX_INPUT_ELEMENTS}",
        )


def read_outputs(r: Reader, value: Any) -> tuple[OutputSpec, ...]:
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


def read_classes(r: Reader, value: Any) -> tuple[ClassSpec, ...]:
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


def read_thresholds(r: Reader, value: Any, head: str) -> Thresholds:
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


def read_provenance(r: Reader, data: dict[str, Any]) -> Provenance:
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
        check_tensorrt(r, trt)
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


def read_consumer(r: Reader, value: Any, head: str, inp: InputSpec) -> ConsumerProfile | None:
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


def check_tensorrt(r: Reader, trt: dict[str, Any]) -> None:
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

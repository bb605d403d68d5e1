"""A generated hostile corpus for the artifact contract (contract/sidecar.py).

Artifacts are written once per module by export's own writer (``build_sidecar`` +
``write_artifact``, which validates before it commits) around small hand-built ONNX graphs with
exactly the I/O the exporter promises for each head, so no torch export is needed. Every case
asserts its exact outcome: a one-line typed error naming the file and the field, or acceptance.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from cli import app
from contract.errors import ArtifactError, PemDeployError, SidecarError
from contract.sidecar import FORMAT_VERSION, MAX_DEPTH, MAX_SIDECAR_BYTES, IOSignature, Sidecar
from export.errors import ExportError
from export.metadata import ArtifactWriter, embed_metadata, onnx_signature, write_artifact
from pem.config import get_preset
from runtime import Segmenter, load_artifact
from runtime.errors import OutputRangeError
from runtime.postprocess import fuse_panoptic, label_png_array
from tests.helpers.sidecars import tiny_spec

pytest.importorskip("onnxruntime")

H, W = 64, 128
_NP = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "uint8": TensorProto.UINT8}


# -- building artifacts ------------------------------------------------------------------------


def _graph_for(sidecar: dict[str, Any]) -> onnx.ModelProto:
    """An ONNX graph with exactly the sidecar's input and outputs, computed from the input.

    semantic: labels = argmax over RGB; panoptic: query 0 owns every pixel as class 0 (score
    0.95), the others are "no object"; raw: constant logits and pooled masks.
    """
    inp = sidecar["input"]
    k, q = sidecar["num_classes"], sidecar["num_queries"]
    nodes = [helper.make_node("Cast", ["images"], ["xf"], to=TensorProto.FLOAT)]
    inits = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    head = sidecar["head"]
    if head == "semantic":
        nodes += [
            helper.make_node("ArgMax", ["xf"], ["idx"], axis=1, keepdims=0),
            helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.INT32),
        ]
    else:
        nodes += [
            helper.make_node("ReduceMean", ["xf", const("ax1", np.array([1], np.int64))], ["x"], keepdims=0),
            helper.make_node("Mul", ["x", const("zero", np.zeros((), np.float32))], ["x0"]),
            helper.make_node(
                "ReduceMean", ["x0", const("ax12", np.array([1, 2], np.int64))], ["r"], keepdims=0
            ),
            helper.make_node("Unsqueeze", ["r", const("ax_last", np.array([1], np.int64))], ["r1"]),  # (B, 1)
        ]
        if head == "panoptic":
            scores = np.full((1, q), 0.1, np.float32)
            scores[0, 0] = 0.95
            classes = np.full((1, q), float(k), np.float32)
            classes[0, 0] = 0
            area = np.zeros((1, q), np.float32)
            area[0, 0] = H * W
            nodes += [
                helper.make_node("Add", ["r1", const("sc", scores)], ["scores"]),
                helper.make_node("Add", ["r1", const("cl", classes)], ["clf"]),
                helper.make_node("Cast", ["clf"], ["classes"], to=TensorProto.INT32),
                helper.make_node("Cast", ["x0"], ["owner"], to=TensorProto.INT32),
                helper.make_node("Greater", ["x0", const("neg", np.array(-1.0, np.float32))], ["fgb"]),
                helper.make_node("Cast", ["fgb"], ["owner_fg"], to=TensorProto.UINT8),
                helper.make_node("Add", ["r1", const("ar", area)], ["arf"]),
                helper.make_node("Cast", ["arf"], ["mask_area"], to=TensorProto.INT32),
            ]
        else:
            logits = np.random.default_rng(0).standard_normal((1, q, k + 1)).astype(np.float32)
            nodes += [
                helper.make_node("Unsqueeze", ["r1", const("ax2", np.array([2], np.int64))], ["r2"]),
                helper.make_node("Add", ["r2", const("lg", logits)], ["pred_logits"]),
                helper.make_node("Unsqueeze", ["x0", const("ax1b", np.array([1], np.int64))], ["x4"]),
                helper.make_node("AveragePool", ["x4"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
                helper.make_node(
                    "Add", ["pooled", const("qz", np.zeros((1, q, 1, 1), np.float32))], ["pred_masks"]
                ),
            ]
    graph = helper.make_graph(
        nodes,
        head,
        [helper.make_tensor_value_info("images", _NP[inp["dtype"]], inp["shape"])],
        [helper.make_tensor_value_info(o["name"], _NP[o["dtype"]], o["shape"]) for o in sidecar["outputs"]],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _export(out: Path, head: str, dynamic: bool = False, preprocess: str = "none", batch: int = 1) -> Path:
    """``out/model.onnx`` + ``model.json`` written by export's writer, like ``pem-deploy export``."""
    preset = "cityscapes-panoptic-tiny" if head == "panoptic" else "cityscapes-semantic-tiny"
    config = get_preset(preset).replace(input_size=(H, W))
    spec = tiny_spec(
        config,
        head=head,
        preprocess=preprocess,
        batch=batch,
        dynamic=dynamic,
        source={"preset": preset, "weights": "random", "seed": 0, "config": config.to_dict()},
        onnx_info={"exporter": "hand-built", "dynamic": dynamic},
    )
    model = _graph_for(spec.to_dict())
    embed_metadata(model, spec)
    with ArtifactWriter(out) as writer:
        write_artifact(writer, model, spec, "model")
        writer.commit()
    return out / "model.onnx"


def _semantic_sidecar() -> Sidecar:
    """The sidecar export would write for the tiny semantic preset at HxW (not yet written)."""
    return tiny_spec(get_preset("cityscapes-semantic-tiny").replace(input_size=(H, W)))


VARIANTS = {
    "semantic": {"head": "semantic"},
    "panoptic": {"head": "panoptic"},
    "raw": {"head": "raw"},
    "semantic-dynamic-uint8": {"head": "semantic", "dynamic": True, "preprocess": "uint8"},
    "panoptic-dynamic": {"head": "panoptic", "dynamic": True},
    "raw-normalize-batch2": {"head": "raw", "preprocess": "normalize", "batch": 2},
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    return {name: _export(root / name, **kwargs) for name, kwargs in VARIANTS.items()}


def _copy(artifact: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".onnx", ".json"):
        shutil.copyfile(artifact.with_suffix(suffix), dest / f"model{suffix}")
    return dest / "model.onnx"


def _sidecar(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


def _rehash(model: Path) -> None:
    data = _sidecar(model)
    data["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(data))


def _assert_one_line(exc: BaseException, *parts: str) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with value ``DELETE`` remove) the entry at a dotted path such as ``input.shape.2``."""
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        if value is DELETE:
            del node[int(last)]
        else:
            node[int(last)] = value
    elif value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()
NAN, INF = float("nan"), float("inf")

# -- 1. field mutations of an exported sidecar: (variant, path, value, field named in the error) --

FIELD_CASES: list[tuple[str, str, Any, str]] = [
    ("semantic", "format_version", DELETE, "format_version is missing"),
    ("semantic", "format_version", 2, "format_version 2 is not supported"),
    ("semantic", "format_version", 0, "format_version 0 is not supported"),
    ("semantic", "format_version", "1", "format_version must be an integer"),
    ("semantic", "format_version", 1.0, "format_version must be an integer"),
    ("semantic", "format_version", True, "format_version must be an integer"),
    ("semantic", "format_version", None, "format_version must be an integer"),
    ("semantic", "format", DELETE, "format is missing"),
    ("semantic", "format", "onnx", "format must be 'pem-deploy'"),
    ("semantic", "head", "instance", "head must be one of"),
    ("semantic", "head", 3, "head must be a string"),
    ("semantic", "head", DELETE, "head is missing"),
    ("semantic", "task", "detection", "task must be one of"),
    ("semantic", "precision", "int4", "precision must be one of"),
    ("semantic", "input.normalization.std.0", 0, "input.normalization.std[0] must be > 0, got 0"),
    ("semantic", "input.normalization.std.1", 0, "input.normalization.std[1] must be > 0, got 0"),
    ("semantic", "input.normalization.std.2", -57.0, "input.normalization.std[2] must be > 0"),
    ("semantic", "input.normalization.std.0", NAN, "input.normalization.std[0] must be finite"),
    ("semantic", "input.normalization.std.0", INF, "input.normalization.std[0] must be finite"),
    ("semantic", "input.normalization.std.0", 1e-9, "input.normalization.std[0] must be in"),
    ("semantic", "input.normalization.std.0", "58", "input.normalization.std[0] must be a number"),
    ("semantic", "input.normalization.std", [58.0, 57.0], "input.normalization.std must have 3 entries"),
    ("semantic", "input.normalization.std", [1, 1, 1, 1], "input.normalization.std must have 3 entries"),
    ("semantic", "input.normalization.std", 58.0, "input.normalization.std must be a list"),
    ("semantic", "input.normalization.mean.1", NAN, "input.normalization.mean[1] must be finite"),
    ("semantic", "input.normalization.mean", [1.0], "input.normalization.mean must have 3 entries"),
    ("semantic", "input.normalization.mean.0", True, "input.normalization.mean[0] must be a number"),
    ("semantic", "input.normalization", DELETE, "input.normalization is missing"),
    ("semantic", "input.normalization.in_graph", True, "input.normalization.in_graph is true"),
    ("semantic", "input.normalize_in_graph", "no", "input.normalize_in_graph must be true or false"),
    ("semantic", "input.value_range", "0-255", "input.value_range is '0-255'"),
    ("semantic", "input.shape", [1, 3, 64], "input.shape must have 4 entries"),
    ("semantic", "input.shape.2", 0, "input.shape[2] must be >= 1"),
    ("semantic", "input.shape.2", -64, "input.shape[2] must be >= 1"),
    ("semantic", "input.shape.2", 65536, "input.shape[2] must be <= 16384"),
    ("semantic", "input.shape.2", 64.5, "input.shape[2] must be an integer"),
    ("semantic", "input.shape.2", "64", "input.shape[2] must be a size or a symbol"),
    ("semantic", "input.shape.2", True, "input.shape[2] must be an integer"),
    ("semantic", "input.shape.1", 4, "input.shape[1] must be <= 3"),
    ("semantic", "input.shape.0", 0, "input.shape[0] must be >= 1"),
    ("semantic", "input.shape.0", 5000, "input.shape[0] must be <= 1024"),
    ("semantic", "input.dtype", "int64", "input.dtype must be one of"),
    ("semantic", "input.dtype", "uint8", "input.dtype is uint8, which needs normalize_in_graph true"),
    ("semantic", "input.dtype", None, "input.dtype must be a string"),
    ("semantic", "input.layout", "NHWC", "input.layout must be one of NCHW"),
    ("semantic", "input.color", "GRB", "input.color must be one of RGB, BGR"),
    ("semantic", "input.name", "", "input.name must be a non-empty string"),
    ("semantic", "input.name", "ima\nges", "input.name must not contain control characters"),
    ("semantic", "input.name", 5, "input.name must be a string"),
    ("semantic", "input.default_size", [32, 64], "input.default_size is [32, 64]"),
    ("semantic", "input.default_size", [64], "input.default_size must have 2 entries"),
    ("semantic", "input.dynamic", True, "input.dynamic is true"),
    ("semantic", "input.size_multiple", 0, "input.size_multiple must be >= 1"),
    ("semantic", "input.extra", 1, "input.extra is not a known field"),
    ("semantic", "input", [], "input must be an object"),
    ("semantic-dynamic-uint8", "input.default_size", DELETE, "input.default_size is missing"),
    ("semantic-dynamic-uint8", "input.default_size", [65, 128], "input.default_size is [65, 128]"),
    ("semantic-dynamic-uint8", "input.shape.2", "he ight", "input.shape[2] must be a size or a symbol"),
    ("semantic-dynamic-uint8", "input.normalize_in_graph", False, "input.normalization.in_graph is true"),
    ("semantic", "outputs", [], "outputs must have 1 to 64 entries"),
    ("semantic", "outputs", {"labels": 1}, "outputs must be a list"),
    ("semantic", "outputs.0.name", "label", "outputs lacks output(s) labels"),
    ("semantic", "outputs.0.name", "", "outputs[0].name must be a non-empty string"),
    ("semantic", "outputs.0.dtype", "float32", "outputs[0].dtype of 'labels' must be int32"),
    ("semantic", "outputs.0.dtype", "complex64", "outputs[0].dtype must be one of"),
    ("semantic", "outputs.0.shape", [1, 64], "outputs[0].shape_symbols must have 2 entries, got 3"),
    ("semantic", "outputs.0.shape.1", 32, "outputs[0].shape[1] of 'labels' is 32 but the input height is 64"),
    ("semantic", "outputs.0.shape.0", 2, "outputs[0].shape[0] of 'labels' is 2 but the input batch is 1"),
    ("semantic", "outputs.0.shape.1", 0, "outputs[0].shape[1] must be >= 1"),
    ("semantic", "outputs.0.shape", [1] * 9, "outputs[0].shape must have 0 to 8 entries"),
    ("semantic", "outputs.0.shape_symbols", ["B"], "outputs[0].shape_symbols must have 3 entries"),
    ("semantic", "outputs.0.colour", "x", "outputs[0].colour is not a known field"),
    ("semantic", "outputs.0", "labels", "outputs[0] must be an object"),
    ("panoptic", "outputs.0.name", "classes", "outputs[1].name 'classes' is listed twice"),
    ("panoptic", "outputs.3.dtype", "int32", "outputs[3].dtype of 'owner_fg' must be uint8"),
    ("panoptic", "outputs.0.shape.1", 21, "outputs[0].shape[1] of 'scores' is 21 but num_queries is 20"),
    ("raw", "outputs.0.shape.2", 19, "outputs[0].shape[2] of 'pred_logits' is 19 but num_classes + 1 is 20"),
    ("raw", "outputs.1.shape.3", 128, "outputs[1].shape[3] of 'pred_masks' is 128 but input width / 4 is 32"),
    ("semantic", "classes", [], "classes must have 1 to 65535 entries"),
    ("semantic", "classes.3.id", 7, "classes[3].id must be 3"),
    ("semantic", "classes.3.id", -1, "classes[3].id must be >= 0"),
    ("semantic", "classes.0.color", [256, 0, 0], "classes[0].color[0] must be <= 255"),
    ("semantic", "classes.0.color", [0, -1, 0], "classes[0].color[1] must be >= 0"),
    ("semantic", "classes.0.color", [0, 0, 1.5], "classes[0].color[2] must be an integer"),
    ("semantic", "classes.0.color", [0, 0], "classes[0].color must have 3 entries"),
    ("semantic", "classes.0.color", "red", "classes[0].color must be a list"),
    ("semantic", "classes.5.name", "", "classes[5].name must be a non-empty string"),
    ("semantic", "classes.5.name", "   ", "classes[5].name must be a non-empty string"),
    ("semantic", "classes.5.name", 5, "classes[5].name must be a string"),
    ("semantic", "classes.5.name", "po\nle", "classes[5].name must not contain control characters"),
    ("semantic", "classes.5.name", "x" * 300, "classes[5].name must be at most 256 characters"),
    ("semantic", "classes.5.isthing", "yes", "classes[5].isthing must be true or false"),
    ("semantic", "classes.5.isthing", 1, "classes[5].isthing must be true or false"),
    ("semantic", "classes.5.weight", 1, "classes[5].weight is not a known field"),
    ("semantic", "classes.5", None, "classes[5] must be an object"),
    ("semantic", "classes.5.name", DELETE, "classes[5].name is missing"),
    ("semantic", "num_classes", 20, "num_classes is 20 but classes lists 19"),
    ("semantic", "num_classes", 0, "num_classes must be >= 1"),
    ("semantic", "num_classes", "19", "num_classes must be an integer"),
    ("semantic", "num_classes", DELETE, "num_classes is missing"),
    ("semantic", "num_queries", 0, "num_queries must be >= 1"),
    ("semantic", "num_queries", "20", "num_queries must be an integer"),
    ("panoptic", "panoptic.object_mask_threshold", NAN, "panoptic.object_mask_threshold must be finite"),
    ("panoptic", "panoptic.object_mask_threshold", 1.5, "panoptic.object_mask_threshold must be in [0, 1]"),
    ("panoptic", "panoptic.overlap_threshold", -0.1, "panoptic.overlap_threshold must be in [0, 1]"),
    ("panoptic", "panoptic.overlap_threshold", INF, "panoptic.overlap_threshold must be finite"),
    ("panoptic", "panoptic.overlap_threshold", "0.8", "panoptic.overlap_threshold must be a number"),
    (
        "panoptic",
        "panoptic.object_mask_threshold_in_graph",
        "x",
        "panoptic.object_mask_threshold_in_graph must",
    ),
    ("panoptic", "panoptic.extra", 0.5, "panoptic.extra is not a known field"),
    ("semantic", "sha256", "x", "sha256 must be 64 hex digits"),
    ("semantic", "sha256", "g" * 64, "sha256 must be 64 hex digits"),
    ("semantic", "sha256", 12, "sha256 must be a string"),
    ("semantic", "size_bytes", -1, "size_bytes must be >= 0"),
    ("semantic", "model_file", "../evil.onnx", "model_file must be a file name"),
    ("semantic", "model_file", "a/b.onnx", "model_file must be a file name"),
    ("semantic", "tools", ["torch"], "tools must be an object"),
    ("semantic", "tools.torch", 2, "tools.torch must be a string"),
    ("semantic", "source", "preset", "source must be an object"),
    ("semantic", "onnx.opset", "19", "onnx.opset must be an integer"),
    ("semantic", "tensorrt", {"version": 10}, "tensorrt.version must be a string"),
    ("semantic", "tensorrt", {"strongly_typed": "yes"}, "tensorrt.strongly_typed must be true or false"),
    ("semantic", "surprise", {"a": 1}, "surprise is not a known field"),
    ("semantic", "created_utc", 5, "created_utc must be a string"),
]


@pytest.mark.parametrize(
    ("variant", "path", "value", "expected"),
    FIELD_CASES,
    ids=[f"{c[0]}:{c[1]}:{i}" for i, c in enumerate(FIELD_CASES)],
)
def test_field_mutation_is_one_line_error(artifacts, tmp_path, variant, path, value, expected):
    model = _copy(artifacts[variant], tmp_path / "art")
    data = _sidecar(model)
    _set(data, path, value if value is DELETE else copy.deepcopy(value))
    model.with_suffix(".json").write_text(json.dumps(data))  # NaN / Infinity become JSON literals
    with pytest.raises(SidecarError) as info:
        load_artifact(model)
    _assert_one_line(info.value, "model.json:", expected)
    assert info.value.source.endswith("model.json")


# -- 2. whole-file corruption: (name, bytes or a function of the original text, message) --------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


FILE_CASES: list[tuple[str, Any, str]] = [
    ("empty", b"", "the file is empty"),
    ("whitespace", b"  \n\t ", "the file is empty"),
    ("truncated-10", lambda t: t[:10], "not a valid JSON sidecar"),
    ("truncated-half", lambda t: t[: len(t) // 2], "not a valid JSON sidecar"),
    ("truncated-last", lambda t: t.rstrip()[:-1], "not a valid JSON sidecar"),
    ("binary", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not UTF-8 text"),
    ("utf16", lambda t: t.encode("utf-16"), "not UTF-8 text"),
    ("nul-bytes", b"\x00" * 64, "not a valid JSON sidecar"),
    ("deep-list", _nested(200_000).encode(), f"JSON nested deeper than {MAX_DEPTH} levels"),
    ("deep-object", ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(), "nested deeper"),
    (
        "deep-in-source",
        lambda t: t.replace('"source": {', '"source": {"x": ' + _nested(40) + ",", 1),
        "nested",
    ),
    ("oversized", b" " * (MAX_SIDECAR_BYTES + 1), "over the 4194304-byte limit of a sidecar"),
    ("top-list", b"[1, 2, 3]", "not a pem-deploy sidecar (a JSON object is needed, got a list)"),
    ("top-string", b'"pem-deploy"', "not a pem-deploy sidecar"),
    ("top-number", b"42", "not a pem-deploy sidecar"),
    ("top-null", b"null", "not a pem-deploy sidecar"),
    ("top-nan", b"NaN", "not a pem-deploy sidecar"),
    ("object-empty", b"{}", "format is missing: not a pem-deploy sidecar"),
    ("duplicate-key", lambda t: t.replace("{", '{"head": "raw",', 1), "the key 'head' appears twice"),
    ("huge-integer", lambda t: t.replace('"num_classes": 19', '"num_classes": ' + "9" * 5000), "digits"),
    ("trailing-garbage", lambda t: t + "}", "not a valid JSON sidecar (Extra data"),
    ("single-quotes", lambda t: t.replace('"', "'"), "not a valid JSON sidecar"),
    ("comment", lambda t: "// exported\n" + t, "not a valid JSON sidecar"),
]


@pytest.mark.parametrize(("name", "content", "expected"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_corrupt_file_is_one_line_error(artifacts, tmp_path, name, content, expected):
    model = _copy(artifacts["semantic"], tmp_path / "art")
    sidecar = model.with_suffix(".json")
    if callable(content):
        content = content(sidecar.read_text())
    sidecar.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SidecarError) as info:
        load_artifact(model)
    _assert_one_line(info.value, "model.json:", expected)


def test_a_sidecar_that_is_not_a_regular_file(artifacts, tmp_path):
    model = _copy(artifacts["semantic"], tmp_path / "art")
    model.with_suffix(".json").unlink()
    model.with_suffix(".json").mkdir()
    with pytest.raises(ArtifactError) as info:
        Sidecar.from_file(model.with_suffix(".json"))
    _assert_one_line(info.value, "model.json: the sidecar is not a regular file")


# -- 3. accepted: equivalent or harmless variations load and run ---------------------------------


def _accept_cases() -> list[tuple[str, str, Any]]:
    def drop(*keys: str):
        def apply(d: dict) -> None:
            for key in keys:
                d.pop(key, None)

        return apply

    def shuffled(d: dict) -> None:
        items = list(d.items())[::-1]
        d.clear()
        d.update(items)

    def std_ints(d: dict) -> None:
        d["input"]["normalization"]["std"] = [58, 57, 57]

    def thresholds_ints(d: dict) -> None:
        d["panoptic"] = {"object_mask_threshold": 0, "overlap_threshold": 1}

    def deep_ok(d: dict) -> None:
        d["source"]["nested"] = json.loads(_nested(MAX_DEPTH - 3))

    def unicode_names(d: dict) -> None:
        d["classes"][0]["name"] = "straße ☂"

    return [
        ("semantic", "as-exported", None),
        (
            "semantic",
            "optional-provenance-dropped",
            drop("tools", "source", "onnx", "created_utc", "size_bytes"),
        ),
        ("semantic", "no-checksum", drop("sha256")),
        ("semantic", "no-panoptic-section", drop("panoptic", "num_queries")),
        ("semantic", "keys-reordered", shuffled),
        ("semantic", "integer-std", std_ints),
        ("semantic", "unicode-class-name", unicode_names),
        ("semantic", "nesting-within-limit", deep_ok),
        ("panoptic", "as-exported", None),
        ("panoptic", "integer-thresholds", thresholds_ints),
        ("raw", "as-exported", None),
        ("semantic-dynamic-uint8", "as-exported", None),
        ("panoptic-dynamic", "as-exported", None),
        ("raw-normalize-batch2", "as-exported", None),
    ]


@pytest.mark.parametrize(
    ("variant", "name", "change"), _accept_cases(), ids=[f"{c[0]}:{c[1]}" for c in _accept_cases()]
)
def test_accepted_variations_load_and_run(artifacts, tmp_path, variant, name, change):
    model = _copy(artifacts[variant], tmp_path / "art")
    if change is not None:
        data = _sidecar(model)
        change(data)
        model.with_suffix(".json").write_text(json.dumps(data, indent=1))
    with Segmenter.open(model) as seg:
        result = seg.predict(np.full((40, 70, 3), 200, np.uint8))
    assert result.labels.shape == (40, 70)
    if variant.startswith("panoptic"):
        assert [(s.category_id, s.area) for s in result.segments] == [(0, 40 * 70)]  # original pixels
        assert (result.labels == 0).all()


def test_a_utf8_bom_is_accepted(artifacts, tmp_path):
    model = _copy(artifacts["semantic"], tmp_path / "art")
    sidecar = model.with_suffix(".json")
    sidecar.write_bytes(b"\xef\xbb\xbf" + sidecar.read_bytes())
    assert load_artifact(model).num_classes == 19


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_of_every_exported_head(artifacts, variant):
    text = artifacts[variant].with_suffix(".json").read_text()
    spec = Sidecar.from_json(text, source="model.json")
    assert spec.format_version == FORMAT_VERSION
    assert spec.to_dict() == json.loads(text)  # nothing lost, nothing added
    assert spec.to_json() == text  # export writes exactly to_json
    assert Sidecar.from_json(spec.to_json()) == spec
    assert Sidecar.from_json(json.loads(text)) == spec
    spec.check_against(onnx_signature(onnx.load(str(artifacts[variant])), "model.onnx"), "model.json")


# -- 4. model file and sidecar do not describe the same model -----------------------------------


def _swap_model(model: Path, other: Path, rehash: bool) -> None:
    shutil.copyfile(other, model)
    if rehash:
        _rehash(model)


def _with_model(model: Path, build) -> None:
    onnx.save(build(_sidecar(model)), model)
    _rehash(model)


def _mutated(**changes):
    """A graph for the sidecar with ``changes`` applied to a copy of it first (the model differs)."""

    def build(sidecar: dict) -> onnx.ModelProto:
        other = copy.deepcopy(sidecar)
        for path, value in changes.items():
            _set(other, path.replace("__", "."), value)
        return _graph_for(other)

    return build


def _rename_output(old: str, new: str):
    def build(sidecar: dict) -> onnx.ModelProto:
        model = _graph_for(sidecar)
        for node in model.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
        for value in model.graph.output:
            if value.name == old:
                value.name = new
        return model

    return build


def _retype_output(name: str, elem_type: int):
    def build(sidecar: dict) -> onnx.ModelProto:
        model = _graph_for(sidecar)
        for node in model.graph.node:
            node.output[:] = [f"{name}_orig" if o == name else o for o in node.output]
        model.graph.node.append(helper.make_node("Cast", [f"{name}_orig"], [name], to=elem_type))
        for value in model.graph.output:
            if value.name == name:
                value.type.tensor_type.elem_type = elem_type
        return model

    return build


def _rename_input(sidecar: dict) -> onnx.ModelProto:
    model = _graph_for(sidecar)
    model.graph.input[0].name = "x"
    model.graph.node[0].input[0] = "x"
    return model


MISMATCH_CASES: list[tuple[str, str, Any, str]] = [
    (
        "semantic",
        "size",
        _mutated(input__shape=[1, 3, 32, 64], outputs__0__shape=[1, 32, 64]),
        "input.shape[2] is 64 but model.onnx's 'images' has 32",
    ),
    (
        "semantic",
        "width",
        _mutated(input__shape=[1, 3, 64, 64], outputs__0__shape=[1, 64, 64]),
        "input.shape[3] is 128 but model.onnx's 'images' has 64",
    ),
    (
        "semantic",
        "batch",
        _mutated(input__shape=[2, 3, 64, 128], outputs__0__shape=[2, 64, 128]),
        "input.shape[0] is 1 but model.onnx's 'images' has 2",
    ),
    ("semantic", "input-name", _rename_input, "input.name is 'images' but model.onnx has input(s) [\"x\"]"),
    (
        "semantic",
        "input-dtype",
        _mutated(input__dtype="uint8"),
        "input.dtype is float32 but model.onnx's 'images'",
    ),
    (
        "semantic",
        "output-name",
        _rename_output("labels", "labels2"),
        "outputs[0].name is 'labels' but model.onnx",
    ),
    (
        "semantic-dynamic-uint8",
        "static-model",
        _mutated(input__shape=[1, 3, 64, 128]),
        "input.shape[0] is dynamic ('batch') but model.onnx's 'images' has a fixed 1",
    ),
    (
        "panoptic",
        "owner-dtype",
        _retype_output("owner", TensorProto.UINT8),
        "outputs[2].dtype is int32 but model.onnx's",
    ),
    (
        "raw",
        "queries",
        _mutated(num_queries=10, outputs__0__shape=[1, 10, 20], outputs__1__shape=[1, 10, 16, 32]),
        "outputs[0].shape[1] is 20 but model.onnx's 'pred_logits' has 10",
    ),
    (
        "raw",
        "classes",
        _mutated(num_classes=7, outputs__0__shape=[1, 20, 8]),
        "outputs[0].shape[2] is 20 but model.onnx's 'pred_logits' has 8",
    ),
]


@pytest.mark.parametrize(
    ("variant", "name", "build", "expected"), MISMATCH_CASES, ids=[c[1] for c in MISMATCH_CASES]
)
def test_sidecar_model_mismatch_is_one_line_error(artifacts, tmp_path, variant, name, build, expected):
    model = _copy(artifacts[variant], tmp_path / "art")
    _with_model(model, build)
    with pytest.raises(SidecarError) as info:
        Segmenter.open(model)
    _assert_one_line(info.value, "model.json:", expected)


def test_extra_model_output_is_refused(artifacts, tmp_path):
    model = _copy(artifacts["semantic"], tmp_path / "art")

    def build(sidecar):
        graph = _graph_for(sidecar)
        graph.graph.output.append(helper.make_tensor_value_info("xf", TensorProto.FLOAT, [1, 3, H, W]))
        return graph

    _with_model(model, build)
    with pytest.raises(SidecarError) as info:
        Segmenter.open(model)
    _assert_one_line(info.value, "model.json: outputs does not list model.onnx's output 'xf'")


@pytest.mark.parametrize(
    ("other", "rehash", "expected"),
    [
        ("panoptic", False, "checksum does not match its sidecar"),
        ("raw", False, "checksum does not match its sidecar"),
        ("panoptic", True, "outputs[0].name is 'labels' but model.onnx has no such output"),
        ("raw-normalize-batch2", True, "input.shape[0] is 1 but model.onnx's 'images' has 2"),
    ],
)
def test_model_file_swapped(artifacts, tmp_path, other, rehash, expected):
    model = _copy(artifacts["semantic"], tmp_path / "art")
    _swap_model(model, artifacts[other], rehash)
    with pytest.raises(ArtifactError) as info:
        Segmenter.open(model)
    _assert_one_line(info.value, "model.", expected)


def test_model_swapped_for_an_equivalent_one_is_accepted(artifacts, tmp_path):
    """Same I/O, other weights, checksum updated: nothing in the contract can tell, so it runs."""
    model = _copy(artifacts["semantic"], tmp_path / "art")
    _with_model(model, _graph_for)
    with Segmenter.open(model) as seg:
        assert seg.predict(np.zeros((8, 8, 3), np.uint8)).labels.shape == (8, 8)


# -- 5. broken ONNX files behind a valid sidecar ------------------------------------------------


def _huge_declared(sidecar: dict) -> bytes:
    big = copy.deepcopy(sidecar)
    big["input"]["shape"] = [1, 3, 65535, 65535]
    big["outputs"][0]["shape"] = [1, 65535, 65535]
    return _graph_for(big).SerializeToString()


ONNX_CASES: list[tuple[str, Any, str]] = [
    ("empty", b"", "model.onnx: the model file is empty"),
    ("garbage", b"this is not a protobuf" * 10, "onnxruntime cannot load the model"),
    (
        "random",
        bytes(np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8)),
        "onnxruntime cannot load",
    ),
    ("truncated", lambda data, sc: data[: len(data) // 2], "onnxruntime cannot load the model"),
    ("truncated-tail", lambda data, sc: data[:-7], "onnxruntime cannot load the model"),
    ("json-instead", lambda data, sc: json.dumps(sc).encode(), "onnxruntime cannot load the model"),
    (
        "huge-declared",
        lambda data, sc: _huge_declared(sc),
        "input.shape[2] is 64 but model.onnx's 'images' has 65535",
    ),
]


@pytest.mark.parametrize(("name", "content", "expected"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_broken_onnx_file_is_one_line_error(artifacts, tmp_path, name, content, expected):
    model = _copy(artifacts["semantic"], tmp_path / "art")
    if callable(content):
        content = content(model.read_bytes(), _sidecar(model))
    model.write_bytes(content)
    _rehash(model)  # the checksum matches: the loader itself must refuse it
    with pytest.raises(ArtifactError) as info:
        Segmenter.open(model)
    _assert_one_line(info.value, "model.", expected)


def test_a_sidecar_declaring_a_huge_input_is_refused_before_loading(artifacts, tmp_path):
    model = _copy(artifacts["semantic"], tmp_path / "art")
    model.write_bytes(_huge_declared(_sidecar(model)))
    data = _sidecar(model)
    data["input"]["shape"] = [1, 3, 65535, 65535]
    data["input"]["default_size"] = [65535, 65535]
    data["outputs"][0]["shape"] = [1, 65535, 65535]
    data["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(SidecarError) as info:
        load_artifact(model)
    _assert_one_line(info.value, "model.json: input.shape[2] must be <= 16384, got 65535")


# -- 6. output values no label PNG can hold ------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "kind", "bits", "expected"),
    [
        (np.array([[0, 255]]), "labels", None, np.uint8),
        (np.array([[0, 256]]), "labels", None, np.uint16),
        (np.array([[0, 65535]]), "labels", None, np.uint16),
        (np.array([[3, 4]], np.int64), "panoptic", 16, np.uint16),
        (np.zeros((0, 0), np.int32), "labels", None, np.uint8),
        (np.array([[0, 65536]]), "labels", None, "over the 16-bit PNG limit of 65535"),
        (np.array([[-1, 0]]), "labels", None, "negative id -1"),
        (np.array([[70000]]), "panoptic", 16, "panoptic hold the id 70000"),
        (np.array([[1.0]]), "labels", None, "must be integers"),
    ],
)
def test_label_png_range(values, kind, bits, expected):
    if isinstance(expected, str):
        with pytest.raises(OutputRangeError) as info:
            label_png_array(values, "frame.png", kind, bits)
        _assert_one_line(info.value, "frame.png:", expected)
    else:
        out = label_png_array(values, "frame.png", kind, bits)
        assert out.dtype == expected and np.array_equal(out, values)


def _const_semantic(value: int, tmp_path: Path, artifacts) -> Path:
    model = _copy(artifacts["semantic"], tmp_path / "art")

    def build(sidecar):
        graph = _graph_for(sidecar)
        labels = np.full((1, H, W), value, np.int32)
        graph.graph.initializer.append(numpy_helper.from_array(labels, "bad"))
        graph.graph.node[-1].CopyFrom(helper.make_node("Identity", ["bad"], ["labels"]))
        return graph

    _with_model(model, build)
    return model


@pytest.mark.parametrize("value", [19, 70000, -3])
def test_model_labels_outside_the_classes_are_an_error(artifacts, tmp_path, value):
    with (
        Segmenter.open(_const_semantic(value, tmp_path, artifacts)) as seg,
        pytest.raises(OutputRangeError) as info,
    ):
        seg.predict(np.zeros((10, 10, 3), np.uint8))
    _assert_one_line(info.value, f"holds class id {value}, outside the sidecar's 19 classes")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("classes", 25, "'classes' holds class id 25, outside 0..19"),
        ("classes", -1, "'classes' holds class id -1"),
        ("owner", 20, "'owner' holds query 20, outside 0..19"),
        ("mask_area", -5, "'mask_area' holds the negative area -5"),
    ],
)
def test_panoptic_outputs_out_of_range(field, value, expected):
    q, k = 20, 19
    outputs = {
        "scores": np.full(q, 0.9, np.float32),
        "classes": np.zeros(q, np.int32),
        "owner": np.zeros((4, 4), np.int32),
        "owner_fg": np.ones((4, 4), np.uint8),
        "mask_area": np.full(q, 16, np.int32),
    }
    outputs[field] = outputs[field].copy()
    outputs[field].flat[0] = value
    with pytest.raises(OutputRangeError) as info:
        fuse_panoptic(**outputs, thing_ids=set(), num_classes=k)
    _assert_one_line(info.value, expected)


# -- 7. export never writes what the runtime refuses ------------------------------------------


def test_export_refuses_to_write_an_invalid_sidecar(tmp_path):
    # PEMConfig itself refuses std 0 (pem.config), so the bad value is put into the sidecar directly
    spec = _semantic_sidecar()
    std = spec.input.std
    sidecar = dataclasses.replace(spec, input=dataclasses.replace(spec.input, std=(std[0], 0.0, std[2])))
    out = tmp_path / "out"
    with pytest.raises(ExportError) as info, ArtifactWriter(out) as writer:
        write_artifact(writer, _graph_for(sidecar.to_dict()), sidecar, "model")
        writer.commit()
    _assert_one_line(info.value, "model.json: input.normalization.std[1] must be > 0, got 0")
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing staged is left


def test_export_refuses_a_sidecar_that_does_not_fit_its_graph(tmp_path):
    sidecar = _semantic_sidecar()
    other = _mutated(input__shape=[1, 3, 32, 64], outputs__0__shape=[1, 32, 64])(sidecar.to_dict())
    with pytest.raises(ExportError) as info, ArtifactWriter(tmp_path / "out") as writer:
        write_artifact(writer, other, sidecar, "model")
    _assert_one_line(info.value, "input.shape[2] is 64 but model.onnx's 'images' has 32")
    assert not (tmp_path / "out").exists()


def test_io_signature_from_the_onnxruntime_backend(artifacts):
    with Segmenter.open(artifacts["panoptic-dynamic"]) as seg:
        signature = seg.backend.io_signature()
    assert isinstance(signature, IOSignature) and signature.model == "model.onnx"
    assert signature.inputs[0].shape == (None, 3, None, None) and signature.inputs[0].dtype == "float32"
    assert [(t.name, t.dtype) for t in signature.outputs] == [
        ("scores", "float32"),
        ("classes", "int32"),
        ("owner", "int32"),
        ("owner_fg", "uint8"),
        ("mask_area", "int32"),
    ]


# -- 8. through the CLI: exit 2, one 'error:' line, no traceback -------------------------------


def _std_zero(model: Path) -> None:
    data = _sidecar(model)
    data["input"]["normalization"]["std"][1] = 0
    model.with_suffix(".json").write_text(json.dumps(data))


def _version_9(model: Path) -> None:
    data = _sidecar(model)
    data["format_version"] = 9
    model.with_suffix(".json").write_text(json.dumps(data))


def _deep(model: Path) -> None:
    model.with_suffix(".json").write_text(_nested(100_000))


def _size_mismatch(model: Path) -> None:
    _with_model(model, _mutated(input__shape=[1, 3, 32, 64], outputs__0__shape=[1, 32, 64]))


def _garbage_model(model: Path) -> None:
    model.write_bytes(b"\x08\x01garbage")
    _rehash(model)


CLI_CASES = [
    ("check", _std_zero, "input.normalization.std[1] must be > 0, got 0"),
    ("infer", _std_zero, "input.normalization.std[1] must be > 0, got 0"),
    ("check", _version_9, "format_version 9 is not supported"),
    ("infer", _version_9, "format_version 9 is not supported"),
    ("check", _deep, "nested deeper than"),
    ("infer", _deep, "nested deeper than"),
    ("check", _size_mismatch, "input.shape[2] is 64 but model.onnx's 'images' has 32"),
    ("infer", _size_mismatch, "input.shape[2] is 64 but model.onnx's 'images' has 32"),
    ("check", _garbage_model, "onnxruntime cannot load"),
    ("infer", _garbage_model, "onnxruntime cannot load"),
]


@pytest.mark.parametrize(
    ("command", "damage", "expected"), CLI_CASES, ids=lambda v: getattr(v, "__name__", v)
)
def test_cli_reports_one_error_line(artifacts, tmp_path, command, damage, expected):
    import cv2

    model = _copy(artifacts["semantic"], tmp_path / "art")
    damage(model)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    args = (
        ["check", str(model)]
        if command == "check"
        else ["infer", str(model), str(image), "--out", str(tmp_path / "o")]
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
    assert isinstance(result.exception, SystemExit)


def test_every_error_is_a_pem_deploy_error():
    assert issubclass(SidecarError, ArtifactError) and issubclass(ArtifactError, PemDeployError)
    from runtime.errors import ArtifactError as RuntimeArtifactError

    assert RuntimeArtifactError is ArtifactError

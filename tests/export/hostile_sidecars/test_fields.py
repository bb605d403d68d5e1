"""Field mutations of an exported sidecar (contract/sidecar.py): each a one-line typed error naming
the file and the field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from contract.errors import SidecarError
from runtime import load_artifact
from tests.helpers.hostile_artifacts import (
    DELETE,
    INF,
    NAN,
    assert_one_line_message,
    copy_artifact,
    read_sidecar,
    set_at_path,
)

pytest.importorskip("onnxruntime")


# -- field mutations of an exported sidecar: (variant, path, value, field named in the error) --

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
    model = copy_artifact(artifacts[variant], tmp_path / "art")
    data = read_sidecar(model)
    set_at_path(data, path, value if value is DELETE else copy.deepcopy(value))
    model.with_suffix(".json").write_text(json.dumps(data))  # NaN / Infinity become JSON literals
    with pytest.raises(SidecarError) as info:
        load_artifact(model)
    assert_one_line_message(info.value, "model.json:", expected)
    assert info.value.source.endswith("model.json")

"""A sidecar and a model file that do not describe the same model, and broken ONNX files behind a
valid sidecar (runtime.core.artifact's load checks): one-line typed errors.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from contract.errors import ArtifactError, SidecarError
from runtime import Segmenter, load_artifact
from tests.helpers.hostile_artifacts import (
    H,
    W,
    assert_one_line_message,
    copy_artifact,
    graph_for,
    mutated_sidecar,
    read_sidecar,
    rehash_sidecar,
    with_model,
)

pytest.importorskip("onnxruntime")


# -- model file and sidecar do not describe the same model -----------------------------------


def _swap_model(model: Path, other: Path, rehash: bool) -> None:
    shutil.copyfile(other, model)
    if rehash:
        rehash_sidecar(model)


def _rename_output(old: str, new: str):
    def build(sidecar: dict) -> onnx.ModelProto:
        model = graph_for(sidecar)
        for node in model.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
        for value in model.graph.output:
            if value.name == old:
                value.name = new
        return model

    return build


def _retype_output(name: str, elem_type: int):
    def build(sidecar: dict) -> onnx.ModelProto:
        model = graph_for(sidecar)
        for node in model.graph.node:
            node.output[:] = [f"{name}_orig" if o == name else o for o in node.output]
        model.graph.node.append(helper.make_node("Cast", [f"{name}_orig"], [name], to=elem_type))
        for value in model.graph.output:
            if value.name == name:
                value.type.tensor_type.elem_type = elem_type
        return model

    return build


def _rename_input(sidecar: dict) -> onnx.ModelProto:
    model = graph_for(sidecar)
    model.graph.input[0].name = "x"
    model.graph.node[0].input[0] = "x"
    return model


MISMATCH_CASES: list[tuple[str, str, Any, str]] = [
    (
        "semantic",
        "size",
        mutated_sidecar(input__shape=[1, 3, 32, 64], outputs__0__shape=[1, 32, 64]),
        "input.shape[2] is 64 but model.onnx's 'images' has 32",
    ),
    (
        "semantic",
        "width",
        mutated_sidecar(input__shape=[1, 3, 64, 64], outputs__0__shape=[1, 64, 64]),
        "input.shape[3] is 128 but model.onnx's 'images' has 64",
    ),
    (
        "semantic",
        "batch",
        mutated_sidecar(input__shape=[2, 3, 64, 128], outputs__0__shape=[2, 64, 128]),
        "input.shape[0] is 1 but model.onnx's 'images' has 2",
    ),
    ("semantic", "input-name", _rename_input, "input.name is 'images' but model.onnx has input(s) [\"x\"]"),
    (
        "semantic",
        "input-dtype",
        mutated_sidecar(input__dtype="uint8"),
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
        mutated_sidecar(input__shape=[1, 3, 64, 128]),
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
        mutated_sidecar(num_queries=10, outputs__0__shape=[1, 10, 20], outputs__1__shape=[1, 10, 16, 32]),
        "outputs[0].shape[1] is 20 but model.onnx's 'pred_logits' has 10",
    ),
    (
        "raw",
        "classes",
        mutated_sidecar(num_classes=7, outputs__0__shape=[1, 20, 8]),
        "outputs[0].shape[2] is 20 but model.onnx's 'pred_logits' has 8",
    ),
]


@pytest.mark.parametrize(
    ("variant", "name", "build", "expected"), MISMATCH_CASES, ids=[c[1] for c in MISMATCH_CASES]
)
def test_sidecar_model_mismatch_is_one_line_error(artifacts, tmp_path, variant, name, build, expected):
    model = copy_artifact(artifacts[variant], tmp_path / "art")
    with_model(model, build)
    with pytest.raises(SidecarError) as info:
        Segmenter.open(model)
    assert_one_line_message(info.value, "model.json:", expected)


def test_extra_model_output_is_refused(artifacts, tmp_path):
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")

    def build(sidecar):
        graph = graph_for(sidecar)
        graph.graph.output.append(helper.make_tensor_value_info("xf", TensorProto.FLOAT, [1, 3, H, W]))
        return graph

    with_model(model, build)
    with pytest.raises(SidecarError) as info:
        Segmenter.open(model)
    assert_one_line_message(info.value, "model.json: outputs does not list model.onnx's output 'xf'")


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
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    _swap_model(model, artifacts[other], rehash)
    with pytest.raises(ArtifactError) as info:
        Segmenter.open(model)
    assert_one_line_message(info.value, "model.", expected)


def test_model_swapped_for_an_equivalent_one_is_accepted(artifacts, tmp_path):
    """Same I/O, other weights, checksum updated: nothing in the contract can tell, so it runs."""
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    with_model(model, graph_for)
    with Segmenter.open(model) as seg:
        assert seg.predict(np.zeros((8, 8, 3), np.uint8)).labels.shape == (8, 8)


# -- broken ONNX files behind a valid sidecar ------------------------------------------------


def _huge_declared(sidecar: dict) -> bytes:
    big = copy.deepcopy(sidecar)
    big["input"]["shape"] = [1, 3, 65535, 65535]
    big["outputs"][0]["shape"] = [1, 65535, 65535]
    return graph_for(big).SerializeToString()


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
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    if callable(content):
        content = content(model.read_bytes(), read_sidecar(model))
    model.write_bytes(content)
    rehash_sidecar(model)  # the checksum matches: the loader itself must refuse it
    with pytest.raises(ArtifactError) as info:
        Segmenter.open(model)
    assert_one_line_message(info.value, "model.", expected)


def test_a_sidecar_declaring_a_huge_input_is_refused_before_loading(artifacts, tmp_path):
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")
    model.write_bytes(_huge_declared(read_sidecar(model)))
    data = read_sidecar(model)
    data["input"]["shape"] = [1, 3, 65535, 65535]
    data["input"]["default_size"] = [65535, 65535]
    data["outputs"][0]["shape"] = [1, 65535, 65535]
    data["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(SidecarError) as info:
        load_artifact(model)
    assert_one_line_message(info.value, "model.json: input.shape[2] must be <= 16384, got 65535")

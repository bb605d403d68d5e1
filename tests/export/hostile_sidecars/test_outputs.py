"""Output values no label PNG can hold (runtime.core.postprocess), and export's writer (export.metadata)
never writes a sidecar the runtime refuses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from contract.sidecar_records import IOSignature
from export.errors import ExportError
from export.metadata import ArtifactWriter, write_artifact
from runtime import Segmenter
from runtime.core.postprocess import fuse_panoptic, label_png_array
from runtime.errors import OutputRangeError
from tests.helpers.hostile_artifacts import (
    H,
    W,
    assert_one_line_message,
    copy_artifact,
    graph_for,
    mutated_sidecar,
    semantic_sidecar,
    with_model,
)

pytest.importorskip("onnxruntime")


# -- output values no label PNG can hold ------------------------------------------------------


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
        assert_one_line_message(info.value, "frame.png:", expected)
    else:
        out = label_png_array(values, "frame.png", kind, bits)
        assert out.dtype == expected and np.array_equal(out, values)


def _const_semantic(value: int, tmp_path: Path, artifacts) -> Path:
    model = copy_artifact(artifacts["semantic"], tmp_path / "art")

    def build(sidecar):
        graph = graph_for(sidecar)
        labels = np.full((1, H, W), value, np.int32)
        graph.graph.initializer.append(numpy_helper.from_array(labels, "bad"))
        graph.graph.node[-1].CopyFrom(helper.make_node("Identity", ["bad"], ["labels"]))
        return graph

    with_model(model, build)
    return model


@pytest.mark.parametrize("value", [19, 70000, -3])
def test_model_labels_outside_the_classes_are_an_error(artifacts, tmp_path, value):
    with (
        Segmenter.open(_const_semantic(value, tmp_path, artifacts)) as seg,
        pytest.raises(OutputRangeError) as info,
    ):
        seg.predict(np.zeros((10, 10, 3), np.uint8))
    assert_one_line_message(info.value, f"holds class id {value}, outside the sidecar's 19 classes")


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
    assert_one_line_message(info.value, expected)


# -- export never writes what the runtime refuses ------------------------------------------


def test_export_refuses_to_write_an_invalid_sidecar(tmp_path):
    # PEMConfig itself refuses std 0 (pem.config), so the bad value is put into the sidecar directly
    spec = semantic_sidecar()
    std = spec.input.std
    sidecar = dataclasses.replace(spec, input=dataclasses.replace(spec.input, std=(std[0], 0.0, std[2])))
    out = tmp_path / "out"
    with pytest.raises(ExportError) as info, ArtifactWriter(out) as writer:
        write_artifact(writer, graph_for(sidecar.to_dict()), sidecar, "model")
        writer.commit()
    assert_one_line_message(info.value, "model.json: input.normalization.std[1] must be > 0, got 0")
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing staged is left


def test_export_refuses_a_sidecar_that_does_not_fit_its_graph(tmp_path):
    sidecar = semantic_sidecar()
    other = mutated_sidecar(input__shape=[1, 3, 32, 64], outputs__0__shape=[1, 32, 64])(sidecar.to_dict())
    with pytest.raises(ExportError) as info, ArtifactWriter(tmp_path / "out") as writer:
        write_artifact(writer, other, sidecar, "model")
    assert_one_line_message(info.value, "input.shape[2] is 64 but model.onnx's 'images' has 32")
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

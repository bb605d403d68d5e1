"""Artifacts for the hostile-sidecar corpus (tests/export/hostile_sidecars): written by export's own
writer (``build_sidecar`` + ``write_artifact``, which validates before it commits) around small
hand-built ONNX graphs with exactly the I/O the exporter promises for each head, so no torch export
is needed; and the edits and checks the corpus applies to them."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.sidecar import Sidecar
from export.metadata import ArtifactWriter, embed_metadata, write_artifact
from pem.config import get_preset
from tests.helpers.sidecars import tiny_spec

H, W = 64, 128
_NP = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "uint8": TensorProto.UINT8}


# -- building artifacts ------------------------------------------------------------------------


def graph_for(sidecar: dict[str, Any]) -> onnx.ModelProto:
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


def export_artifact(
    out: Path, head: str, dynamic: bool = False, preprocess: str = "none", batch: int = 1
) -> Path:
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
    model = graph_for(spec.to_dict())
    embed_metadata(model, spec)
    with ArtifactWriter(out) as writer:
        write_artifact(writer, model, spec, "model")
        writer.commit()
    return out / "model.onnx"


def semantic_sidecar() -> Sidecar:
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


def copy_artifact(artifact: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".onnx", ".json"):
        shutil.copyfile(artifact.with_suffix(suffix), dest / f"model{suffix}")
    return dest / "model.onnx"


def read_sidecar(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


def rehash_sidecar(model: Path) -> None:
    data = read_sidecar(model)
    data["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(data))


def assert_one_line_message(exc: BaseException, *parts: str) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def set_at_path(data: dict[str, Any], path: str, value: Any) -> None:
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


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_model(model: Path, build) -> None:
    onnx.save(build(read_sidecar(model)), model)
    rehash_sidecar(model)


def mutated_sidecar(**changes):
    """A graph for the sidecar with ``changes`` applied to a copy of it first (the model differs)."""

    def build(sidecar: dict) -> onnx.ModelProto:
        other = copy.deepcopy(sidecar)
        for path, value in changes.items():
            set_at_path(other, path.replace("__", "."), value)
        return graph_for(other)

    return build

"""Small hand-built ONNX models and their artifacts for the runtime tests (no torch: onnx.helper).

``semantic_model``: labels = argmax over RGB; ``constant_model``: fixed outputs;
``constant_panoptic_artifact``: fixed panoptic outputs;
``image_panoptic_model``: panoptic outputs computed from the image; ``write_artifact``: model +
a valid sidecar (contract/ARTIFACT.md) in a folder.
"""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.fs import sha256_file

K = 3
CLASSES = [
    {"id": 0, "name": "road", "color": [128, 64, 128], "isthing": False},
    {"id": 1, "name": "sky", "color": [70, 130, 180], "isthing": False},
    {"id": 2, "name": "car", "color": [0, 0, 142], "isthing": True},
]


def semantic_model(h: int, w: int, batch: int | str = 1) -> onnx.ModelProto:
    """labels = argmax_c(conv1x1(images)): the class is whichever RGB channel dominates."""
    weight = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "W")
    nodes = [
        helper.make_node("Conv", ["images", "W"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["idx"], axis=1, keepdims=0),
        helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.INT32),
    ]
    graph = helper.make_graph(
        nodes,
        "semantic",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info("labels", TensorProto.INT32, [batch, h, w])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def outputs_of(model: onnx.ModelProto) -> list[dict]:
    """The sidecar ``outputs`` entries of a hand-built model: its declared names, dtypes, shapes."""
    entries = []
    for value in model.graph.output:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        entries.append({"name": value.name, "dtype": dtype, "shape": shape})
    return entries


def sidecar_for(model: onnx.ModelProto, head="semantic", shape=(1, 3, 32, 64), **extra) -> dict:
    """A valid format-1 sidecar (contract/ARTIFACT.md) for a hand-built model; ``extra`` overrides."""
    dynamic = any(isinstance(d, str) for d in shape)
    return {
        "format": "pem-deploy",
        "format_version": 1,
        "head": head,
        "task": "panoptic" if head == "panoptic" else "semantic",
        "precision": "fp32",
        "input": {
            "name": "images",
            "shape": list(shape),
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB",
            "normalize_in_graph": False,
            "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
            **({"default_size": [32, 64]} if dynamic else {}),
        },
        "outputs": outputs_of(model),
        "num_classes": K,
        "classes": CLASSES,
        **extra,
    }


def write_artifact(tmp_path, model, head="semantic", shape=(1, 3, 32, 64), **extra):
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    sidecar = {**sidecar_for(model, head, shape, **extra), "sha256": sha256_file(path)}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def scene(h=48, w=80):
    """BGR image: left half red (class 0), right half blue (class 2: B is channel 2 in RGB)."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (0, 0, 200)  # BGR red -> RGB channel 0
    image[:, w // 2 :] = (200, 0, 0)  # BGR blue -> RGB channel 2
    return image


def constant_model(consts: dict[str, np.ndarray], h: int, w: int) -> onnx.ModelProto:
    """Outputs fixed to ``consts`` whatever the image (the image feeds an extra, unread output)."""
    nodes, outputs, inits = [], [], []
    for name, value in consts.items():
        inits.append(numpy_helper.from_array(value, f"{name}_c"))
        nodes.append(helper.make_node("Identity", [f"{name}_c"], [name]))
        dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
        outputs.append(helper.make_tensor_value_info(name, dtype, value.shape))
    nodes.append(helper.make_node("ReduceSum", ["images"], ["unused"], keepdims=0))
    outputs.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, []))
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])]
    graph = helper.make_graph(nodes, "const", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def constant_panoptic_artifact(tmp_path, h=32, w=64):
    """A fixed panoptic model: stuff 'road' on the left, a 'car' on the right (any input)."""
    owner = np.zeros((1, h, w), np.int32)
    owner[:, :, 40:] = 1
    consts = {
        "scores": np.array([[0.95, 0.9]], np.float32),
        "classes": np.array([[0, 2]], np.int32),
        "owner": owner,
        "owner_fg": np.ones((1, h, w), np.uint8),
        "mask_area": np.array([[40 * h, 24 * h]], np.int32),
    }
    model = constant_model(consts, h, w)
    return write_artifact(tmp_path, model, head="panoptic", panoptic={"object_mask_threshold": 0.8})


def image_panoptic_model(h=32, w=64, perturb=0.0) -> onnx.ModelProto:
    """Panoptic head outputs computed from the image: three queries (road, car, sky) whose masks
    are a 1x1 conv of the image; scores in (0.8, 0.99) from each mask's mean logit."""
    weights = np.array([[1.0, -1.0, 0.0], [-1.0, 0.2, 1.0], [0.0, 1.0, -1.0]], np.float32)
    weights = weights + perturb * np.random.default_rng(2).standard_normal((3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(weights.reshape(3, 3, 1, 1), "Wm"),
        numpy_helper.from_array(np.array([[0, 2, 1]], np.int32), "classes_c"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.19, np.float32), "span"),
        numpy_helper.from_array(np.array(0.8, np.float32), "floor"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["images", "Wm"], ["m"]),
        n("Sigmoid", ["m"], ["sig"]),
        n("ArgMax", ["sig"], ["owner64"], axis=1, keepdims=0),
        n("Cast", ["owner64"], ["owner"], to=TensorProto.INT32),
        n("ReduceMax", ["sig", "axes1"], ["maxsig"], keepdims=0),
        n("GreaterOrEqual", ["maxsig", "half"], ["fg"]),
        n("Cast", ["fg"], ["owner_fg"], to=TensorProto.UINT8),
        n("GreaterOrEqual", ["sig", "half"], ["fgq"]),
        n("Cast", ["fgq"], ["fgqf"], to=TensorProto.FLOAT),
        n("ReduceSum", ["fgqf", "axes23"], ["areaf"], keepdims=0),
        n("Cast", ["areaf"], ["mask_area"], to=TensorProto.INT32),
        n("ReduceMean", ["m", "axes23"], ["mean"], keepdims=0),
        n("Sigmoid", ["mean"], ["smean"]),
        n("Mul", ["smean", "span"], ["scaled"]),
        n("Add", ["scaled", "floor"], ["scores"]),
        n("Identity", ["classes_c"], ["classes"]),
    ]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes1"))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "panoptic",
        [vi("images", TensorProto.FLOAT, [1, 3, h, w])],
        [
            vi("scores", TensorProto.FLOAT, [1, 3]),
            vi("classes", TensorProto.INT32, [1, 3]),
            vi("owner", TensorProto.INT32, [1, h, w]),
            vi("owner_fg", TensorProto.UINT8, [1, h, w]),
            vi("mask_area", TensorProto.INT32, [1, 3]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)

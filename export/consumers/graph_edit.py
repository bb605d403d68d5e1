"""Edits of an exported ONNX graph that give a consumer the I/O contract its stock decoder reads.

No re-export: the semantic head's graph is kept node for node, and only its ends change:

- :func:`normalize_in_graph`: a float32 0..255 RGB input, ``(x - mean) / std`` per channel as the
  graph's first nodes (DeepStream's ``net-scale-factor`` is one scalar and cannot express PEM's
  per-channel std), or a ``Cast`` in front of a graph that takes uint8.
- :func:`rename_input`: the input's name (Isaac ROS binds ``input``).
- :func:`labels_as`: the ``labels`` (B, H, W) int32 output unsqueezed to (B, H, W, 1) (DeepStream)
  or (B, 1, H, W) (Isaac ROS NCHW) under the consumer's name.
- :func:`fix_input_size`: dynamic height / width pinned to a size (nvinfer's ``infer-dims`` and
  Isaac ROS's encoder are static).

Each returns a one-line description of what it changed; the sidecar's ``consumer.edits`` lists them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.sidecar_records import InputSpec


def _fresh(model: onnx.ModelProto, base: str) -> str:
    """A tensor / node name not used anywhere in ``model``'s graph."""
    used = {i.name for i in model.graph.initializer}
    used.update(v.name for v in (*model.graph.input, *model.graph.output, *model.graph.value_info))
    for node in model.graph.node:
        used.update(node.input)
        used.update(node.output)
        used.add(node.name)
    name, n = base, 0
    while name in used:
        n += 1
        name = f"{base}_{n}"
    return name


def _rewire_inputs(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _free_name(model: onnx.ModelProto, name: str) -> None:
    """Rename an internal tensor called ``name`` (exporters name theirs ``argmax_1``, ``input``...)
    so that the consumer's binding can take the name."""
    if name == _fresh(model, name):
        return
    other = _fresh(model, f"{name}_pem_internal")
    for node in model.graph.node:
        node.input[:] = [other if i == name else i for i in node.input]
        node.output[:] = [other if o == name else o for o in node.output]
    for value in (*model.graph.value_info, *model.graph.output, *model.graph.input):
        if value.name == name:
            value.name = other
    for init in model.graph.initializer:
        if init.name == name:
            init.name = other


def _graph_input(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    for value in model.graph.input:
        if value.name == name:
            return value
    raise ValueError(f"the graph has no input {name!r}")


def _graph_output(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    for value in model.graph.output:
        if value.name == name:
            return value
    raise ValueError(f"the graph has no output {name!r}")


def normalize_in_graph(model: onnx.ModelProto, spec: InputSpec) -> str | None:
    """Make the graph take float32 RGB 0..255 pixels; None when it already does."""
    value = _graph_input(model, spec.name)
    if spec.dtype == "float32" and spec.normalize_in_graph:
        return None
    inner = _fresh(model, f"{spec.name}_pem_inner")
    _rewire_inputs(model, spec.name, inner)
    value.type.tensor_type.elem_type = TensorProto.FLOAT
    if spec.dtype == "uint8":
        # 0..255 integers arrive as floats (nvinfer's net-scale-factor 1, offsets 0): exact in uint8.
        nodes = [helper.make_node("Cast", [spec.name], [inner], to=TensorProto.UINT8, name=inner)]
        edit = "input: float32 0..255 cast to the graph's uint8 input"
    elif spec.dtype == "float16" and spec.normalize_in_graph:
        nodes = [helper.make_node("Cast", [spec.name], [inner], to=TensorProto.FLOAT16, name=inner)]
        edit = "input: float32 0..255 cast to the graph's float16 input"
    else:
        mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
        inv_std = (1.0 / np.asarray(spec.std, np.float64)).astype(np.float32).reshape(1, 3, 1, 1)
        mean_name, scale_name = _fresh(model, "pem_mean"), _fresh(model, "pem_inv_std")
        model.graph.initializer.extend(
            [numpy_helper.from_array(mean, mean_name), numpy_helper.from_array(inv_std, scale_name)]
        )
        centred = _fresh(model, f"{spec.name}_pem_centred")
        cast_to = TensorProto.FLOAT16 if spec.dtype == "float16" else None
        scaled = _fresh(model, f"{spec.name}_pem_scaled") if cast_to else inner
        nodes = [
            helper.make_node("Sub", [spec.name, mean_name], [centred], name=centred),
            helper.make_node("Mul", [centred, scale_name], [scaled], name=scaled),
        ]
        if cast_to:
            nodes.append(helper.make_node("Cast", [scaled], [inner], to=cast_to, name=inner))
        edit = (
            "input: (x - mean) / std per RGB channel added in front of the graph "
            f"(mean {list(spec.mean)}, std {list(spec.std)})"
        )
    for i, node in enumerate(nodes):
        model.graph.node.insert(i, node)
    return edit


def rename_input(model: onnx.ModelProto, old: str, new: str) -> str | None:
    """Rename graph input ``old`` to ``new``; None when it already has that name."""
    if old == new:
        return None
    _free_name(model, new)
    value = _graph_input(model, old)
    value.name = new
    _rewire_inputs(model, old, new)
    return f"input: renamed {old!r} -> {new!r}"


def fix_input_size(model: onnx.ModelProto, name: str, height: int, width: int) -> str | None:
    """Pin a dynamic height / width of input ``name`` to ``height`` x ``width``."""
    dims = _graph_input(model, name).type.tensor_type.shape.dim
    changed = False
    for dim, size in ((dims[2], height), (dims[3], width)):
        if not dim.HasField("dim_value"):
            dim.Clear()
            dim.dim_value = size
            changed = True
    return f"input: dynamic height / width pinned to {height} x {width}" if changed else None


def labels_as(model: onnx.ModelProto, name: str, axis: int) -> str:
    """Replace output ``labels`` (B, H, W) int32 with ``name``: it unsqueezed at ``axis``
    (3: (B, H, W, 1), 1: (B, 1, H, W))."""
    out = _graph_output(model, "labels")
    if out.type.tensor_type.elem_type != TensorProto.INT32:
        raise ValueError("the graph's labels output is not int32")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out.type.tensor_type.shape.dim]
    if len(dims) != 3:
        raise ValueError(f"the graph's labels output has {len(dims)} dimensions, not 3 (B, H, W)")
    _free_name(model, name)
    axes = _fresh(model, f"{name}_axes")
    model.graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
    model.graph.node.append(helper.make_node("Unsqueeze", ["labels", axes], [name], name=name))
    dims.insert(axis, 1)
    model.graph.output.remove(out)
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.INT32, dims))
    layout = "(B, H, W, 1)" if axis == 3 else "(B, 1, H, W)"
    return f"output: labels (B, H, W) int32 unsqueezed to {layout} and named {name!r}"

"""One index of an ONNX graph: producers, consumers, constants and element types of its tensors.

Used by every pass that walks a graph's data flow (FP16 conversion, the TensorRT lint, Q/DQ
insertion and the INT8 region search), so that they agree on what feeds what. Torch-free.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from export.errors import ExportError

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


def tensor_types(model: onnx.ModelProto, *, strict: str | None = None) -> dict[str, int]:
    """Element type of every tensor: shape inference, initializers, graph I/O and ``Constant`` nodes.

    With ``strict`` (the name of the pass, for the message) a failed inference or a node output
    without a type raises :class:`ExportError`; without it the types found are returned as they are.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        if strict:
            raise ExportError(f"{strict}: shape inference failed ({' '.join(str(exc).split())})") from None
        inferred = model
    graph = inferred.graph
    types: dict[str, int] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for tensor in graph.initializer:
        types[tensor.name] = tensor.data_type
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types.setdefault(node.output[0], node.attribute[0].t.data_type)
    if strict:
        missing = [out for node in graph.node for out in node.output if out and out not in types]
        if missing:
            raise ExportError(f"{strict}: no inferred type for {len(missing)} tensors (e.g. {missing[0]})")
    return types


@dataclass
class GraphIndex:
    """Who produces and who reads each tensor of ``model``'s main graph (node positions).

    ``types`` is filled only when asked for (``with_types``), since shape inference is the costly
    part on large graphs.
    """

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto] = field(init=False)
    initializers: dict[str, TensorProto] = field(init=False)
    producer: dict[str, int] = field(init=False)
    consumers: dict[str, list[int]] = field(init=False)
    types: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {}
        self.consumers = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in node.input:
                if name:
                    self.consumers[name].append(i)

    @classmethod
    def with_types(cls, model: onnx.ModelProto, *, strict: str | None = None) -> GraphIndex:
        """The index plus every tensor's element type (see :func:`tensor_types`)."""
        index = cls(model)
        index.types = tensor_types(model, strict=strict)
        return index

    def producer_node(self, name: str) -> onnx.NodeProto | None:
        """The node writing tensor ``name`` (None for graph inputs and initializers)."""
        position = self.producer.get(name)
        return None if position is None else self.nodes[position]

    def consumer_nodes(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading tensor ``name``, in graph order (a node reading it twice counts once)."""
        return [self.nodes[i] for i in dict.fromkeys(self.consumers.get(name, []))]

    def is_float(self, name: str) -> bool:
        return self.types.get(name) in FLOAT_TYPES

    def constant(self, name: str) -> TensorProto | None:
        return self.initializers.get(name)

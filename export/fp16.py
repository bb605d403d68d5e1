"""FP16 ONNX graphs with the numerically fragile parts kept in FP32 (the portable FP16 path).

TensorRT 11 only builds strongly typed networks: the precision of every tensor is what the ONNX
graph says. This converter writes weights and compute in FP16 except for a block set that stays
FP32, found from the graph's structure (op types and data flow), never from node names:

* **op type**: LayerNormalization, Softmax / LogSoftmax, ReduceL2 and other normalisations,
  ArgMax / ArgMin / TopK, Range (and ops whose output type comes from an attribute).
* **L2-normalize**: a ``ReduceL2`` (or ``Sqrt`` of a sum of squares), the clamp/expand after it
  and the ``Div`` it feeds (PEM-CA normalises queries, pixel tokens and the update; an FP16 norm
  over 256 channels overflows and its ``1e-12`` clamp underflows).
* **prototype similarity**: everything between an ``ArgMax`` and the layers that produce its
  input: walking back from the ArgMax through layout ops, the ``Add`` of the 0 / ``-inf`` mask
  bias and the ``Where`` making it (data inputs), a masking ``Where``, activation x activation
  ``MatMul`` (the similarity) and the normalisation, stopping at
  parameterised layers (Gemm/Conv, MatMul with a 2-D weight, Mul/Div/Add with a non-scalar
  constant). FP16 rounding of the similarity creates ties that flip the chosen prototype.
* **index math**: the float tensors that become integer indices (the inputs of ``Floor`` /
  ``Ceil`` / ``Round`` traced back through element-wise and layout ops) and every node that
  reads them: the sample positions of the decomposed deformable convolution (FP16 cannot hold
  ``x + 0.3`` at ``x ~ 256``).
* **graph inputs and outputs** keep their types (Casts are inserted at the boundary).

:func:`emulate_fp16` turns a converted graph back into FP32 compute with an FP16 round trip after
every FP16 op, so that onnxruntime's CPU provider (which silently computes most FP16 nodes in FP32)
shows FP16 rounding; use it to estimate FP16 accuracy on a machine without a GPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.onnx_graph import GraphIndex, tensor_types

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = 65504.0

# Kept in FP32 by op type.
FP32_OP_TYPES = frozenset(
    {
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "RMSNormalization",
        "MeanVarianceNormalization",
        "LpNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceLogSumExp",
        "ArgMax",
        "ArgMin",
        "TopK",
        "Range",
        # Output type set by an attribute: left alone.
        "EyeLike",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Bernoulli",
    }
)

# Ops that only move or select data (no arithmetic).
LAYOUT_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Slice",
        "Split",
        "Concat",
        "Gather",
        "GatherElements",
        "GatherND",
        "Expand",
        "Identity",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
    }
)

# Walked through when tracing the similarity that feeds an ArgMax (see module docstring).
_SIMILARITY_OPS = LAYOUT_OPS | {
    "Where",
    "Add",
    "MatMul",
    "Mul",
    "Div",
    "Clip",
    "Max",
    "Min",
    "Neg",
    "Cast",
    "ReduceL2",
    "ReduceSum",
    "ReduceSumSquare",
    "Sqrt",
    "Pow",
}

# Walked through when tracing float tensors that end up as indices.
_INDEX_MATH_OPS = LAYOUT_OPS | {"Add", "Sub", "Mul", "Div", "Clip", "Max", "Min", "Neg", "Abs", "Cast"}
_ROUNDING_OPS = frozenset({"Floor", "Ceil", "Round"})

# (op type, input index) whose type is fixed or irrelevant: never cast.
_KEEP_INPUT_TYPE = {
    ("Resize", 1),
    ("Resize", 2),
    ("Upsample", 1),
    ("Shape", 0),
    ("Size", 0),
    ("Cast", 0),
}

_REASON_OP = "op type"
_REASON_NORM = "L2-normalize"
_REASON_SIM = "prototype similarity"
_REASON_INDEX = "index math"
# The rules of the block set (all by default; subsets are for ablations).
RULES: tuple[str, ...] = (_REASON_OP, _REASON_NORM, _REASON_SIM, _REASON_INDEX)


@dataclass
class Fp16Report:
    """What :func:`convert_to_fp16` did."""

    nodes: int = 0
    fp16_nodes: int = 0
    fp32_nodes: dict[str, int] = field(default_factory=dict)  # reason -> count
    fp32_op_types: dict[str, int] = field(default_factory=dict)  # op type -> count (kept FP32)
    casts_inserted: int = 0
    initializers_converted: int = 0
    values_clamped: int = 0
    values_underflowed: int = 0

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.fp32_nodes.items()) or "none"
        return (
            f"{self.fp16_nodes} FP16 nodes, {sum(self.fp32_nodes.values())} kept FP32 ({reasons}), "
            f"{self.casts_inserted} casts, {self.initializers_converted} FP16 initializers"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "nodes": self.nodes,
            "fp16_nodes": self.fp16_nodes,
            "fp32_nodes": dict(self.fp32_nodes),
            "fp32_op_types": dict(self.fp32_op_types),
            "casts_inserted": self.casts_inserted,
            "initializers_converted": self.initializers_converted,
            "values_clamped": self.values_clamped,
            "values_underflowed": self.values_underflowed,
        }


# ---------------------------------------------------------------------------------------------
# Graph helpers


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Replace ``Constant`` nodes holding a tensor by initializers (so all weights look alike)."""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _is_weight_layer(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A parameterised layer: where tracing of a fragile sub-graph stops."""
    if node.op_type in ("Gemm", "Conv", "ConvTranspose", "DeformConv", "BatchNormalization"):
        return True
    consts = [index.constant(name) for name in node.input if name and index.is_float(name)]
    consts = [c for c in consts if c is not None]
    if node.op_type == "MatMul":
        return any(len(c.dims) <= 2 for c in consts)  # a Linear's 2-D weight
    if node.op_type in ("Mul", "Div", "Add", "Sub"):
        return any(int(np.prod(c.dims)) > 1 for c in consts)
    return False


# ---------------------------------------------------------------------------------------------
# The block set


def _l2_normalize_nodes(index: GraphIndex) -> set[int]:
    """ReduceL2 (or Sqrt of a sum of squares) -> clamp/expand -> Div chains."""
    found: set[int] = set()
    norm_ops = {"Clip", "Max", "Expand", "Add", "Unsqueeze", "Reshape", "Cast"}
    for i, node in enumerate(index.nodes):
        start = node.op_type == "ReduceL2"
        if node.op_type == "Sqrt" and node.input[0] in index.producer:
            source = index.nodes[index.producer[node.input[0]]]
            if source.op_type in ("ReduceSum", "ReduceSumSquare"):
                start = True
                found.add(index.producer[node.input[0]])
                if source.op_type == "ReduceSum" and source.input[0] in index.producer:
                    square = index.producer[source.input[0]]
                    if index.nodes[square].op_type in ("Mul", "Pow"):
                        found.add(square)
        if not start:
            continue
        found.add(i)
        frontier = [i]
        while frontier:
            current = frontier.pop()
            for out in index.nodes[current].output:
                for consumer in index.consumers.get(out, []):
                    op = index.nodes[consumer].op_type
                    if consumer in found:
                        continue
                    if op == "Div" or (op in norm_ops and not _is_weight_layer(index.nodes[consumer], index)):
                        found.add(consumer)
                        if op != "Div":
                            frontier.append(consumer)
    return found


def _similarity_nodes(index: GraphIndex) -> set[int]:
    """The sub-graph computing each ArgMax's input, back to the parameterised layers."""
    found: set[int] = set()
    for node in index.nodes:
        if node.op_type != "ArgMax":
            continue
        frontier = [node.input[0]]
        while frontier:
            name = frontier.pop()
            producer = index.producer.get(name)
            if producer is None or producer in found:
                continue
            source = index.nodes[producer]
            if source.op_type not in _SIMILARITY_OPS or _is_weight_layer(source, index):
                continue
            found.add(producer)
            inputs = list(source.input)
            if source.op_type == "Where":
                inputs = inputs[1:]  # the condition is boolean
            frontier.extend(n for n in inputs if n and index.is_float(n))
    return found


def _index_math_nodes(index: GraphIndex) -> set[int]:
    """Nodes producing or reading float tensors that are rounded into indices."""
    critical: set[str] = set()
    found: set[int] = set()
    for i, node in enumerate(index.nodes):
        if node.op_type not in _ROUNDING_OPS:
            continue
        found.add(i)
        frontier = [n for n in node.input if n and index.is_float(n)]
        while frontier:
            name = frontier.pop()
            if name in critical:
                continue
            critical.add(name)
            producer = index.producer.get(name)
            if producer is None:
                continue
            source = index.nodes[producer]
            if source.op_type in _INDEX_MATH_OPS or source.op_type in _ROUNDING_OPS:
                found.add(producer)
                frontier.extend(n for n in source.input if n and index.is_float(n))
    for name in critical:
        for consumer in index.consumers.get(name, []):
            found.add(consumer)
    return found


def fp32_nodes(model: onnx.ModelProto, rules: Collection[str] = RULES) -> dict[int, str]:
    """Indices (in ``model.graph.node``) of the nodes to keep in FP32, with the reason for each.

    ``rules`` selects which of :data:`RULES` apply (all by default).
    """
    unknown = set(rules) - set(RULES)
    if unknown:
        raise ExportError(f"unknown FP16 block rule(s) {sorted(unknown)}; choose from {', '.join(RULES)}")
    index = GraphIndex.with_types(model, strict="FP16 conversion")
    plan: dict[int, str] = {}
    if _REASON_INDEX in rules:
        for i in _index_math_nodes(index):
            plan.setdefault(i, _REASON_INDEX)
    if _REASON_SIM in rules:
        for i in _similarity_nodes(index):
            plan.setdefault(i, _REASON_SIM)
    if _REASON_NORM in rules:
        for i in _l2_normalize_nodes(index):
            plan.setdefault(i, _REASON_NORM)
    if _REASON_OP in rules:
        for i, node in enumerate(index.nodes):
            if node.op_type in FP32_OP_TYPES:
                plan.setdefault(i, _REASON_OP)
    return plan


# ---------------------------------------------------------------------------------------------
# Conversion


def _to_fp16_array(array: np.ndarray, report: Fp16Report) -> np.ndarray:
    finite = np.isfinite(array)
    too_big = finite & (np.abs(array) > FP16_MAX)
    report.values_clamped += int(too_big.sum())
    clipped = np.where(too_big, np.sign(array) * FP16_MAX, array)
    half = clipped.astype(np.float16)
    report.values_underflowed += int(((half == 0) & (array != 0)).sum())
    return half


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def convert_to_fp16(
    model: onnx.ModelProto, rules: Collection[str] = RULES
) -> tuple[onnx.ModelProto, Fp16Report]:
    """FP16 copy of ``model``: FP16 weights and compute except the FP32 block set (module docstring).

    Graph inputs and outputs keep their element types. The result passes ``onnx.checker`` and
    runs in onnxruntime. ``rules``: which block-set rules apply (all; subsets for ablations).

    Raises:
        ExportError: the graph has sub-graphs (If/Loop) or tensors of unknown type.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        raise ExportError("FP16 conversion: graphs with sub-graphs (If/Loop) are not supported")
    _constants_to_initializers(graph)
    del graph.value_info[:]
    plan = fp32_nodes(result, rules)
    index = GraphIndex.with_types(result, strict="FP16 conversion")
    report = Fp16Report(nodes=len(index.nodes))
    for reason in plan.values():
        report.fp32_nodes[reason] = report.fp32_nodes.get(reason, 0) + 1
    report.fp32_op_types = dict(Counter(index.nodes[i].op_type for i in plan).most_common())

    rewrite = _Fp16Rewrite(index, report, taken=set(index.types) | {n.name for n in graph.node if n.name})
    for i, node in enumerate(index.nodes):
        if i in plan:
            rewrite.keep_fp32(node)
        else:
            rewrite.to_fp16(node)
    rewrite.restore_output_types(graph)

    del graph.node[:]
    graph.node.extend(rewrite.nodes)
    graph.initializer.extend(rewrite.initializers)
    used = {n for node in graph.node for n in node.input} | {v.name for v in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return result, report


class _Fp16Rewrite:
    """The converted graph's nodes and initializers, built node by node in the original order, and
    the element type of each tensor after conversion."""

    def __init__(self, index: GraphIndex, report: Fp16Report, taken: set[str]):
        self.index = index
        self.report = report
        self.taken = taken
        self.current = dict(index.types)  # element type of each tensor after conversion
        self.casts: dict[tuple[str, int], str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def convert(self, name: str, to: int) -> str:
        """The name of ``name`` as element type ``to``: an FP16 copy of an initializer, else a
        ``Cast`` (made once per tensor and type)."""
        key = (name, to)
        if key in self.casts:
            return self.casts[key]
        tensor = self.index.initializers.get(name)
        suffix = "fp16" if to == FLOAT16 else "fp32"
        new_name = _unique(f"{name}__{suffix}", self.taken)
        if tensor is not None and to == FLOAT16:
            array = numpy_helper.to_array(tensor).astype(np.float32)
            self.initializers.append(numpy_helper.from_array(_to_fp16_array(array, self.report), new_name))
            self.report.initializers_converted += 1
        else:
            self.nodes.append(
                helper.make_node(
                    "Cast", [name], [new_name], to=to, name=_unique(f"cast_{new_name}", self.taken)
                )
            )
            self.report.casts_inserted += 1
        self.current[new_name] = to
        self.casts[key] = new_name
        return new_name

    def keep_fp32(self, node: onnx.NodeProto) -> None:
        """A node of the FP32 block set: its FP16 inputs are cast back to FP32."""
        for k, name in enumerate(node.input):
            if name and self.current.get(name) == FLOAT16:
                node.input[k] = self.convert(name, FLOAT)
        self.nodes.append(node)

    def to_fp16(self, node: onnx.NodeProto) -> None:
        """Any other node computes in FP16: FP32 inputs, casts to FP32, FP32 constants of shape and
        FP32 outputs become FP16."""
        touched = False
        for k, name in enumerate(node.input):
            if not name or (node.op_type, k) in _KEEP_INPUT_TYPE:
                continue
            if self.current.get(name) == FLOAT:
                node.input[k] = self.convert(name, FLOAT16)
                touched = True
            elif self.current.get(name) == FLOAT16:
                touched = True
        if node.op_type == "Cast":
            to = helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
            if to == FLOAT:
                for attr in node.attribute:
                    if attr.name == "to":
                        attr.i = FLOAT16
                touched = True
        if node.op_type == "ConstantOfShape":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    value = numpy_helper.to_array(attr.t).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(_to_fp16_array(value, self.report)))
                    touched = True
        for name in node.output:
            if name and self.current.get(name) == FLOAT:
                self.current[name] = FLOAT16
                touched = True
        if touched:
            self.report.fp16_nodes += 1
        self.nodes.append(node)

    def restore_output_types(self, graph: onnx.GraphProto) -> None:
        """Graph outputs keep their original type: an FP32 output computed in FP16 is renamed inside
        and cast back under its own name."""
        renames: dict[str, str] = {}
        for value in graph.output:
            if self.index.types.get(value.name) == FLOAT and self.current.get(value.name) == FLOAT16:
                renames[value.name] = _unique(f"{value.name}__fp16", self.taken)
        for node in self.nodes:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        for original, internal in renames.items():
            self.nodes.append(
                helper.make_node(
                    "Cast", [internal], [original], to=FLOAT, name=_unique(f"cast_{original}", self.taken)
                )
            )
            self.report.casts_inserted += 1


def emulate_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP32 graph that rounds like ``model`` (an FP16 graph): every FP16 tensor produced by a
    computing op is rounded through FP16 (``Cast`` to FP16 and back), FP16 weights become the same
    values in FP32. onnxruntime keeps such cast pairs, so this shows per-op FP16 rounding on CPU.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    _constants_to_initializers(graph)
    types = tensor_types(result, strict="FP16 conversion")
    taken = set(types) | {n.name for n in graph.node if n.name}
    inits = []
    for tensor in graph.initializer:
        if tensor.data_type == FLOAT16:
            inits.append(
                numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
            )
        else:
            inits.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT16:
                attr.i = FLOAT
            if node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == FLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32)))
        rounded = []
        if node.op_type not in LAYOUT_OPS:
            for k, name in enumerate(node.output):
                if name and types.get(name) == FLOAT16:
                    raw = _unique(f"{name}__raw", taken)
                    half = _unique(f"{name}__half", taken)
                    node.output[k] = raw
                    rounded.append(
                        helper.make_node(
                            "Cast", [raw], [half], to=FLOAT16, name=_unique(f"round_{half}", taken)
                        )
                    )
                    rounded.append(
                        helper.make_node(
                            "Cast", [half], [name], to=FLOAT, name=_unique(f"round_{name}", taken)
                        )
                    )
        new_nodes.append(node)
        new_nodes.extend(rounded)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == FLOAT16:
            value.type.tensor_type.elem_type = FLOAT
    return result

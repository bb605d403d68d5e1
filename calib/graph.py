"""Which nodes of the exported model are quantised, and explicit Q/DQ insertion.

The exported model part (input ``images``, outputs ``pred_logits`` / ``pred_masks``) is
partitioned by module scope into backbone, pixel decoder and transformer decoder. Scopes come
from the dynamo exporter's node metadata (``pkg.torch.onnx.name_scopes`` / ``namespace``) when
the graph still carries it, otherwise from the parameter names of a node's initializers
(``model.backbone.*``, ``model.sem_seg_head.pixel_decoder.*``, ``model.sem_seg_head.predictor.*``),
which survive simplification and BatchNorm folding. A node whose scope cannot be told stays float.

Quantised: ``Conv``, ``ConvTranspose``, ``Gemm`` and ``MatMul`` with a constant weight, in the
backbone and the pixel decoder. Everything else (``DeformConv``, normalisations, softmax, the
PEM-CA similarity and prototype ``ArgMax``, the whole transformer decoder) stays float.

The Q/DQ layout follows what TensorRT 10 and 11 compile: INT8, symmetric (zero point 0),
activations per tensor, weights per output channel (``Conv`` axis 0; ``ConvTranspose`` weights
are (in, out/group, k, k): axis 1 when ``group == 1``, else per tensor; ``Gemm`` axis 0 with
``transB=1``, else axis 1; ``MatMul`` axis 1), and Q/DQ only on the inputs of quantised nodes.
Biases stay float (TensorRT has no INT32 dequantisation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calib.errors import CalibrationError
from contract.vocabulary import INT8_TARGETS
from export.onnx_graph import GraphIndex

QUANTIZABLE_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Quantisable ops with a bias input (input 2): in the ``onnxruntime`` layout an INT32 bias + DQ.
BIASED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm")
QUANTIZED_PARTS: tuple[str, ...] = ("backbone", "pixel_decoder")
# Opt-in transformer-decoder groups (``find_targets(..., decoder=...)``): see :func:`decoder_targets`.
DECODER_GROUPS: tuple[str, ...] = ("tokens", "mask_einsum")
# Ops that must never receive a dequantised input (checked by tests and by :func:`check_qdq`).
LAYOUTS: tuple[str, ...] = INT8_TARGETS
# The CLI's ``--target`` names the runtime an INT8 graph is laid out for; each target has its layout.
TARGETS: tuple[str, ...] = LAYOUTS


def default_target(out_format: str = "onnx") -> str:
    """The Q/DQ target when the user names none: ``tensorrt`` when a TensorRT engine is built from
    the graph (``--format engine``; TensorRT takes no UINT8 Q/DQ), else ``onnxruntime``, the
    runtime that runs a plain ONNX artifact (and the only layout that is faster than FP32 there)."""
    return "tensorrt" if out_format == "engine" else "onnxruntime"


def check_target(target: str) -> str:
    """``target`` if it is one of :data:`TARGETS`; else :class:`CalibrationError` naming ``--target``."""
    if target not in TARGETS:
        raise CalibrationError(f"--target {target}: choose one of {', '.join(TARGETS)}")
    return target


ORT_FLOAT_OPS: tuple[str, ...] = ("ConvTranspose",)  # kept float in the ``onnxruntime`` layout
# A non-grouped Conv reading fewer channels than this (the RGB stem) stays float in the
# ``onnxruntime`` layout: with a reduction depth of 3 x 3 x 3 its INT8 kernel is slower than float.
ORT_MIN_INT8_CHANNELS = 4
# Pure data movement that onnxruntime runs on 8-bit tensors: each node of a single-consumer chain
# of these right after a quantised node gets a Q/DQ pair with that node's output scale.
DATA_MOVEMENT_OPS: tuple[str, ...] = ("DepthToSpace", "SpaceToDepth", "Slice", "Reshape", "Transpose")
FLOAT_ONLY_OPS: tuple[str, ...] = (
    "DeformConv",
    "LayerNormalization",
    "Softmax",
    "ReduceL2",
    "ArgMax",
    "GatherElements",
)
_SCOPE_KEYS = ("pkg.torch.onnx.name_scopes", "namespace", "pkg.torch.onnx.class_hierarchy")
_PARTS = (
    ("pixel_decoder", ("pixel_decoder",)),
    ("transformer_decoder", ("predictor", "transformer_decoder")),
    ("backbone", ("backbone",)),
)


def _part_of(text: str) -> str | None:
    for part, keys in _PARTS:
        if any(key in text for key in keys):
            return part
    return None


def node_part(node: onnx.NodeProto, initializers: Iterable[str] = ()) -> str | None:
    """``backbone``, ``pixel_decoder``, ``transformer_decoder`` or ``None`` (unknown) for a node."""
    for prop in node.metadata_props:
        if prop.key in _SCOPE_KEYS:
            value = prop.value
            try:
                parsed = json.loads(value)
                value = " ".join(map(str, parsed)) if isinstance(parsed, list) else str(parsed)
            except (ValueError, TypeError):
                pass
            part = _part_of(value)
            if part is not None:
                return part
    inits = set(initializers)
    for name in node.input:
        if name in inits and name.startswith("model."):
            part = _part_of(name)
            if part is not None:
                return part
    return None


@dataclass(frozen=True)
class QuantTarget:
    """One node to quantise: its activation input and constant weight, and the weight's axis."""

    node: str
    op_type: str
    part: str
    activation: str
    weight: str
    axis: int | None  # None: per tensor
    # ``weight`` is a second activation (an activation x activation MatMul such as the mask einsum):
    # it gets an activation Q/DQ pair from its calibrated range instead of a weight quantisation.
    weight_is_activation: bool = False


def _weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if int(attrs.get("group", 1)) == 1 else None
    if node.op_type == "Gemm":
        return 0 if int(attrs.get("transB", 0)) else 1
    return weight.ndim - 1 if weight.ndim >= 2 else None  # MatMul (K, N)


def find_targets(
    model: onnx.ModelProto, parts: Iterable[str] = QUANTIZED_PARTS, decoder: Iterable[str] = ()
) -> list[QuantTarget]:
    """The quantisable nodes of ``parts`` plus the transformer-decoder groups ``decoder`` (see
    :data:`DECODER_GROUPS`), in graph order."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    wanted = set(parts)
    targets: list[QuantTarget] = []
    for node in graph.node:
        if node.op_type not in QUANTIZABLE_OPS or len(node.input) < 2:
            continue
        if node.input[0] in inits or node.input[1] not in inits:
            continue  # needs an activation and a constant weight
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if int(attrs.get("transA", 0)):
                continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if weight.dtype != np.float32:
            continue
        part = node_part(node, inits)
        if part not in wanted:
            continue
        targets.append(
            QuantTarget(
                node.name, node.op_type, part, node.input[0], node.input[1], _weight_axis(node, weight)
            )
        )
    if not targets:
        raise CalibrationError(
            "no quantisable node found in the model (no Conv/Gemm of the backbone or pixel decoder); "
            "is this a PEM export?"
        )
    groups = set(decoder)
    unknown = sorted(groups - set(DECODER_GROUPS))
    if unknown:
        raise CalibrationError(f"decoder group {unknown[0]!r}: choose from {', '.join(DECODER_GROUPS)}")
    if groups:
        targets += decoder_targets(model, groups)
        order = {n.name: i for i, n in enumerate(graph.node)}
        targets.sort(key=lambda t: order[t.node])
    return targets


def node_parts(model: onnx.ModelProto) -> dict[str, str | None]:
    """:func:`node_part` of every node; a node of unknown scope takes the part of its producers
    (``transformer_decoder`` when any producer is in it, else the first known one)."""
    inits = {t.name for t in model.graph.initializer}
    producer = {name: n.name for n in model.graph.node for name in n.output}
    part: dict[str, str | None] = {}
    for node in model.graph.node:
        own = node_part(node, inits)
        if own is None:
            known = [part[producer[i]] for i in node.input if i in producer and part.get(producer[i])]
            own = "transformer_decoder" if "transformer_decoder" in known else (known[0] if known else None)
        part[node.name] = own
    return part


def decoder_targets(model: onnx.ModelProto, groups: Iterable[str]) -> list[QuantTarget]:
    """Transformer-decoder nodes of the ``groups`` (:data:`DECODER_GROUPS`), in graph order.

    ``tokens``: the token-level ``Gemm`` (the PEM-CA token projection's Linear, run on every pixel
    token; query-level Gemms, whose row count is the most common one, are not touched).
    ``mask_einsum``: the rank-3 activation x activation ``MatMul`` (mask embeddings x mask
    features) of the prediction heads. Neither feeds ``ArgMax`` directly; both influence the
    prototype choice indirectly (tokens through the similarity, masks through the next layer's
    attention mask), which is why they are opt-in and measured (BENCHMARKS.md).
    """
    wanted = set(groups)
    if not model.graph.value_info:
        model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    }
    inits = {t.name: t for t in model.graph.initializer}
    parts = node_parts(model)
    decoder = [n for n in model.graph.node if parts[n.name] == "transformer_decoder"]
    gemms = [n for n in decoder if n.op_type == "Gemm" and len(n.input) >= 2 and n.input[1] in inits]
    rows = [shapes.get(n.input[0], [0])[0] for n in gemms]
    query_rows = max(set(rows), key=rows.count) if rows else 0
    gemm_names = {n.name for n in gemms}
    targets: list[QuantTarget] = []
    for node in decoder:
        if "tokens" in wanted and node.name in gemm_names:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            row_count = shapes.get(node.input[0], [0])[0]
            if int(attrs.get("transA", 0)) or row_count in (0, query_rows):
                continue
            weight = numpy_helper.to_array(inits[node.input[1]])
            targets.append(
                QuantTarget(
                    node.name,
                    "Gemm",
                    "transformer_decoder",
                    node.input[0],
                    node.input[1],
                    _weight_axis(node, weight),
                )
            )
        elif "mask_einsum" in wanted and node.op_type == "MatMul":
            a, b = node.input[0], node.input[1]
            if a in inits or b in inits:
                continue
            if len(shapes.get(a, [])) == 3 and len(shapes.get(b, [])) == 3:
                targets.append(
                    QuantTarget(
                        node.name, "MatMul", "transformer_decoder", a, b, None, weight_is_activation=True
                    )
                )
    return targets


def quantize_weight(weight: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 weights: (int8 values, float32 scale per channel of ``axis`` or scalar)."""
    if axis is None:
        amax = np.abs(weight).max(keepdims=False)
        scale = np.float32(max(float(amax), 1e-12) / 127.0)
        q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        return q, np.asarray(scale, np.float32)
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    amax = np.abs(weight).max(axis=reduce)
    scale = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _activation_qdq(
    tensor: str, scale: float, zero: str, new_inits: list[TensorProto]
) -> tuple[list[onnx.NodeProto], str]:
    """QuantizeLinear + DequantizeLinear for an activation; returns the nodes and the DQ output name.

    The scale initializer is appended to ``new_inits``.
    """
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        scale = 1e-8  # an all-zero tensor: any positive scale represents it
    s_name, q_name, dq_name = f"{tensor}_scale", f"{tensor}_quantized", f"{tensor}_dequantized"
    new_inits.append(numpy_helper.from_array(np.asarray(scale, np.float32), s_name))
    nodes = [
        helper.make_node("QuantizeLinear", [tensor, s_name, zero], [q_name], name=f"{tensor}_QuantizeLinear"),
        helper.make_node(
            "DequantizeLinear", [q_name, s_name, zero], [dq_name], name=f"{tensor}_DequantizeLinear"
        ),
    ]
    return nodes, dq_name


def insert_qdq(
    model: onnx.ModelProto,
    targets: Iterable[QuantTarget],
    activation_scales: Mapping[str, float],
    *,
    layout: str = "tensorrt",
    int32_biases: bool = True,
) -> onnx.ModelProto:
    """A copy of ``model`` with the ``targets`` quantised (explicit Q/DQ, see the module doc).

    ``int32_biases`` (``onnxruntime`` layout): every constant bias of a quantised Conv / Gemm as an
    INT32 tensor with its own ``DequantizeLinear`` (scale = activation scale x weight scale, zero
    point 0). ``False`` keeps Conv biases float, the graph before issue 24, for comparisons only: its
    meaning differs between the ONNX spec and onnxruntime's fused kernels (the decoder's token
    Gemm biases stay INT32, which onnxruntime needs to fuse ``QGemm``).

    ``activation_scales`` maps each target's activation tensor to its INT8 scale (amax / 127).
    One Q/DQ pair per activation tensor serves all its quantised consumers; other consumers
    (e.g. a ``DeformConv`` reading the same tensor) keep the float tensor.

    ``layout``: ``tensorrt`` (default) puts Q/DQ on the inputs of quantised nodes only, as
    TensorRT recommends. ``onnxruntime`` also quantises each quantised node's output (when its
    scale is known) for all consumers except float-only ops and graph outputs, which is the
    ``DQ -> Conv -> Q`` pattern onnxruntime's CPU provider fuses into ``QLinearConv``; a
    single-consumer chain of data movement (``DepthToSpace``, ``Slice``, ...) right after such a
    node gets Q/DQ pairs of the same scale, which onnxruntime drops so that it moves 8-bit data.
    Float in that layout:
    ``ConvTranspose`` (onnxruntime's CPU provider has no fused INT8 kernel;
    :func:`calib.ort_layout.prepare_for_layout` rewrites the up-samplers as ``Conv`` first) and
    the RGB stem (a non-grouped ``Conv`` reading fewer than :data:`ORT_MIN_INT8_CHANNELS`
    channels, whose INT8 kernel is slower than the float one).
    """
    check_target(layout)
    targets = list(targets)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    if layout == "onnxruntime":
        targets = [
            t for t in targets if t.node not in by_name or _int8_pays_on_ort(t, by_name[t.node], inits)
        ]
    qdq = _QdqNodes(inits, activation_scales, layout)
    for target in targets:
        node = by_name.get(target.node)
        if node is None:
            raise CalibrationError(f"node {target.node!r} not found in the model")
        # onnxruntime's layout: constant biases as INT32 + DequantizeLinear (scale = activation scale x
        # weight scale, zero point 0), as onnxruntime's own quantizer writes them. Its CPU provider
        # fuses DQ -> Conv/Gemm -> Q into integer kernels that add the bias in INT32 whatever the
        # graph says; with the bias rounded in the graph, the spec (onnx.reference) computes the same.
        # TensorRT's layout keeps float biases: TensorRT's DequantizeLayer takes no INT32 input
        # (export/trt_lint.py) and TensorRT folds the float bias into its INT8 kernels itself.
        int32_bias = layout == "onnxruntime" and (
            (int32_biases and target.op_type in BIASED_OPS)
            or (target.op_type == "Gemm" and target.part == "transformer_decoder")
        )
        qdq.quantise(target, node, int32_bias)
    if layout == "onnxruntime":
        qdq.requantise_outputs(out, targets, by_name)
    qdq.insert_into(out)
    graph.initializer.extend(qdq.initializers)
    drop_unused_initializers(graph)
    return out


class _QdqNodes:
    """The Q/DQ nodes and initializers :func:`insert_qdq` adds, made once per tensor (and per
    weight and axis), grouped by the tensor they follow."""

    def __init__(self, inits: dict[str, TensorProto], activation_scales: Mapping[str, float], layout: str):
        self.inits = inits
        self.activation_scales = activation_scales
        self.initializers: list[TensorProto] = []
        self.produced: dict[str, list[onnx.NodeProto]] = {}  # tensor -> Q/DQ nodes to insert before use
        self.dequantised: dict[str, str] = {}
        self.weights_done: dict[tuple[str, int | None], str] = {}
        if layout == "onnxruntime":
            # UINT8 with zero point 128: the same grid as symmetric INT8, in the activation type
            # onnxruntime's x86 kernels take (its INT8 -> UINT8 rewrite misses shared Q/DQ pairs).
            self.zero = "calib.zero_point_uint8"
            self.initializers.append(numpy_helper.from_array(np.full((), 128, np.uint8), self.zero))
        else:
            self.zero = "calib.zero_point_int8"
            self.initializers.append(numpy_helper.from_array(np.zeros((), np.int8), self.zero))

    def quantise(self, target: QuantTarget, node: onnx.NodeProto, int32_bias: bool) -> None:
        """Point ``node``'s inputs at the dequantised activation and weight (and INT32 bias)."""
        act = target.activation
        node.input[0] = self.activation(act, target.node)
        if target.weight_is_activation:  # a second activation: its own (shared) Q/DQ pair
            node.input[1] = self.activation(target.weight, target.node)
            return
        node.input[1] = self.weight(target)
        if int32_bias and len(node.input) > 2 and node.input[2] in self.inits:
            node.input[2] = _int32_bias(
                node.input[2],
                self.inits,
                self.activation_scales[act],
                node.input[1],
                self.initializers,
                self.produced,
            )

    def activation(self, tensor: str, reader: str) -> str:
        """The dequantised name of activation ``tensor`` (one Q/DQ pair for all its readers)."""
        if tensor not in self.dequantised:
            if tensor not in self.activation_scales:
                raise CalibrationError(f"no calibration range for tensor {tensor!r} (input of {reader})")
            self.produced[tensor], self.dequantised[tensor] = _activation_qdq(
                tensor, self.activation_scales[tensor], self.zero, self.initializers
            )
        return self.dequantised[tensor]

    def weight(self, target: QuantTarget) -> str:
        """The dequantised name of ``target``'s constant weight, quantised per ``target.axis``."""
        key = (target.weight, target.axis)
        if key not in self.weights_done:
            weight = numpy_helper.to_array(self.inits[target.weight])
            q, scale = quantize_weight(weight, target.axis)
            base = target.weight if target.axis is None else f"{target.weight}_axis{target.axis}"
            q_name, s_name, z_name, dq_name = (
                f"{base}_quantized",
                f"{base}_scale",
                f"{base}_zero_point",
                f"{base}_dequantized",
            )
            self.initializers.append(numpy_helper.from_array(q, q_name))
            self.initializers.append(numpy_helper.from_array(scale, s_name))
            self.initializers.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name))
            attrs = {} if target.axis is None else {"axis": target.axis}
            self.produced.setdefault(f"weight:{target.weight}:{target.axis}", []).append(
                helper.make_node(
                    "DequantizeLinear",
                    [q_name, s_name, z_name],
                    [dq_name],
                    name=f"{base}_DequantizeLinear",
                    **attrs,
                )
            )
            self.weights_done[key] = dq_name
        return self.weights_done[key]

    def requantise_outputs(
        self, model: onnx.ModelProto, targets: list[QuantTarget], by_name: dict[str, onnx.NodeProto]
    ) -> None:
        """onnxruntime's layout: each quantised node's output gets a Q/DQ pair too (see
        :func:`insert_qdq`), and so does the data movement right after it."""
        graph_outputs = {o.name for o in model.graph.output}
        # Built once: the rewrites below only redirect readers of tensors already handled, and the
        # chains of different targets are disjoint, so the index stays true for what is still read.
        index = GraphIndex(model)
        for target in targets:
            if target.part == "transformer_decoder":  # decoder outputs stay float (no requantisation)
                continue
            tensor = by_name[target.node].output[0]
            if tensor in self.dequantised or tensor not in self.activation_scales or tensor in graph_outputs:
                continue
            if not any(n.op_type not in FLOAT_ONLY_OPS for n in index.consumer_nodes(tensor)):
                continue
            # Data movement right after the node gets its own Q/DQ pair with the same scale, which
            # onnxruntime drops so that the op moves INT8 data.
            chain = _data_movement_chain(index, tensor, graph_outputs)
            scale = self.activation_scales[tensor]
            for moved in [tensor, *(n.output[0] for n in chain)]:
                readers = [n for n in index.consumer_nodes(moved) if n.op_type not in FLOAT_ONLY_OPS]
                self.produced[moved], dq_name = _activation_qdq(moved, scale, self.zero, self.initializers)
                self.dequantised[moved] = dq_name
                for reader in readers:
                    reader.input[:] = [dq_name if name == moved else name for name in reader.input]

    def insert_into(self, model: onnx.ModelProto) -> None:
        """Insert each Q/DQ group right after the producer of its tensor (or first for inputs and
        weights), keeping the node list topologically sorted."""
        graph = model.graph
        producer_index = GraphIndex(model).producer
        front: list[onnx.NodeProto] = []
        after: dict[int, list[onnx.NodeProto]] = {}
        for tensor, nodes in self.produced.items():
            index = None if tensor.startswith("weight:") else producer_index.get(tensor)
            if index is None:
                front.extend(nodes)
            else:
                after.setdefault(index, []).extend(nodes)
        ordered: list[onnx.NodeProto] = list(front)
        for i, node in enumerate(graph.node):
            ordered.append(node)
            ordered.extend(after.get(i, []))
        del graph.node[:]
        graph.node.extend(ordered)


def _int32_bias(
    bias: str,
    inits: dict[str, TensorProto],
    act_scale: float,
    weight_dq: str,
    new_inits: list[TensorProto],
    produced: dict[str, list[onnx.NodeProto]],
) -> str:
    """An INT32 ``DequantizeLinear`` bias (scale = activation scale x weight scale per channel, zero
    point 0); returns its output name, or ``bias`` unchanged when a value does not fit in INT32
    (a near-zero weight channel: the float bias is then the exact one).

    onnxruntime fuses ``DQ -> Gemm`` into ``QGemm`` only with such a bias, and its fused
    convolutions round the bias to this grid anyway."""
    w_scale = next(
        numpy_helper.to_array(t) for t in new_inits if t.name == weight_dq.replace("_dequantized", "_scale")
    )
    scale = (np.float32(act_scale) * w_scale).astype(np.float32)
    values = numpy_helper.to_array(inits[bias]).astype(np.float64)
    steps = np.rint(values / scale.astype(np.float64))
    if not np.all(np.abs(steps) <= 2**31 - 1):
        return bias
    q = steps.astype(np.int32)
    base = f"{bias}_int32"
    if f"weight:{base}" in produced:  # a bias shared by several nodes: one INT32 copy per reader
        base = f"{base}_{sum(k.startswith(f'weight:{base}') for k in produced)}"
    q_name, s_name, z_name, dq_name = base, f"{base}_scale", f"{base}_zero", f"{base}_dq"
    new_inits += [
        numpy_helper.from_array(q, q_name),
        numpy_helper.from_array(scale, s_name),
        numpy_helper.from_array(np.zeros(scale.shape, np.int32), z_name),
    ]
    attrs = {"axis": 0} if scale.ndim else {}
    produced.setdefault(f"weight:{base}", []).append(
        helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_name], name=f"{base}_DQ", **attrs)
    )
    return dq_name


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads (in place)."""
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _int8_pays_on_ort(
    target: QuantTarget, node: onnx.NodeProto, initializers: Mapping[str, TensorProto]
) -> bool:
    """Whether onnxruntime's CPU provider runs ``target`` faster in INT8 than in float."""
    if target.op_type in ORT_FLOAT_OPS:  # no fused INT8 kernel: Q/DQ would only cost
        return False
    if target.op_type == "Conv":
        group = next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "group"), 1)
        in_per_group = list(initializers[target.weight].dims)[1]
        return group > 1 or in_per_group >= ORT_MIN_INT8_CHANNELS
    return True


def _data_movement_chain(index: GraphIndex, tensor: str, graph_outputs: set[str]) -> list[onnx.NodeProto]:
    """The single-consumer chain of :data:`DATA_MOVEMENT_OPS` nodes that ``tensor`` flows through
    (as their data input) before anything else reads it; empty when there is none."""
    chain: list[onnx.NodeProto] = []
    current = tensor
    while current not in graph_outputs:
        consumers = index.consumer_nodes(current)
        if len(consumers) != 1:
            break
        node = consumers[0]
        if node.op_type not in DATA_MOVEMENT_OPS or node.input[0] != current or current in node.input[1:]:
            break
        chain.append(node)
        current = node.output[0]
    return chain


def dequantized_consumers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes that read the output of a ``DequantizeLinear``."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n for n in model.graph.node if any(name in dq_outputs for name in n.input)]


def check_qdq(model: onnx.ModelProto, layout: str = "tensorrt") -> list[str]:
    """Problems of a Q/DQ graph (empty list: fine): a dequantised tensor feeding a float-only op,
    or, in the ``tensorrt`` layout, feeding anything but a quantisable op."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    problems = []
    for node in dequantized_consumers(model):
        bad = ", ".join(name for name in node.input if name in dq_outputs)
        if node.op_type in FLOAT_ONLY_OPS:
            problems.append(f"{node.op_type} {node.name} reads dequantised {bad}")
        elif layout == "tensorrt" and node.op_type not in QUANTIZABLE_OPS:
            problems.append(f"{node.op_type} {node.name} reads dequantised {bad} (not a quantised op)")
    return problems

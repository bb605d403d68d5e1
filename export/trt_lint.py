"""TensorRT op-support lint: every op of a graph against the TensorRT 10 / 11 ONNX parser tables.

No TensorRT is needed. The tables encode the ONNX-TensorRT operator support matrix of the TensorRT
10.x line (onnx-tensorrt ``docs/operators.md``, 10.15) with the restrictions that can be checked
statically; TensorRT 11 is the same matrix plus the 11.0 parser additions (Swish) and its
strongly-typed-only build (no FP16/INT8 builder flags: the ONNX types are the engine's types, INT8
only through Q/DQ). The TensorRT 11 profile is derived from the release notes, not from an install.

Checked against onnx-tensorrt's published matrix (``docs/operators.md`` at commit 96e7811, the
"10.1 GA" release, the newest copy reachable from this project's machines; the 10.3, 10.16 and 11.4
copies were not): every op the 10.1 matrix marks supported is supported here, every op it marks
unsupported is unsupported here, except the ops added after 10.1 (BlackmanWindow, HammingWindow,
HannWindow, STFT, and the opset-23/24 Attention, RMSNormalization, RotaryEmbedding,
TensorScatter, from the 10.15 matrix). Element types differ for 8 ops, all where later releases
widened them (e.g. INT8/UINT8 constants and shapes, INT32/INT64 Pow, FP4 DequantizeLinear).
None of these ops is in an exported PEM graph.

Findings have a level:

* ``reject``: the parser or builder will fail (unsupported op, unsupported type, violated restriction).
* ``warn``: it builds, but not as one might expect (DOUBLE cast to FLOAT, opset above what the
  oldest release of the line parses, plugin needed).
* ``info``: worth knowing (INT64 index tensors TensorRT computes in INT32 and casts).
* ``policy``: allowed by TensorRT but refused by our contract (NonZero, ScatterND, Loop, If, Scan).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.onnx_graph import GraphIndex
from export.simplify import FORBIDDEN_OPS

TARGETS: tuple[str, ...] = ("10", "11")

_F = "F32 F16 BF16"
_FI = "F32 F16 BF16 I32 I64"
_FIB = "F32 F16 BF16 I32 I64 BOOL"
_ANY = "F32 F16 BF16 I32 I64 BOOL U8 I8"

# op -> supported element types of its data input (see _data_input).
_TRT10_SUPPORTED: dict[str, str] = {
    **dict.fromkeys(
        [
            "Acos",
            "Acosh",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "Ceil",
            "Celu",
            "Cos",
            "Cosh",
            "Elu",
            "Erf",
            "Exp",
            "Floor",
            "HardSigmoid",
            "HardSwish",
            "ImageScaler",
            "IsInf",
            "LeakyRelu",
            "Log",
            "LogSoftmax",
            "LRN",
            "LpNormalization",
            "ParametricSoftplus",
            "PRelu",
            "Reciprocal",
            "Round",
            "ScaledTanh",
            "Selu",
            "Sigmoid",
            "Sin",
            "Sinh",
            "Softmax",
            "Softplus",
            "Softsign",
            "Sqrt",
            "Tan",
            "Tanh",
            "ThresholdedRelu",
            "AveragePool",
            "BatchNormalization",
            "Clip",
            "Conv",
            "ConvTranspose",
            "CumSum",
            "Dropout",
            "Einsum",
            "Gemm",
            "GlobalAveragePool",
            "GlobalLpPool",
            "GlobalMaxPool",
            "GroupNormalization",
            "GRU",
            "Hardmax",
            "InstanceNormalization",
            "LayerNormalization",
            "LpPool",
            "LSTM",
            "MatMul",
            "MaxPool",
            "MeanVarianceNormalization",
            "QuantizeLinear",
            "RandomNormal",
            "RandomNormalLike",
            "RandomUniform",
            "RandomUniformLike",
            "Resize",
            "RMSNormalization",
            "RNN",
            "RotaryEmbedding",
            "Scan",
            "Upsample",
            "Attention",
        ],
        _F,
    ),
    **dict.fromkeys(
        [
            "Abs",
            "Add",
            "ArgMax",
            "ArgMin",
            "DepthToSpace",
            "Div",
            "Equal",
            "Gelu",
            "Greater",
            "GreaterOrEqual",
            "IsNaN",
            "Less",
            "LessOrEqual",
            "Max",
            "Mean",
            "Min",
            "Mod",
            "Mul",
            "Neg",
            "Pad",
            "Pow",
            "Range",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
            "Relu",
            "Scatter",
            "ScatterElements",
            "ScatterND",
            "Shrink",
            "Sign",
            "SpaceToDepth",
            "Sub",
            "Sum",
            "TopK",
        ],
        _FI,
    ),
    **dict.fromkeys(
        [
            "Concat",
            "Expand",
            "EyeLike",
            "Flatten",
            "Gather",
            "GatherElements",
            "GatherND",
            "Identity",
            "If",
            "Loop",
            "OneHot",
            "Reshape",
            "ReverseSequence",
            "Slice",
            "Split",
            "Squeeze",
            "Tile",
            "Transpose",
            "Trilu",
            "Unsqueeze",
            "Where",
        ],
        _FIB,
    ),
    **dict.fromkeys(["And", "Or", "Xor", "Not"], "BOOL"),
    **dict.fromkeys(["Cast", "CastLike"], "F32 F16 BF16 I32 I64 U8 BOOL"),
    **dict.fromkeys(["Constant", "ConstantOfShape", "Shape", "Size"], _ANY),
    **dict.fromkeys(
        ["DeformConv", "GridSample", "Mish", "NonMaxSuppression", "NonZero", "RoiAlign"], "F32 F16"
    ),
    "BlackmanWindow": "F32 F16",
    "HammingWindow": "F32 F16",
    "HannWindow": "F32 F16",
    "STFT": "F32",
    "TensorScatter": "F32 F16 BF16 I32",
    "DequantizeLinear": "I8 I4 F8 F4",
}

_TRT10_UNSUPPORTED = frozenset(
    [
        "AffineGrid",
        "Bernoulli",
        "BitShift",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "Col2Im",
        "CenterCropPad",
        "Compress",
        "ConcatFromSequence",
        "ConvInteger",
        "DFT",
        "Det",
        "DynamicQuantizeLinear",
        "ImageDecoder",
        "MatMulInteger",
        "MaxRoiPool",
        "MaxUnpool",
        "MelWeightMatrix",
        "Multinomial",
        "NegativeLogLikelihoodLoss",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "QLinearConv",
        "QLinearMatMul",
        "RegexFullMatch",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SoftmaxCrossEntropyLoss",
        "SplitToSequence",
        "StringConcat",
        "StringNormalizer",
        "StringSplit",
        "TfIdfVectorizer",
        "Unique",
    ]
)

_TABLES: dict[str, dict[str, str]] = {
    "10": _TRT10_SUPPORTED,
    "11": {**_TRT10_SUPPORTED, "Swish": _F},
}
# Newest default-domain opset the oldest release of each line parses (10.3 = JetPack 6).
_MAX_OPSET = {"10": 20, "11": 24}
# Ops that need a minimum release within a line.
_SINCE = {"10": {"DeformConv": "10.1"}}

_TYPE_NAMES = {
    TensorProto.FLOAT: "F32",
    TensorProto.FLOAT16: "F16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "I32",
    TensorProto.INT64: "I64",
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "U8",
    TensorProto.INT8: "I8",
    TensorProto.DOUBLE: "F64",
    TensorProto.INT16: "I16",
    TensorProto.UINT16: "U16",
    TensorProto.UINT32: "U32",
    TensorProto.UINT64: "U64",
    TensorProto.STRING: "STRING",
}

# Inputs that carry shapes/axes/sizes rather than data (not linted for dtype, not "data" INT64).
_SHAPE_INPUTS = {
    ("Reshape", 1),
    ("Expand", 1),
    ("Tile", 1),
    ("ConstantOfShape", 0),
    ("Resize", 3),
    ("Squeeze", 1),
    ("Unsqueeze", 1),
    ("Split", 1),
    ("Pad", 1),
    ("Pad", 3),
    ("TopK", 1),
    ("OneHot", 1),
    ("Range", 0),
    ("Range", 1),
    ("Range", 2),
    *(("Slice", i) for i in range(1, 5)),
    *((op, 1) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax")),
    *((op, 1) for op in ("ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")),
}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_INDEX_PRODUCERS = {"ArgMax", "ArgMin", "TopK", "NonZero", "NonMaxSuppression"}


@dataclass(frozen=True)
class Finding:
    """One lint result for one TensorRT line (``target`` ``10`` or ``11``)."""

    level: str
    target: str
    op: str
    count: int
    message: str

    def line(self) -> str:
        times = f" x{self.count}" if self.count > 1 else ""
        return f"[{self.level}] TRT {self.target} {self.op}{times}: {self.message}"


@dataclass
class OpRow:
    """One row of the per-op table."""

    op: str
    count: int
    status: dict[str, str] = field(default_factory=dict)  # target -> "ok" / "reject" / "warn" / "policy"


@dataclass
class LintReport:
    """All findings plus the per-op table."""

    opset: int
    rows: list[OpRow]
    findings: list[Finding]
    int64_tensors: int = 0

    def rejected(self, target: str) -> list[Finding]:
        return [f for f in self.findings if f.target == target and f.level == "reject"]

    def policy(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "policy" and f.target == TARGETS[0]]

    def summary(self) -> str:
        parts = []
        for target in TARGETS:
            rej = self.rejected(target)
            warn = [f for f in self.findings if f.target == target and f.level == "warn"]
            status = "OK" if not rej else f"{len(rej)} rejected ({', '.join(f.op for f in rej)})"
            noun = "warning" if len(warn) == 1 else "warnings"
            which = f" ({', '.join(f.op for f in warn)})" if warn else ""
            parts.append(f"TensorRT {target}: {status}, {len(warn)} {noun}{which}")
        if self.policy():
            parts.append(f"policy: {', '.join(f.op for f in self.policy())}")
        return "; ".join(parts)

    def table(self) -> str:
        """Per-op table (op, count, status per TensorRT line), then the findings."""
        lines = [f"{'op':<24}{'count':>6}  " + "  ".join(f"TRT {t:<6}" for t in TARGETS)]
        for row in self.rows:
            lines.append(f"{row.op:<24}{row.count:>6}  " + "  ".join(f"{row.status[t]:<10}" for t in TARGETS))
        lines.extend(f.line() for f in self.findings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            target: {
                "rejected": [f.line() for f in self.rejected(target)],
                "warnings": [f.line() for f in self.findings if f.target == target and f.level == "warn"],
            }
            for target in TARGETS
        } | {
            "policy": [f.line() for f in self.policy()],
            "int64_tensors": self.int64_tensors,
        }


def _data_input(node: onnx.NodeProto) -> int | None:
    if node.op_type == "Where":
        return 1
    if node.op_type in ("Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "Range"):
        return None
    return 0 if node.input and node.input[0] else None


def _restrictions(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> list[str]:
    """Violated static restrictions of one node (TensorRT 10/11 alike)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    problems = []
    op = node.op_type
    if op == "DeformConv":
        pads = list(attrs.get("pads", []))
        half = len(pads) // 2
        if pads and pads[:half] != pads[half:]:
            problems.append(f"pads must be equal at begin and end, got {pads}")
    elif op == "Resize":
        mode = attrs.get("mode", b"nearest")
        coords = attrs.get("coordinate_transformation_mode", b"half_pixel")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        coords = coords.decode() if isinstance(coords, bytes) else coords
        if mode not in _RESIZE_MODES:
            problems.append(f"mode {mode!r} unsupported (nearest, linear only)")
        if coords not in _RESIZE_COORDS:
            problems.append(f"coordinate_transformation_mode {coords!r} unsupported")
        if attrs.get("antialias", 0):
            problems.append("antialias unsupported")
    elif op == "TopK":
        if not attrs.get("sorted", 1):
            problems.append("sorted must be 1")
        k = constants.get(node.input[1]) if len(node.input) > 1 else None
        if k is not None and int(numpy_helper.to_array(k).reshape(-1)[0]) >= 3840:
            problems.append("K must be below 3840")
    elif op.startswith("Reduce") or op in ("Squeeze", "Unsqueeze"):
        if len(node.input) > 1 and node.input[1] and node.input[1] not in constants:
            problems.append("axes must be a build-time constant")
    elif op in ("AveragePool", "MaxPool", "LpPool"):
        dilations = attrs.get("dilations")
        if dilations and any(d != 1 for d in dilations):
            problems.append("dilations must be all ones")
    elif op == "ScatterND":
        reduction = attrs.get("reduction", b"none")
        if (reduction.decode() if isinstance(reduction, bytes) else reduction) != "none":
            problems.append("reduction must be none")
    elif op == "LayerNormalization" and len([o for o in node.output if o]) > 1:
        problems.append("only the first output is supported")
    return problems


def lint_model(model: onnx.ModelProto | str | Path) -> LintReport:
    """Lint ``model`` (a ModelProto or a path) against TensorRT 10 and 11."""
    model = _load_model(model)
    graph = model.graph
    subgraphs = any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    )
    opset = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), 0)
    graph_index = GraphIndex.with_types(model)
    types = graph_index.types
    constants = _constants(graph)
    issues: dict[tuple[str, str, str, str], int] = Counter()  # (level, target, op, message) -> count
    for node in graph.node:
        for target in TARGETS:
            for level, message in _node_issues(node, target, types, constants):
                issues[(level, target, node.op_type, message)] += 1
    int64_data = _tensor_issues(issues, graph, graph_index, constants)
    for target in TARGETS:
        if opset > _MAX_OPSET[target]:
            issues[
                (
                    "warn",
                    target,
                    "opset",
                    f"opset {opset} is newer than TensorRT {target}.x's oldest parser supports "
                    f"({_MAX_OPSET[target]})",
                )
            ] += 1
        if subgraphs:
            issues[("warn", target, "subgraph", "sub-graphs are not linted")] += 1
    findings = [Finding(level, target, op, n, msg) for (level, target, op, msg), n in issues.items()]
    order = {"reject": 0, "policy": 1, "warn": 2, "info": 3}
    findings.sort(key=lambda f: (f.target, order[f.level], f.op))
    counts = Counter(node.op_type for node in graph.node)
    return LintReport(
        opset=opset, rows=_op_rows(counts, findings), findings=findings, int64_tensors=len(int64_data)
    )


def _load_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and ``Constant`` node values, by tensor name."""
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    return constants


def _node_issues(
    node: onnx.NodeProto, target: str, types: dict[str, int], constants: dict[str, onnx.TensorProto]
) -> Iterator[tuple[str, str]]:
    """(level, message) of each problem ``target``'s ONNX parser has with ``node``."""
    op = node.op_type
    table = _TABLES[target]
    if node.domain not in ("", "ai.onnx"):
        yield "reject", f"custom domain {node.domain!r} needs a TensorRT plugin"
        return
    if op in FORBIDDEN_OPS:
        yield "policy", "data-dependent or control-flow op (refused by the export contract)"
    if op not in table:
        yield (
            "reject",
            "not supported by the ONNX parser" if op in _TRT10_UNSUPPORTED else "unknown to the ONNX parser",
        )
        return
    index = _data_input(node)
    if index is not None and index < len(node.input) and (op, index) not in _SHAPE_INPUTS:
        dtype = _TYPE_NAMES.get(types.get(node.input[index], 0), "?")
        if dtype != "?" and dtype not in table[op].split():
            if dtype == "F64":
                yield "warn", "DOUBLE input is cast to FLOAT"
            else:
                yield "reject", f"{dtype} input unsupported (takes {table[op]})"
    if op == "Cast":
        to = _TYPE_NAMES.get(helper.get_attribute_value(node.attribute[0]), "?") if node.attribute else "?"
        if to == "F64":
            yield "warn", "cast to DOUBLE becomes a cast to FLOAT"
        elif to not in table[op].split():
            yield "reject", f"cast to {to} unsupported"
    for problem in _restrictions(node, constants):
        yield "reject", problem
    since = _SINCE.get(target, {}).get(op)
    if since:
        yield "warn", f"needs TensorRT >= {since} (built-in plugin; load libnvinfer_plugin)"


def _tensor_issues(
    issues: Counter[tuple[str, str, str, str]],
    graph: onnx.GraphProto,
    graph_index: GraphIndex,
    constants: dict[str, onnx.TensorProto],
) -> list[str]:
    """Count the tensor-level issues (UINT8 inside, DOUBLE, INT64 data) into ``issues``; returns
    the INT64 data tensors (INT64 tensors that are neither shape work nor constants)."""
    types = graph_index.types
    io_names = {v.name for v in graph.input} | {v.name for v in graph.output}
    uint8_internal = [
        name
        for name, t in types.items()
        if t == TensorProto.UINT8 and name not in io_names and name not in constants
    ]
    doubles = [name for name, t in types.items() if t == TensorProto.DOUBLE]
    producers = {name: graph_index.nodes[i].op_type for name, i in graph_index.producer.items()}
    shape_work = _shape_only(graph_index) | _shape_derived(graph, constants)
    int64_data = [
        name
        for name, t in types.items()
        if t == TensorProto.INT64 and name not in shape_work and name not in constants and name in producers
    ]
    index_like = Counter(producers[n] for n in int64_data if producers[n] in _INDEX_PRODUCERS)
    for target in TARGETS:
        if uint8_internal:
            issues[("reject", target, "UINT8", "UINT8 is only allowed as a network input or output")] += len(
                uint8_internal
            )
        if doubles:
            issues[("warn", target, "DOUBLE", "DOUBLE tensors are cast to FLOAT")] += len(doubles)
        for op, n in index_like.items():
            issues[
                ("info", target, op, "INT64 indices: computed in INT32 and cast to INT64 (values < 2^31)")
            ] += n
        other = len(int64_data) - sum(index_like.values())
        if other:
            issues[
                (
                    "info",
                    target,
                    "INT64",
                    "INT64 data tensors: run as INT64 where the layer supports it, else cast to INT32",
                )
            ] += other
    return int64_data


def _shape_only(graph_index: GraphIndex) -> set[str]:
    """Tensors read only as shapes (shape inputs, ``Shape`` / ``Size``)."""
    shape_only: set[str] = set()
    for name in graph_index.consumers:
        uses = [
            (node.op_type, i)
            for node in graph_index.consumer_nodes(name)
            for i, read in enumerate(node.input)
            if read == name
        ]
        if all(use in _SHAPE_INPUTS or use[0] in ("Shape", "Size") for use in uses):
            shape_only.add(name)
    return shape_only


def _shape_derived(graph: onnx.GraphProto, constants: dict[str, onnx.TensorProto]) -> set[str]:
    """Shape arithmetic (Shape -> Gather -> Concat ... with constants) is shape-tensor work."""
    shape_derived: set[str] = set()
    for node in graph.node:
        inputs = [n for n in node.input if n]
        if node.op_type in ("Shape", "Size") or (
            inputs and all(n in shape_derived or n in constants for n in inputs)
        ):
            shape_derived.update(o for o in node.output if o)
    return shape_derived


def _op_rows(counts: Counter[str], findings: list[Finding]) -> list[OpRow]:
    """One row per op type, most used first, with its worst level per target."""
    rows = []
    for op, n in counts.most_common():
        status = {}
        for target in TARGETS:
            levels = {f.level for f in findings if f.target == target and f.op == op}
            status[target] = next((lv for lv in ("reject", "policy", "warn") if lv in levels), "ok")
        rows.append(OpRow(op, n, status))
    return rows

"""Graph clean-up and validation: onnxslim / onnxsim simplification, checker, shape inference, IR.

``simplify`` runs one simplifier; ``finalize`` makes the model loadable by onnxruntime and TensorRT
(IR version, opset import), runs ``onnx.checker`` and strict shape inference, and refuses the ops
our deployment contract forbids (data-dependent shapes and control flow).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from typing import Literal

import onnx
from onnx import helper

from export.errors import ExportError

Simplifier = Literal["onnxslim", "onnxsim", "none"]
SIMPLIFIERS: tuple[str, ...] = ("onnxslim", "onnxsim", "none")

# Ops the exported graphs must not contain: data-dependent shapes and control flow break or slow
# TensorRT (and are signs that a custom op fell back to a generic decomposition).
FORBIDDEN_OPS = frozenset({"NonZero", "ScatterND", "Loop", "If", "Scan"})

# onnxruntime 1.31 loads IR versions up to 13; onnx 1.23 writes 14 by default, which it refuses.
MAX_IR_VERSION = 13


def simplify(model: onnx.ModelProto, simplifier: str = "onnxslim") -> onnx.ModelProto:
    """Simplify ``model`` (constant folding, dead code, fusions) with the chosen tool.

    Raises:
        ExportError: unknown simplifier, tool not installed, or the tool failed.
    """
    if simplifier not in SIMPLIFIERS:
        raise ExportError(f"--simplifier {simplifier}: choose one of {', '.join(SIMPLIFIERS)}")
    if simplifier == "none":
        return model
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            if simplifier == "onnxslim":
                import onnxslim

                result = onnxslim.slim(model)
            else:
                try:
                    import onnxsim
                except ImportError:
                    raise ExportError(
                        "--simplifier onnxsim: onnxsim is not installed (pip install onnxsim)"
                    ) from None
                result, ok = onnxsim.simplify(model)
                if not ok:
                    raise ExportError("onnxsim could not validate the simplified model")
    except ExportError:
        raise
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise ExportError(f"{simplifier} failed: {lines[-1] if lines else type(exc).__name__}") from None
    if not isinstance(result, onnx.ModelProto):
        raise ExportError(f"{simplifier} returned no model")
    return result


_INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.INT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.UINT64,
    }
)


def rewrite_integer_clip(model: onnx.ModelProto) -> int:
    """Replace ``Clip`` on integer tensors by ``Max``/``Min`` (same result); returns the count.

    TensorRT's Clip takes float tensors only, while Max/Min take INT32/INT64; the decomposed
    deformable conv clamps its integer sample indices.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return 0
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.value_info]
    }
    types.update({t.name: t.data_type for t in model.graph.initializer})
    names = {n.name for n in model.graph.node} | {o for n in model.graph.node for o in n.output}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type != "Clip" or types.get(node.input[0]) not in _INTEGER_TYPES:
            nodes.append(node)
            continue
        count += 1
        low = node.input[1] if len(node.input) > 1 else ""
        high = node.input[2] if len(node.input) > 2 else ""
        steps = [(op, bound) for op, bound in (("Max", low), ("Min", high)) if bound]
        if not steps:
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
            continue
        current = node.input[0]
        for i, (op, bound) in enumerate(steps):
            out = node.output[0]
            if i < len(steps) - 1:
                out = f"{node.output[0]}__{op.lower()}"
                while out in names:
                    out += "_"
                names.add(out)
            nodes.append(
                helper.make_node(op, [current, bound], [out], name=f"{node.name or node.output[0]}_{op}")
            )
            current = out
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type (main graph), most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def forbidden_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of :data:`FORBIDDEN_OPS` in the graph (empty when clean)."""
    return {op: n for op, n in op_counts(model).items() if op in FORBIDDEN_OPS}


def default_opset(model: onnx.ModelProto) -> int:
    """Version of the default ONNX domain the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("model imports no default-domain opset")


def set_ir_version(model: onnx.ModelProto) -> None:
    """Lowest IR version that supports the model's opsets (never above :data:`MAX_IR_VERSION`)."""
    opsets = [helper.make_opsetid(entry.domain or "", entry.version) for entry in model.opset_import]
    ir = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    model.ir_version = min(max(ir, 7), MAX_IR_VERSION)


def finalize(model: onnx.ModelProto, *, allow_forbidden: bool = False) -> onnx.ModelProto:
    """Set the IR version, run the checker and strict shape inference, refuse forbidden ops.

    Returns the shape-inferred model. Raises :class:`ExportError` with the checker's message.
    """
    bad = forbidden_ops(model)
    if bad and not allow_forbidden:
        listing = ", ".join(f"{op} x{n}" for op, n in bad.items())
        raise ExportError(f"exported graph contains forbidden ops ({listing})")
    unused = {entry.domain for entry in model.opset_import} - {node.domain for node in model.graph.node}
    keep = [e for e in model.opset_import if e.domain in ("", "ai.onnx") or e.domain not in unused]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    set_ir_version(model)
    try:
        onnx.checker.check_model(model, full_check=False)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"invalid ONNX graph: {first}") from None
    return inferred

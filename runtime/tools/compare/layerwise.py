"""``verify --layerwise``: where do two ONNX graphs part ways? (Polygraphy's "mark all outputs".)

Both graphs get every float intermediate tensor exposed as an output, run on the same generated
street scene (each through its own sidecar's preprocessing), and the tensors the two graphs share
by name are compared in the reference graph's order. The first tensor whose relative error
(``mean |candidate - reference| / mean |reference|``, the policy's measure) passes the tolerance,
or that holds NaN / Inf, names the node that broke. FP16 and INT8 conversions keep the FP32
tensor names (they add Casts and Q/DQ pairs beside them), so the names line up.

Needs the ``onnx`` package (present wherever export runs; ``pip install onnx`` on a device).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.tools.compare.engine import ComparisonError
from runtime.tools.compare.policy import ParityPolicy
from runtime.tools.compare.scenes import street_scene

FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class LayerDiff:
    """One shared intermediate tensor."""

    index: int
    tensor: str
    node: str
    op_type: str
    relative_error: float
    max_abs: float
    non_finite: int


@dataclass
class LayerReport:
    """Shared tensors in graph order and the first one past ``tolerance``."""

    candidate: str
    reference: str
    tolerance: float
    layers: list[LayerDiff] = field(default_factory=list)
    first_bad: LayerDiff | None = None
    unmatched: int = 0

    def table(self, rows: int = 12) -> str:
        """The first bad tensor with the rows around it, or the worst rows when none is bad."""
        lines = [
            f"layerwise: {self.candidate} vs {self.reference}: {len(self.layers)} shared tensors "
            f"({self.unmatched} of the candidate's have no counterpart); "
            f"tolerance rel. error {self.tolerance:g}"
        ]
        if self.first_bad is not None:
            at = self.layers.index(self.first_bad)
            shown = self.layers[max(0, at - rows // 2) : at + 1]
        else:
            shown = sorted(
                self.layers, key=lambda d: -d.relative_error if math.isfinite(d.relative_error) else -1e300
            )[:rows]
            shown.sort(key=lambda d: d.index)
        width = max([24, *(len(d.node) + 2 for d in shown)])
        lines.append(f"  {'#':>5}  {'node':<{width}}{'op':<20}{'rel. err':>11}{'max abs':>11}")
        for d in shown:
            bad = f"  {d.non_finite} NaN/Inf" if d.non_finite else ""
            mark = "  <- first past the tolerance" if d is self.first_bad else ""
            figures = f"{d.relative_error:>11.3g}{d.max_abs:>11.3g}{bad}{mark}"
            lines.append(f"  {d.index:>5}  {d.node:<{width}}{d.op_type:<20}{figures}")
        if self.first_bad is not None:
            d = self.first_bad
            lines.append(
                f"first divergence: node {d.node} ({d.op_type}), tensor {d.tensor}: "
                + (
                    f"{d.non_finite} NaN / Inf values"
                    if d.non_finite
                    else f"relative error {d.relative_error:.3g} > {self.tolerance:g}"
                )
            )
        else:
            lines.append("no shared tensor passes the tolerance")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "tolerance": self.tolerance,
            "first_bad": None
            if self.first_bad is None
            else {k: clean(v) for k, v in vars(self.first_bad).items()},
            "layers": [{k: clean(v) for k, v in vars(d).items()} for d in self.layers],
        }


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ComparisonError("--layerwise needs the onnx package (pip install onnx)") from None
    return onnx


def _run_all(
    path: Any, image: np.ndarray, threads: int
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str, int]]]:
    """Every float tensor of an ONNX artifact on one image; tensor -> (node name, op type, order)."""
    onnx = _onnx()
    from runtime.core.artifact import load_artifact
    from runtime.core.backends.ort_session import create_session
    from runtime.core.preprocess import Preprocessor

    artifact = load_artifact(path)
    if artifact.backend != "onnxruntime":
        raise ComparisonError(
            f"{artifact.model_path}: --layerwise compares ONNX files, not {artifact.backend} engines"
        )
    model = onnx.load(str(artifact.model_path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; untyped tensors are skipped
        inferred = model
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    producers: dict[str, tuple[str, str, int]] = {}
    existing = {o.name for o in model.graph.output}
    for i, node in enumerate(model.graph.node):
        for out in node.output:
            if out and (types.get(out) in FLOAT_TYPES or out in existing):
                producers[out] = (node.name or f"{node.op_type}_{i}", node.op_type, i)
    for name in producers:
        if name not in existing:
            vi = model.graph.output.add()
            vi.CopyFrom(onnx.helper.make_tensor_value_info(name, types[name], None))
    session = create_session(
        model.SerializeToString(), threads=threads, inter_op_threads=0, error=ComparisonError
    )
    batch, _ = Preprocessor(artifact.input_format)([image])
    if artifact.batch and artifact.batch > 1:
        batch = np.repeat(batch, artifact.batch, axis=0)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {artifact.input_name: batch})
    return dict(zip(names, values)), producers


def compare_layers(
    candidate: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    load_reference_from: str | os.PathLike[str] | None = None,
    policy: ParityPolicy | None = None,
    tolerance: float | None = None,
    seed: int = 0,
    threads: int = 0,
) -> LayerReport:
    """Compare every shared intermediate tensor of ``candidate`` and ``against`` (both ONNX).

    ``tolerance``: relative error; default the policy's largest float-output tolerance.

    Raises:
        ComparisonError: not two ONNX artifacts of one input size, or onnx missing (one line).
    """
    from runtime.core.artifact import load_artifact

    if against is None:
        detail = " (a saved reference holds the outputs only)" if load_reference_from is not None else ""
        raise ComparisonError(f"--layerwise needs --against REFERENCE.onnx{detail}")
    if tolerance is None:
        tolerance = max(policy.max_relative_error.values()) if policy and policy.max_relative_error else 0.02
    fmt = load_artifact(against).input_format
    cand_fmt = load_artifact(candidate).input_format
    if (fmt.height, fmt.width) != (cand_fmt.height, cand_fmt.width):
        raise ComparisonError(
            f"{candidate}: input size differs from the reference's; --layerwise needs one size"
        )
    image = street_scene(fmt.height, fmt.width, seed + 1000)
    ref_values, ref_nodes = _run_all(against, image, threads)
    got_values, got_nodes = _run_all(candidate, image, threads)
    report = LayerReport(str(candidate), str(against), tolerance)
    report.unmatched = len(set(got_nodes) - set(ref_nodes))
    for name, (node, op_type, index) in sorted(ref_nodes.items(), key=lambda kv: kv[1][2]):
        if name not in got_values or name not in ref_values:
            continue
        a = np.asarray(got_values[name], np.float64)
        b = np.asarray(ref_values[name], np.float64)
        if a.shape != b.shape or a.size == 0:
            continue
        bad = int(a.size - np.isfinite(a).sum())
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(a - b)
        finite = np.isfinite(err)
        ref_mean = float(np.abs(b[np.isfinite(b)]).mean()) if np.isfinite(b).any() else 0.0
        mean_err = float(err[finite].mean()) if finite.any() else math.inf
        relative = mean_err / ref_mean if ref_mean > 0 else mean_err
        max_abs = float(err[finite].max()) if finite.any() else math.inf
        diff = LayerDiff(index, name, node, op_type, relative, max_abs, bad)
        report.layers.append(diff)
        if report.first_bad is None and (bad or relative > tolerance):
            report.first_bad = diff
    if not report.layers:
        raise ComparisonError(f"{candidate}: no intermediate tensor shares a name with the reference's graph")
    return report

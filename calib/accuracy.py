"""Accuracy of FP32 / FP16 / INT8 ONNX graphs on held-out labelled images, and the
accuracy-aware mode (keep the most quantisation-sensitive nodes float within an mIoU budget).

Graphs run in onnxruntime on inputs made by the runtime's :class:`runtime.core.preprocess.Preprocessor`;
metrics are those of :mod:`pem.evaluation` (mIoU per class, PQ / SQ / RQ), computed by the very
same post-processing as for the PyTorch model (an adapter makes the ONNX session look like the
model to :func:`pem.evaluation.evaluate`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch

from calib.data import resolve_root
from calib.errors import CalibrationError
from calib.graph import QuantTarget
from calib.quantize import model_session, quantize_model, with_outputs
from pem.config import PEMConfig
from pem.evaluation import EvalResult, evaluate
from runtime.core.preprocess import InputFormat, Preprocessor


class OnnxModel(torch.nn.Module):
    """An exported raw model part (``pred_logits`` / ``pred_masks``) in onnxruntime, shaped like
    :class:`pem.model.PEM` for :func:`pem.evaluation.evaluate`: ``normalize`` is the runtime's
    preprocessing, ``forward`` runs the session."""

    def __init__(self, model: onnx.ModelProto, config: PEMConfig, fmt: InputFormat, threads: int = 1):
        super().__init__()
        self.config = config
        self.fmt = fmt
        self._dummy = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # device for evaluate()
        self.session = model_session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.preprocessor = Preprocessor(fmt, "stretch", "RGB")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> the model input, exactly as the runtime makes it."""
        h, w = images.shape[-2:]
        if (h, w) != (self.fmt.height, self.fmt.width):
            raise CalibrationError(
                f"evaluation images are {h}x{w} but the model input is {self.fmt.height}x{self.fmt.width}; "
                "evaluate at the model's size"
            )
        arrays = images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        batch, _ = self.preprocessor(list(arrays))
        return torch.from_numpy(batch)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, masks = self.session.run(["pred_logits", "pred_masks"], {self.input_name: x.numpy()})
        return {
            "pred_logits": torch.from_numpy(np.asarray(logits, np.float32)),
            "pred_masks": torch.from_numpy(np.asarray(masks, np.float32)),
        }


def open_eval_dataset(data: str | os.PathLike[str], split: str, config: PEMConfig) -> Any:
    """The labelled Cityscapes-layout split used for accuracy (panoptic when the model is)."""
    from pem.data import DatasetError, open_dataset

    root = resolve_root(data)
    if not (root / "gtFine" / split).is_dir():
        raise CalibrationError(
            f"evaluation data {data}: needs a Cityscapes layout with gtFine/{split} (labels); "
            "give --eval-data DIR or --no-report"
        )
    try:
        return open_dataset(root, "cityscapes", split, config.task)  # type: ignore[arg-type]
    except DatasetError as exc:
        raise CalibrationError(str(exc)) from None


def evaluate_onnx(
    model: onnx.ModelProto,
    config: PEMConfig,
    fmt: InputFormat,
    dataset: Any,
    *,
    limit: int | None = None,
    threads: int = 1,
    progress: bool | None = False,
) -> EvalResult:
    """mIoU (and PQ for panoptic models) of an ONNX model part on ``dataset``."""
    adapter = OnnxModel(model, config, fmt, threads)
    return evaluate(adapter, dataset, batch_size=1, limit=limit, progress=progress)


def _miou(result: EvalResult) -> float:
    return 100.0 * result.semantic.miou if result.semantic is not None else float("nan")


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def accuracy_report(results: Mapping[str, EvalResult], reference: str = "fp32") -> dict[str, Any]:
    """JSON-ready comparison: mIoU / PQ per precision (points), deltas vs ``reference``, and
    per-class IoU / PQ deltas."""
    ref = results[reference]
    out: dict[str, Any] = {"reference": reference, "images": ref.images, "precisions": {}}
    for name, result in results.items():
        entry: dict[str, Any] = {"mIoU": _miou(result)}
        entry["mIoU_drop"] = _miou(ref) - _miou(result)
        per_class: dict[str, dict[str, float | None]] = {}
        if result.semantic is not None and ref.semantic is not None:
            for cls, iou in result.semantic.per_class.items():
                base = ref.semantic.per_class.get(cls, float("nan"))
                per_class[cls] = {
                    "IoU": _clean(100 * iou),
                    "IoU_delta": _clean(100 * (iou - base)),
                }
        if result.panoptic is not None and ref.panoptic is not None:
            entry["PQ"] = 100 * result.panoptic.pq
            entry["PQ_drop"] = 100 * (ref.panoptic.pq - result.panoptic.pq)
            for cls, stats in result.panoptic.per_class.items():
                base = ref.panoptic.per_class.get(cls)
                row = per_class.setdefault(cls, {})
                row["PQ"] = None if stats is None else 100 * stats["PQ"]
                row["PQ_delta"] = None if stats is None or base is None else 100 * (stats["PQ"] - base["PQ"])
        entry["per_class"] = per_class
        out["precisions"][name] = entry
    return out


def report_markdown(report: Mapping[str, Any], title: str = "INT8 calibration accuracy") -> str:
    """The report as markdown: a summary table and a per-class delta table."""
    names = list(report["precisions"])
    ref = report["reference"]
    lines = [f"## {title}", "", f"{report['images']} held-out images; deltas vs {ref} in points.", ""]
    lines += ["| precision | mIoU | mIoU drop | PQ | PQ drop |", "|---|---|---|---|---|"]
    for name in names:
        e = report["precisions"][name]
        pq = f"{e['PQ']:.2f}" if "PQ" in e else "-"
        pq_drop = f"{e['PQ_drop']:+.2f}" if "PQ_drop" in e else "-"
        lines.append(f"| {name} | {e['mIoU']:.2f} | {e['mIoU_drop']:+.2f} | {pq} | {pq_drop} |")
    others = [n for n in names if n != ref]
    if others:
        lines += [
            "",
            "| class | "
            + " | ".join(f"{ref} IoU" if n == ref else f"{n} dIoU / dPQ" for n in [ref, *others])
            + " |",
        ]
        lines.append("|---" * (len(others) + 2) + "|")
        classes = report["precisions"][ref]["per_class"]
        for cls, base in classes.items():
            cells = [f"{base['IoU']:.2f}" if base.get("IoU") is not None else "-"]
            for n in others:
                row = report["precisions"][n]["per_class"].get(cls, {})
                d_iou = row.get("IoU_delta")
                d_pq = row.get("PQ_delta")
                cells.append(
                    ("-" if d_iou is None else f"{d_iou:+.2f}")
                    + " / "
                    + ("-" if d_pq is None else f"{d_pq:+.2f}")
                )
            if all(cell in ("-", "- / -") for cell in cells):
                continue  # a class neither in the ground truth nor predicted
            lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    parity = report.get("parity") or {}
    if parity:
        lines += ["", f"Parity vs {ref} on generated street scenes (the `check` / `verify` policy):", ""]
        lines += ["| precision | verdict | tightest criterion (margin) |", "|---|---|---|"]
        for name, entry in parity.items():
            tight = min(
                entry["criteria"], key=lambda c: c["margin"] / max(abs(c["limit"]), 1e-12), default=None
            )
            cell = "-" if tight is None else f"{tight['what']} {tight['value']:.4g} ({tight['margin']:+.3g})"
            verdict = "PASS" if entry["passed"] else "FAIL: " + "; ".join(entry["failures"])
            lines.append(f"| {name} | {verdict} | {cell} |")
    return "\n".join(lines) + "\n"


def layer_sensitivity(
    model: onnx.ModelProto,
    scales: Mapping[str, float],
    targets: list[QuantTarget],
    inputs: list[np.ndarray],
    threads: int = 1,
    layout: str = "tensorrt",
) -> dict[str, float]:
    """Per quantised node: the output error when only that node is INT8 (everything else float),
    as the mean over outputs of ``MSE / variance`` of the FP32 outputs on ``inputs``."""
    reference = model_session(model, threads)
    name = reference.get_inputs()[0].name
    expected = [reference.run(None, {name: x}) for x in inputs]
    errors: dict[str, float] = {}
    for target in targets:
        only = quantize_model(model, scales, targets=[target], layout=layout)
        session = model_session(only, threads)
        total = 0.0
        for x, ref_outs in zip(inputs, expected):
            outs = session.run(None, {name: x})
            for got, want in zip(outs, ref_outs):
                want = np.asarray(want, np.float64)
                total += float(np.mean((np.asarray(got, np.float64) - want) ** 2) / (np.var(want) + 1e-12))
        errors[target.node] = total / max(1, len(inputs) * len(expected[0]))
    return dict(sorted(errors.items(), key=lambda kv: -kv[1]))


def tune_exclusions(
    model: onnx.ModelProto,
    scales: Mapping[str, float],
    targets: list[QuantTarget],
    config: PEMConfig,
    fmt: InputFormat,
    *,
    eval_data: str | os.PathLike[str],
    eval_split: str,
    max_drop: float,
    limit: int | None = None,
    threads: int = 1,
    layout: str = "tensorrt",
    sensitivity_images: int = 4,
) -> tuple[list[str], dict[str, float], list[dict[str, Any]]]:
    """Accuracy-aware mode: rank nodes by :func:`layer_sensitivity` (on a few evaluation images)
    and keep the most sensitive ones float, one more at a time, until the mIoU drop vs FP32 on
    ``eval_split`` is at most ``max_drop`` points. Returns (excluded node names, sensitivity,
    the steps taken)."""
    dataset = open_eval_dataset(eval_data, eval_split, config)
    fp32 = _miou(evaluate_onnx(model, config, fmt, dataset, limit=limit, threads=threads))
    preprocessor = Preprocessor(fmt, "stretch", "RGB")
    count = min(sensitivity_images, len(dataset))
    inputs = [preprocessor([dataset[i].image])[0] for i in range(count)]
    sensitivity = layer_sensitivity(model, scales, targets, inputs, threads, layout)
    ranked = list(sensitivity)
    steps: list[dict[str, Any]] = []
    excluded: list[str] = []
    for k in range(len(ranked) + 1):
        excluded = ranked[:k]
        quantized = quantize_model(model, scales, exclude=excluded, targets=targets, layout=layout)
        miou = _miou(evaluate_onnx(quantized, config, fmt, dataset, limit=limit, threads=threads))
        steps.append({"float_nodes": k, "mIoU": miou, "drop": fp32 - miou})
        if fp32 - miou <= max_drop:
            return excluded, sensitivity, steps
    raise CalibrationError(f"--max-drop {max_drop}: not reached even with every node float")


def prototype_outputs(model: onnx.ModelProto) -> list[str]:
    """The PEM-CA prototype choices of a graph: the outputs of its transformer-decoder ``ArgMax``
    nodes (one per PEM-CA layer; (B, heads, Q)-shaped token indices), in graph order."""
    from calib.graph import node_parts

    parts = node_parts(model)
    return [
        n.output[0]
        for n in model.graph.node
        if n.op_type == "ArgMax" and parts.get(n.name) == "transformer_decoder"
    ]


def with_prototype_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A measurement copy of ``model`` that also outputs the INT64 ArgMax tensors ``names``."""
    return with_outputs(model, names, onnx.TensorProto.INT64)


def prototype_stability(
    fp32: onnx.ModelProto,
    other: onnx.ModelProto,
    inputs: list[np.ndarray],
    threads: int = 1,
    tie: float = 1e-3,
) -> dict[str, Any]:
    """How often ``other`` (e.g. the INT8 graph) picks the same prototype token as ``fp32``.

    Compares the PEM-CA ``ArgMax`` outputs per (image, layer, head, query); both graphs must keep
    those tensor names (the Q/DQ insertion does). Returns ``agreement`` (the fraction of equal
    choices), ``per_layer`` fractions, ``choices`` (how many were compared) and
    ``agreement_within_tie``: the fraction where ``other``'s token is FP32's or scores, in FP32's
    own similarity (the ArgMax input), within ``tie`` of FP32's best (a near-tie: both tokens are
    as good a prototype). ``median_flip_margin``: the median FP32 similarity gap of the flips.
    """
    names = prototype_outputs(fp32)
    if not names:
        raise CalibrationError("the FP32 graph has no PEM-CA ArgMax (prototype choice) to compare")
    argmax = {n.output[0]: n for n in fp32.graph.node if n.output[0] in names}
    scores = [argmax[name].input[0] for name in names]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in argmax[name].attribute} for name in names]
    reference = with_prototype_outputs(fp32, names)

    sessions = [
        model_session(with_outputs(reference, scores), threads),
        model_session(with_prototype_outputs(other, names), threads),
    ]
    input_name = sessions[0].get_inputs()[0].name
    same = np.zeros(len(names))
    near = np.zeros(len(names))
    total = np.zeros(len(names))
    margins: list[np.ndarray] = []
    best: list[float] = []
    for x in inputs:
        ref = sessions[0].run(names + scores, {input_name: x})
        got = sessions[1].run(names, {input_name: x})
        for i, (u, v) in enumerate(zip(ref[: len(names)], got)):
            equal = u == v
            axis = int(attrs[i].get("axis", 0))
            keep = int(attrs[i].get("keepdims", 1))
            sim = np.asarray(ref[len(names) + i], np.float64)
            pick_u, pick_v = (p if keep else np.expand_dims(p, axis) for p in (u, v))
            gap = np.take_along_axis(sim, pick_u, axis) - np.take_along_axis(sim, pick_v, axis)
            gap = np.nan_to_num(gap.reshape(u.shape), nan=0.0)  # -inf - -inf: fully masked rows
            same[i] += float(equal.sum())
            near[i] += float((equal | (gap <= tie)).sum())
            total[i] += u.size
            margins.append(gap[~equal])
            top = np.take_along_axis(sim, pick_u, axis)
            if np.isfinite(top).any():
                best.append(float(np.median(top[np.isfinite(top)])))
    flips = np.concatenate(margins) if margins else np.zeros(0)
    return {
        "agreement": float(same.sum() / total.sum()),
        "agreement_within_tie": float(near.sum() / total.sum()),
        "tie": tie,
        "median_flip_margin": float(np.median(flips)) if flips.size else 0.0,
        "median_best_score": float(np.median(best)) if best else 0.0,
        "per_layer": [round(float(s / t), 5) for s, t in zip(same, total)],
        "choices": int(total.sum()),
    }

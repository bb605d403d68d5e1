"""INT8 biases: the ONNX spec (``onnx.reference``) vs onnxruntime, float biases vs INT32 + DQ (issue 24).

onnxruntime's CPU provider fuses ``DQ -> Conv -> Q`` into integer kernels that add each bias in
INT32, rounding a float bias to the grid ``input scale x weight scale`` whatever the graph says; the
ONNX reference computes the graph as written (float bias). This script exports the trained default
model to INT8 (``onnxruntime`` layout, synthetic calibration) twice, once with Conv biases float
(the graph before issue 24: ``insert_qdq(int32_biases=False)``) and once with INT32 biases and their
own ``DequantizeLinear`` (now the default), and for each reports

- spec vs onnxruntime: max |difference| of the raw outputs relative to their range, and the
  semantic labels' disagreement;
- accuracy effect: label agreement of each INT8 graph (onnxruntime) with the FP32 graph;
- speed effect: onnxruntime latency (one thread, median of ``--runs``), the two graphs interleaved.

``onnx.reference`` is wrapped where it cannot run this model in reasonable time: ``DeformConv``
(its Python loop) is computed with our PyTorch kernel, and ``GatherElements`` (``np.choose``,
limited to 32/64 choices along the axis) with ``np.take_along_axis``; both are exact.

Usage: ``python benchmarks/int8_bias_spec.py [--height 128 --width 256] [--out result.json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages


class DeformConv(OpRun):
    """ONNX ``DeformConv`` (opset 19) through :func:`pem.ops.deform_conv.deform_conv2d_native`."""

    op_domain = ""

    def _run(  # type: ignore[override]
        self,
        x,
        w,
        offset,
        b=None,
        mask=None,
        dilations=None,
        group=None,
        kernel_shape=None,
        offset_group=None,
        pads=None,
        strides=None,
    ):
        import torch

        from pem.ops.deform_conv import deform_conv2d_native

        if (group or 1) != 1 or (offset_group or 1) != 1:
            raise NotImplementedError("DeformConv wrapper: group / offset_group 1 only")
        pads = pads or [0, 0, 0, 0]
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise NotImplementedError("DeformConv wrapper: symmetric pads only")
        tensors = [torch.from_numpy(np.array(a)) for a in (x, offset, w)]  # writable copies
        m = (
            torch.from_numpy(mask)
            if mask is not None
            else torch.ones(offset.shape[0], offset.shape[1] // 2, *offset.shape[2:])
        )
        bias = torch.from_numpy(b) if b is not None else None
        with torch.no_grad():
            out = deform_conv2d_native(
                tensors[0],
                tensors[1],
                m,
                tensors[2],
                bias,
                stride=tuple(strides or (1, 1)),
                padding=(pads[0], pads[1]),
                dilation=tuple(dilations or (1, 1)),
            )
        return (out.numpy().astype(x.dtype),)


class GatherElements(OpRun):
    """ONNX ``GatherElements`` with ``np.take_along_axis`` (no limit on the axis length)."""

    op_domain = ""

    def _run(self, data, indices, axis=None):  # type: ignore[override]
        axis = int(axis or 0)
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        return (np.take_along_axis(data, indices, axis=axis),)


def _default_checkpoint() -> Path:
    from pem.zoo import ensure_default_checkpoint

    return ensure_default_checkpoint("default", progress=True)


def _export(args: list[str]) -> None:
    from cli import app

    try:
        app(args, standalone_mode=False)
    except SystemExit as exc:  # typer's exit on success is 0
        if exc.code:
            raise


def _inputs(model_json: Path, h: int, w: int, count: int) -> list[np.ndarray]:
    from runtime.tools.bench import bench_image

    norm = json.loads(model_json.read_text())["input"]["normalization"]
    mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
    images = []
    for seed in range(count):
        rgb = bench_image(h, w, seed=seed)[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32)
        images.append((rgb - mean) / std)
    return images


def _labels(logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Semantic labels at mask resolution: argmax_k sum_q softmax(class)[q, k] * sigmoid(mask)[q]."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (e / e.sum(-1, keepdims=True))[..., :-1]
    sig = 1.0 / (1.0 + np.exp(-masks))
    return np.einsum("bqk,bqhw->bkhw", probs, sig).argmax(1)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Export, compare and time in a scratch folder that is removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="int8-bias-"))
    try:
        return _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    import onnxruntime as ort

    h, w = args.height, args.width
    _export_graphs(args, tmp)
    images = _inputs(tmp / "fp32" / "model.json", h, w, args.images)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {
        name: ort.InferenceSession(
            str(tmp / name / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for name in ("fp32", "float", "int32")
    }
    fp32 = [sessions["fp32"].run(None, {"images": x}) for x in images]
    result: dict[str, object] = {"input": [h, w], "images": args.images, "calib_images": args.calib_images}
    for name in ("float", "int32"):
        result[name] = _compare_graph(tmp / name / "model.onnx", sessions[name], images, fp32)
    times: dict[str, list[float]] = {"float": [], "int32": []}
    x = images[0]
    for name in times:  # warm-up
        sessions[name].run(None, {"images": x})
    for _ in range(args.runs):
        for name in times:
            start = time.perf_counter()
            sessions[name].run(None, {"images": x})
            times[name].append((time.perf_counter() - start) * 1e3)
    result["ort_ms"] = {name: round(statistics.median(v), 2) for name, v in times.items()}
    result["ort_ms_ratio_int32_over_float"] = round(result["ort_ms"]["int32"] / result["ort_ms"]["float"], 3)
    result["onnxruntime"] = ort.__version__
    result["onnx"] = onnx.__version__
    return result


def _export_graphs(args: argparse.Namespace, tmp: Path) -> None:
    """FP32, INT8 with INT32 biases + DQ, and INT8 with float biases (the graph before), in ``tmp``."""
    import calib.quantize
    from calib.graph import insert_qdq

    checkpoint = args.checkpoint or _default_checkpoint()
    h, w = args.height, args.width
    common = [
        "export",
        "--checkpoint",
        str(checkpoint),
        "--head",
        "raw",
        "--height",
        str(h),
        "--width",
        str(w),
    ]
    int8 = ["--precision", "int8", "--calib-data", "synthetic", "--calib-images", str(args.calib_images)]
    int8 += ["--target", "onnxruntime"]
    print("export fp32", flush=True)
    _export([*common, "--out", str(tmp / "fp32")])
    print("export int8, INT32 biases + DQ", flush=True)
    _export([*common, *int8, "--out", str(tmp / "int32")])
    print("export int8, float biases (before)", flush=True)
    calib.quantize.insert_qdq = functools.partial(insert_qdq, int32_biases=False)  # type: ignore[assignment]
    try:
        _export([*common, *int8, "--out", str(tmp / "float")])
    finally:
        calib.quantize.insert_qdq = insert_qdq  # type: ignore[assignment]


def _compare_graph(
    path: Path, session: object, images: list[np.ndarray], fp32: list[list]
) -> dict[str, object]:
    """One INT8 graph: onnx.reference (the spec) against onnxruntime, and onnxruntime against FP32."""
    name = path.parent.name
    model = onnx.load(str(path))
    reference = ReferenceEvaluator(model, new_ops=[DeformConv, GatherElements])
    int32_inits = sum(t.data_type == onnx.TensorProto.INT32 for t in model.graph.initializer)
    rows: dict[str, object] = {"int32_initializers": int32_inits, "spec_vs_ort": [], "vs_fp32": []}
    for x, ref in zip(images, fp32):
        print(f"{name}: onnx.reference ...", flush=True)
        start = time.perf_counter()
        spec = reference.run(None, {"images": x})
        spec_s = time.perf_counter() - start
        got = session.run(None, {"images": x})  # type: ignore[attr-defined]
        spec_labels, ort_labels, ref_labels = _labels(*spec), _labels(*got), _labels(*ref)
        rows["spec_vs_ort"].append(  # type: ignore[attr-defined]
            {
                "logits_rel": _rel(got[0], spec[0]),
                "masks_rel": _rel(got[1], spec[1]),
                "label_disagreement": float((spec_labels != ort_labels).mean()),
                "reference_seconds": round(spec_s, 1),
            }
        )
        rows["vs_fp32"].append(  # type: ignore[attr-defined]
            {
                "logits_rel": _rel(got[0], ref[0]),
                "masks_rel": _rel(got[1], ref[1]),
                "label_agreement": float((ort_labels == ref_labels).mean()),
            }
        )
    return rows


def main() -> None:
    from common import report_json

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the cached default model")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--images", type=int, default=2, help="images compared (spec vs onnxruntime)")
    parser.add_argument("--runs", type=int, default=9, help="timed onnxruntime runs per graph")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args()
    result = measure(args)
    report_json(result, args.out)


if __name__ == "__main__":
    main()

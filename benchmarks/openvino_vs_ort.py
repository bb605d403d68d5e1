"""OpenVINO vs onnxruntime, FP32 on the CPU, the same ``--deform-impl decomposed`` ONNX.

Exports a preset (seeded random weights; default STDC1) or the trained default model as the raw
model part with the decomposed deformable conv (OpenVINO has no ONNX DeformConv rule), opens it
with the runtime's :class:`~runtime.core.backends.openvino_backend.OpenVINOBackend` (FP32 inference
precision) and :class:`~runtime.core.backends.onnxruntime_backend.OnnxRuntimeBackend` at each thread
count, and times ``Backend.infer`` on one seeded input: interleaved rounds, median of ``--runs``.
Also reports the largest output difference between the two backends. ``onnxruntime-native`` is
onnxruntime on the usual export (ONNX ``DeformConv``), the fastest graph onnxruntime has: the
fair baseline for "which runtime should a CPU user take".

Usage: ``python benchmarks/openvino_vs_ort.py [--preset cityscapes-semantic-stdc1] [--size 512x1024]
[--threads 1 2] [--runs 10] [--out results.json]``; ``--preset trained`` uses the trained default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cityscapes-semantic-stdc1")
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    import onnx
    import onnxruntime
    import openvino
    import torch
    from common import cpu_description, report_json

    from export.pipeline import ExportOptions, export_graph
    from export.source import load_source

    torch.set_num_threads(1)
    if args.preset == "trained":
        from pem.zoo import ensure_default_checkpoint

        source = load_source(checkpoint=ensure_default_checkpoint(), height=h, width=w)
    else:
        source = load_source(preset=args.preset, height=h, width=w)
    model, _, _ = export_graph(source, ExportOptions(head="raw", deform_impl="decomposed"))
    native, _, _ = export_graph(source, ExportOptions(head="raw", deform_impl="native"))
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    results: dict[str, object] = {
        "machine": cpu_description(),
        "model": args.preset,
        "size": args.size,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "runs": args.runs,
        "threads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path, native_path = Path(tmp) / "model.onnx", Path(tmp) / "native.onnx"
        onnx.save(model, path)
        onnx.save(native, native_path)
        for threads in args.threads:
            entry = _compare_at(path, native_path, threads, x, args.runs)
            results["threads"][str(threads)] = entry  # type: ignore[index]
            print(f"{threads} thread(s): {json.dumps(entry)}", flush=True)
    report_json(results, args.out)


def _compare_at(path: Path, native_path: Path, threads: int, x: np.ndarray, runs: int) -> dict[str, object]:
    """onnxruntime and OpenVINO on the decomposed graph (and onnxruntime on the native one) with
    ``threads`` threads: their outputs' differences and interleaved median times."""
    from runtime.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.core.backends.openvino_backend import OpenVINOBackend

    backends = {
        "onnxruntime": OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], threads=threads),
        "openvino": OpenVINOBackend(path, threads=threads),
        "onnxruntime-native": OnnxRuntimeBackend(
            native_path, providers=["CPUExecutionProvider"], threads=threads
        ),
    }
    outputs = {name: b.infer({"images": x}) for name, b in backends.items()}
    diff = {
        k: float(np.abs(outputs["onnxruntime"][k] - outputs["openvino"][k]).max())
        for k in outputs["onnxruntime"]
    }
    label_agreement = float(
        np.mean(outputs["onnxruntime"]["pred_masks"].argmax(1) == outputs["openvino"]["pred_masks"].argmax(1))
    )
    for b in backends.values():
        b.infer({"images": x})
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(runs):  # interleaved, so that load changes hit both alike
        for name, b in backends.items():
            t0 = time.perf_counter()
            b.infer({"images": x})
            times[name].append(time.perf_counter() - t0)
    med = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    entry = {
        "median_ms": {k: round(v, 1) for k, v in med.items()},
        "openvino_over_onnxruntime": round(med["openvino"] / med["onnxruntime"], 3),
        "openvino_over_onnxruntime_native": round(med["openvino"] / med["onnxruntime-native"], 3),
        "max_abs_diff": diff,
        "mask_argmax_agreement": label_agreement,
        "openvino_precision": backends["openvino"].inference_precision,
    }
    return entry


if __name__ == "__main__":
    main()

"""INT8 Q/DQ vs FP32 latency of the model part in onnxruntime on this CPU (goal: INT8 <= 0.6x FP32).

Exports the trained default model (pem.zoo) as the raw model part at each size, calibrates it on
the synthetic train split (percentile, the default method), writes the Q/DQ graph in both
layouts (``tensorrt``: Q/DQ on quantised nodes' inputs only; ``onnxruntime``: up-samplers
rewritten as sub-pixel convs, Q/DQ on outputs too, fused by onnxruntime into QLinearConv), and
times every graph in one run: one intra-op thread, interleaved rounds, median of ``--runs``.
``fp32-subpixel`` is the FP32 graph with the same up-sampler rewrite, timed to show that the
rewrite alone does not make FP32 faster (the baseline stays the exported FP32 graph).

It also reports the float floor: the share of FP32 time spent in nodes that stay float by design
(DeformConv and the transformer decoder: PEM-CA, prototype ArgMax, L2-normalise, LayerNorm,
softmax), from onnxruntime's per-node profile. INT8/FP32 cannot go below it even if every
quantised op took no time. ``--profile`` adds the per-op-type breakdown. ``--preset NAME`` times
a paper-size architecture instead (seeded random weights; latency only).

``--decoder GROUP...`` (``tokens``, ``mask_einsum``; see :func:`calib.graph.decoder_targets`) adds
``int8-onnxruntime+GROUP`` graphs that also quantise those transformer-decoder ops, and the
variant with all of them. For every INT8 graph ``--stability N`` reports the prototype stability
(the fraction of PEM-CA ArgMax choices per (image, layer, head, query) equal to FP32's on N
held-out images) and, for the trained model, ``--accuracy N`` the mIoU on N held-out images.
Usage: ``python benchmarks/calib_latency.py [--sizes 256x512 512x1024] [--runs 30] [--preset P]
[--decoder tokens mask_einsum] [--stability 8] [--accuracy 50] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ort_session, report_json


def _profile(model_bytes: bytes, x: np.ndarray, runs: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(model_bytes, os.path.join(tmp, "prof"))
        for _ in range(runs):
            session.run(None, {"images": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / runs / 1e3
    return {op: round(ms, 3) for op, ms in per_op.most_common(10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["256x512", "512x1024"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--method", default="percentile")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--preset",
        default=None,
        help="time this preset (seeded random weights) instead of the trained tiny model",
    )
    parser.add_argument("--decoder", nargs="*", default=[], help="decoder groups: tokens mask_einsum")
    parser.add_argument("--stability", type=int, default=0, help="prototype stability on N images")
    parser.add_argument("--accuracy", type=int, default=0, help="mIoU on N held-out images (trained)")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from calib.graph import find_targets
    from export.source import load_source
    from pem.zoo import ensure_default_checkpoint

    checkpoint = None if args.preset else ensure_default_checkpoint(progress=True)
    results: dict[str, object] = {
        "machine": {
            "cpu": _cpu_name(),
            "cores_visible": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "threads": 1,
        },
        "model": args.preset or "trained default (cityscapes-panoptic-tiny)",
        "method": args.method,
        "runs": args.runs,
        "sizes": {},
    }
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        if checkpoint is None:
            source = load_source(preset=args.preset, height=h, width=w)
        else:
            source = load_source(checkpoint=checkpoint, height=h, width=w)
        fp32, fmt, ranges, calib_s, models = _quantized_graphs(source, args)
        groups = tuple(args.decoder)
        graphs = {name: m.SerializeToString() for name, m in models.items()}
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        times = _interleaved_times(graphs, x, args.runs)
        medians = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
        entry: dict[str, object] = {
            "median_ms": {k: round(v, 2) for k, v in medians.items()},
            "ratio_vs_fp32": {k: round(v / medians["fp32"], 3) for k, v in medians.items()},
            # the fastest run: less sensitive than the median to other jobs on a shared machine
            "min_ms": {k: round(1e3 * min(ts), 2) for k, ts in times.items()},
            "calibration_s": round(calib_s, 1),
            "calibration_images": ranges.images,
            "size_mb": {k: round(len(v) / 1e6, 2) for k, v in graphs.items()},
        }
        movable = {t.node for t in find_targets(fp32, decoder=groups) if t.part == "transformer_decoder"}
        entry["float_floor"] = _float_floor(fp32, x, movable)
        _accuracy(entry, args, models, fmt, source.config if checkpoint is not None else None)
        if args.profile:
            entry["profile_ms"] = {name: _profile(data, x) for name, data in graphs.items()}
        results["sizes"][size] = entry  # type: ignore[index]
        print(
            f"{size}: "
            + ", ".join(f"{k} {v:.2f} ms ({v / medians['fp32']:.2f}x)" for k, v in medians.items())
        )
        print(f"  calibration {calib_s:.1f} s on {ranges.images} images")
        floor = entry["float_floor"]
        print(f"  float by design: {floor['share']:.2f} of FP32 time (INT8/FP32 floor)")
    report_json(results, args.out)


def _quantized_graphs(source, args) -> tuple:
    """The FP32 graph, its input format, the calibration ranges and seconds, and the graphs timed:
    FP32, its sub-pixel rewrite, INT8 in both layouts and INT8 with each decoder group."""
    import onnx

    from calib.calibrate import CalibrationConfig, calibrate_ranges, input_format
    from calib.graph import find_targets
    from calib.ort_layout import prepare_for_layout
    from calib.quantize import quantize_model
    from export.pipeline import ExportOptions, export_graph

    fp32, _, _ = export_graph(source, ExportOptions(head="raw"))
    fp32 = onnx.shape_inference.infer_shapes(fp32)
    fmt = input_format(fp32)
    config = CalibrationConfig(method=args.method, num_images=args.calib_images, reuse=False)
    start = time.perf_counter()
    ranges = calibrate_ranges(fp32, config, fmt)
    calib_s = time.perf_counter() - start
    subpixel = prepare_for_layout(fp32, "onnxruntime")
    groups = tuple(args.decoder)
    ort_ranges = calibrate_ranges(subpixel, config, fmt, find_targets(subpixel, decoder=groups))
    models = {
        "fp32": fp32,
        "fp32-subpixel": subpixel,
        "int8-tensorrt": quantize_model(fp32, ranges.scales(), layout="tensorrt"),
        "int8-onnxruntime": quantize_model(subpixel, ort_ranges.scales(), layout="onnxruntime"),
    }
    variants = [(g,) for g in groups] + ([groups] if len(groups) > 1 else [])
    for variant in variants:
        targets = find_targets(subpixel, decoder=variant)
        models["int8-onnxruntime+" + "+".join(variant)] = quantize_model(
            subpixel, ort_ranges.scales(), targets=targets, layout="onnxruntime"
        )
    return fp32, fmt, ranges, calib_s, models


def _interleaved_times(graphs: dict[str, bytes], x: np.ndarray, runs: int) -> dict[str, list[float]]:
    """Seconds of each run of each graph after 3 warm-up runs; interleaved, so that load changes
    hit every graph alike."""
    sessions = {name: ort_session(data) for name, data in graphs.items()}
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for session in sessions.values():
        for _ in range(3):
            session.run(None, {"images": x})
    for _ in range(runs):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            session.run(None, {"images": x})
            times[name].append(time.perf_counter() - t0)
    return times


def _accuracy(entry: dict[str, object], args, models: dict, fmt, trained_config) -> None:
    """``--stability``: prototype stability of the INT8 graphs; ``--accuracy`` (trained model,
    ``trained_config``): their mIoU."""
    int8_names = [n for n in models if n.startswith("int8")]
    fp32 = models["fp32"]
    if args.stability:
        from calib.accuracy import prototype_stability
        from calib.data import CalibrationImages

        held_out = list(CalibrationImages("synthetic", fmt, args.stability, 1, "val"))
        # fp32-subpixel: an exact rewrite (float rounding only), the control for near-ties
        entry["prototype_stability"] = {
            n: prototype_stability(fp32, models[n], held_out) for n in ["fp32-subpixel", *int8_names]
        }
        print("  prototype stability: " + json.dumps(entry["prototype_stability"]))
    if args.accuracy and trained_config is not None:
        from calib.accuracy import evaluate_onnx, open_eval_dataset

        dataset = open_eval_dataset("synthetic", "val", trained_config)
        miou = {}
        for n in ["fp32", *int8_names]:
            result = evaluate_onnx(models[n], trained_config, fmt, dataset, limit=args.accuracy)
            miou[n] = round(100.0 * result.semantic.miou, 2)
        entry["miou"] = miou
        print("  mIoU: " + json.dumps(miou))


def _float_floor(model, x: np.ndarray, movable: set[str] = frozenset(), runs: int = 10) -> dict[str, object]:
    """Share of the FP32 graph's kernel time spent in nodes that stay float in every INT8 layout.

    Nodes are attributed to model parts by :func:`calib.graph.node_part` (unknown parts inherit
    their producer's); a node onnxruntime renamed while fusing counts as quantisable, so the
    share is a lower bound. ``movable``: decoder nodes the ``--decoder`` groups quantise; their
    FP32 time is reported apart (``movable_ms``), and ``share_without_movable`` is the floor if
    they ran in no time.
    """
    from calib.graph import FLOAT_ONLY_OPS, node_part

    inits = {t.name for t in model.graph.initializer}
    producer = {name: n.name for n in model.graph.node for name in n.output}
    part: dict[str, str | None] = {}
    for node in model.graph.node:
        part[node.name] = node_part(node, inits) or next(
            (part[producer[i]] for i in node.input if i in producer and part.get(producer[i])), None
        )
    fixed = {n.name for n in model.graph.node if n.op_type in FLOAT_ONLY_OPS}
    fixed |= {name for name, p in part.items() if p == "transformer_decoder"}
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(model.SerializeToString(), os.path.join(tmp, "floor"))
        for _ in range(runs):
            session.run(None, {"images": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    total = float_ms = movable_ms = 0.0
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ms = e["dur"] / runs / 1e3
            total += ms
            node = e["name"][: -len("_kernel_time")]
            if node in movable:
                movable_ms += ms
            if node in fixed:
                float_ms += ms
                per_op[e["args"]["op_name"]] += ms
    return {
        "share": round(float_ms / total, 3),
        "movable_ms": round(movable_ms, 3),
        "share_without_movable": round((float_ms - movable_ms) / total, 3),
        "float_ms": round(float_ms, 3),
        "total_kernel_ms": round(total, 3),
        "float_ops_ms": {op: round(ms, 3) for op, ms in per_op.most_common(8)},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()

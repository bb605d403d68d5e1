"""Runtime pre/post-processing share of the total time at 1024x2048 (goal: <= 10% of model time).

Exports the trained default model (pem.zoo) at 1024x2048 with the semantic and the panoptic head,
runs the torch-free Segmenter on 1024x2048 frames and reports per-stage times measured in the
same run. Usage: ``python benchmarks/runtime_overhead.py [--frames 10] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()

    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from pem.zoo import default_dataset_path, ensure_default_checkpoint
    from runtime import Segmenter

    checkpoint = ensure_default_checkpoint(progress=True)
    frames_dir = Path(default_dataset_path()) / "leftImg8bit" / "val"
    frames = [
        cv2.resize(cv2.imread(str(p)), (2048, 1024), interpolation=cv2.INTER_LINEAR)
        for p in sorted(frames_dir.rglob("*.png"))[: args.frames]
    ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for head in ("semantic", "panoptic"):
            source = load_source(checkpoint=checkpoint, height=1024, width=2048)
            artifact = export_artifact(source, ExportOptions(out_dir=Path(tmp) / head, head=head)).onnx_path
            seg = Segmenter.open(artifact)
            for frame in frames[: args.warmup]:
                seg.predict(frame)
            timings = [seg.predict(frame).timings for frame in frames]
            stage = {k: statistics.median(t[k] for t in timings) for k in ("pre", "infer", "post")}
            share = (stage["pre"] + stage["post"]) / stage["infer"]
            results[head] = {
                **{f"{k}_ms": round(v, 2) for k, v in stage.items()},
                "pre_post_over_infer": round(share, 4),
            }
            print(
                f"{head:9s} pre {stage['pre']:7.1f} ms  infer {stage['infer']:8.1f} ms  "
                f"post {stage['post']:7.1f} ms  (pre+post)/infer = {share:.1%}"
            )
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": __import__("os").cpu_count(),
    }
    results["model"] = "cityscapes-panoptic-tiny (trained default), onnxruntime CPU FP32, input 1024x2048"
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    assert all(
        np.isfinite(v["pre_post_over_infer"]) for k, v in results.items() if k in ("semantic", "panoptic")
    )


if __name__ == "__main__":
    main()

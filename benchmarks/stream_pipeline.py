"""Pipelined vs sequential ``Segmenter.stream`` throughput at 1024x2048 (onnxruntime CPU).

Exports the trained default model (pem.zoo) at 1024x2048 with the semantic and the panoptic head
(or uses ``--artifacts DIR`` holding ``semantic/model.onnx`` and ``panoptic/model.onnx``), then
streams ``--frames`` frames (the synthetic validation images, resized to 1024x2048 and cycled)
through one Segmenter per head, sequentially (``pipelined=False``) and pipelined, interleaved in
blocks so machine load hits both alike. Checks that both modes give identical label maps.
Usage: ``python benchmarks/stream_pipeline.py [--frames 300] [--block 30] [--threads 1] [--out F]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed copy


def _export(out: Path) -> dict[str, Path]:
    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from pem.zoo import ensure_default_checkpoint

    checkpoint = ensure_default_checkpoint(progress=True)
    paths = {}
    for head in ("semantic", "panoptic"):
        source = load_source(checkpoint=checkpoint, height=1024, width=2048)
        result = export_artifact(source, ExportOptions(out_dir=out / head, head=head, simplifier="none"))
        paths[head] = result.onnx_path
    return paths


def _frames(count: int) -> list[np.ndarray]:
    from pem.zoo import default_dataset_path

    files = sorted((Path(default_dataset_path()) / "leftImg8bit" / "val").rglob("*.png"))[:count]
    return [cv2.resize(cv2.imread(str(p)), (2048, 1024), interpolation=cv2.INTER_LINEAR) for p in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--block", type=int, default=30, help="frames per interleaved block")
    parser.add_argument("--distinct", type=int, default=8, help="distinct images cycled through")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--queue-size", type=int, default=2)
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()

    from common import cpu_description, report_json

    from runtime import Segmenter

    images = _frames(args.distinct)
    with tempfile.TemporaryDirectory() as tmp:
        if args.artifacts:
            paths = {h: args.artifacts / h / "model.onnx" for h in ("semantic", "panoptic")}
        else:
            paths = _export(Path(tmp))
        results: dict[str, object] = {
            "frames": args.frames,
            "size": [1024, 2048],
            "threads": args.threads,
            "queue_size": args.queue_size,
            **cpu_description(),
            "model": "trained default (pem.zoo 'default', cityscapes-panoptic-tiny), FP32 ONNX",
        }
        for head, path in paths.items():
            seg = Segmenter.open(path, providers=["CPUExecutionProvider"], threads=args.threads)
            first = [r.labels for r in seg.stream(images, pipelined=False)]
            piped = [r.labels for r in seg.stream(images)]
            identical = all(np.array_equal(a, b) for a, b in zip(first, piped))
            seconds = {"sequential": 0.0, "pipelined": 0.0}
            done = {"sequential": 0, "pipelined": 0}
            stage_ms: dict[str, list[float]] = {"pre": [], "infer": [], "post": []}
            block = 0
            while done["sequential"] < args.frames:
                n = min(args.block, args.frames - done["sequential"])
                order = ("sequential", "pipelined") if block % 2 == 0 else ("pipelined", "sequential")
                for mode in order:
                    frames = (images[(done[mode] + i) % len(images)] for i in range(n))
                    t0 = time.perf_counter()
                    for r in seg.stream(frames, pipelined=mode == "pipelined", queue_size=args.queue_size):
                        if mode == "sequential":
                            for k in stage_ms:
                                stage_ms[k].append(r.timings[k])
                    seconds[mode] += time.perf_counter() - t0
                    done[mode] += n
                block += 1
                print(f"{head}: {done['sequential']}/{args.frames} frames", flush=True)
            seg.close()
            fps = {m: done[m] / seconds[m] for m in seconds}
            results[head] = {
                "identical_labels": identical,
                "sequential_fps": round(fps["sequential"], 3),
                "pipelined_fps": round(fps["pipelined"], 3),
                "speedup": round(fps["pipelined"] / fps["sequential"], 3),
                "sequential_stage_ms_median": {k: round(float(np.median(v)), 1) for k, v in stage_ms.items()},
            }
            print(head, json.dumps(results[head]), flush=True)
    report_json(results, args.out)


if __name__ == "__main__":
    main()

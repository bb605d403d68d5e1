"""Soak test: N frames through one Segmenter, resident memory sampled as it goes (goal: no growth).

Usage: ``python benchmarks/runtime_soak.py [--frames 10000] [--head panoptic]``. Prints RSS after
warm-up and at every sample, and the growth from the first sample to the last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--head", default="panoptic", choices=("semantic", "panoptic"))
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from pem.zoo import default_dataset_path, ensure_default_checkpoint
    from runtime import Segmenter

    checkpoint = ensure_default_checkpoint(progress=True)
    frames = [
        cv2.imread(str(p))
        for p in sorted((Path(default_dataset_path()) / "leftImg8bit" / "val").rglob("*.png"))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        artifact = export_artifact(
            load_source(checkpoint=checkpoint), ExportOptions(out_dir=tmp, head=args.head)
        ).onnx_path
        seg = Segmenter.open(artifact)
        rng = np.random.default_rng(0)
        for i in range(args.warmup):
            seg.predict(frames[i % len(frames)])
        baseline = rss_mib()
        every = max(1, args.frames // args.samples)
        samples = []
        start = time.perf_counter()
        for i in range(args.frames):
            # Vary every frame (shift + noise) so nothing can be cached along the way.
            frame = np.roll(frames[i % len(frames)], int(rng.integers(0, 64)), axis=1)
            result = seg.predict(frame)
            assert result.labels.shape == frame.shape[:2]
            if (i + 1) % every == 0:
                samples.append((i + 1, rss_mib()))
                print(f"frame {i + 1:6d}  RSS {samples[-1][1]:8.1f} MiB", flush=True)
        elapsed = time.perf_counter() - start
    growth = samples[-1][1] - samples[0][1]
    summary = {
        "frames": args.frames,
        "head": args.head,
        "rss_after_warmup_mib": round(baseline, 1),
        "rss_first_sample_mib": round(samples[0][1], 1),
        "rss_last_sample_mib": round(samples[-1][1], 1),
        "growth_mib": round(growth, 1),
        "max_rss_mib": round(max(s for _, s in samples), 1),
        "fps": round(args.frames / elapsed, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({**summary, "samples": samples}, indent=2) + "\n")


if __name__ == "__main__":
    main()

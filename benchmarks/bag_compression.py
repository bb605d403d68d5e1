"""Output bag size and write time per MCAP chunk compression (``--compression zstd|lz4|none``).

Writes the same frames (a smooth, moving 256x512 scene with sensor noise, seeded) through
:func:`runtime.io.ros.bags.write_bag` with a tiny semantic model (the segmentation's cost is not
what is measured) once per compression, interleaved over ``--rounds``; prints size and seconds
per mode and the ratios to ``none``. ``--copy-input`` also stores the raw frames (noise makes them
compress little). Usage: ``python benchmarks/bag_compression.py [--frames 100] [--rounds 2]
[--copy-input]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from runtime import Segmenter
from runtime.io.ros.bags import COMPRESSIONS, BagFrame, write_bag
from runtime.io.ros.messages import Header, Stamp
from tests.helpers.runtime_models import semantic_model, write_artifact


def scene_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    base = cv2.resize(small, (512, 256), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return [
        np.clip(np.roll(base, 4 * i, axis=1) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--copy-input", action="store_true")
    args = parser.parse_args()
    frames = scene_frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = write_artifact(folder, semantic_model(64, 128), shape=(1, 3, 64, 128))
        results: dict[str, list[tuple[int, float]]] = {mode: [] for mode in COMPRESSIONS}
        with Segmenter.open(model) as seg:
            for _ in range(args.rounds):
                for mode in COMPRESSIONS:
                    out = folder / f"{mode}.mcap"
                    out.unlink(missing_ok=True)
                    bag_frames = (
                        BagFrame(
                            "/cam/image_raw", i * 50_000_000, Header(Stamp.from_ns(i * 50_000_000), "cam"), f
                        )
                        for i, f in enumerate(frames)
                    )
                    start = time.perf_counter()
                    write_bag(seg, bag_frames, out, compression=mode, copy_input=args.copy_input)
                    results[mode].append((out.stat().st_size, time.perf_counter() - start))
    none_size = results["none"][0][0]
    none_time = min(t for _, t in results["none"])
    for mode, runs in results.items():
        size, best = runs[0][0], min(t for _, t in runs)
        print(
            f"{mode:5s} {size / 1e6:7.1f} MB ({size / none_size:.2f}x none)   "
            f"best of {len(runs)}: {best:.2f} s ({best / none_time:.2f}x none)"
        )


if __name__ == "__main__":
    main()

"""Frames/s of ``infer --ray`` (runtime.io.fleet) with 1 and 2 workers against single-process ``infer``.

Exports the trained default model (pem.zoo) with the semantic head at ``--size`` (or uses
``--artifact``), writes ``--bags`` MCAP bags of ``--frames`` frames each (the synthetic validation
images, one bgr8 topic) and an image folder of ``--frames`` images, then segments all of it:

- ``single tN``: one process, one Segmenter with N onnxruntime threads, each input through the
  single-machine path (``infer_robotics`` for a bag to a bag, ``infer_path`` for the folder);
- ``ray wN``: :func:`runtime.io.fleet.segment` in an already started local Ray session (2 CPUs),
  N workers of 1 CPU and 1 thread each (``ray.init`` is timed once, separately).

Modes run interleaved for ``--rounds`` rounds (medians reported); each run writes into a fresh
folder. Ray's cost per frame is ``(ray w1 b1 - single t1) / frames`` (same compute: one frame per
model call, one thread): actors, shards, the index; it is split into the time inside the actors'
shards beyond ``single t1`` (per frame) and the rest of the run (actor start-up, scheduling, the
index: a fixed cost per run). ``ray wN bB`` batches B frames per model call.
Usage: ``python benchmarks/fleet_throughput.py [--frames 60] [--bags 2] [--rounds 2] [--out F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, not an installed copy

TOPIC = "/camera/image_raw"


def _export(out: Path, size: tuple[int, int]) -> Path:
    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from pem.zoo import ensure_default_checkpoint

    checkpoint = ensure_default_checkpoint(progress=True)
    source = load_source(checkpoint=checkpoint, height=size[0], width=size[1])
    return export_artifact(source, ExportOptions(out_dir=out, head="semantic", simplifier="none")).onnx_path


def _images(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    from pem.zoo import default_dataset_path

    files = sorted((Path(default_dataset_path()) / "leftImg8bit" / "val").rglob("*.png"))
    return [cv2.resize(cv2.imread(str(files[i % len(files)])), (size[1], size[0])) for i in range(count)]


def _write_bag(path: Path, images: list[np.ndarray]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    image_t, header_t, time_t = (
        ts.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, image_t.__msgtype__, typestore=ts)
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            header = header_t(stamp=time_t(sec=i, nanosec=0), frame_id="camera")
            msg = image_t(
                header=header,
                height=h,
                width=w,
                encoding="bgr8",
                is_bigendian=0,
                step=w * 3,
                data=image.reshape(-1),
            )
            writer.write(conn, (i + 1) * 50_000_000, ts.serialize_cdr(msg, image_t.__msgtype__))


def _single(model: Path, bags: list[Path], folder: Path, out: Path, threads: int) -> tuple[int, float]:
    """Frames and seconds of the single-process path, timed in a fresh process (as ``infer`` runs:
    the Ray driver's own threads in this process must not slow it down); start-up (imports, opening
    the model) not timed."""
    code = (
        "import json, sys, time\n"
        "from runtime.io.batch_infer import infer_path\n"
        "from runtime.io.robotics import infer_robotics\n"
        "from runtime.core.segmenter import Segmenter\n"
        "from runtime.io.ros.bags import _rosbags\n"
        "model, folder, out, threads, topic, *bags = sys.argv[1:]\n"
        "_rosbags()\n"  # imported and the model opened before the clock starts, as in an actor
        "with Segmenter.open(model, threads=int(threads)) as segmenter:\n"
        "    start, frames = time.perf_counter(), 0\n"
        "    for i, bag in enumerate(bags):\n"
        "        frames += infer_robotics(segmenter, bag, f'{out}/bag{i}.mcap', [topic]).frames\n"
        "    frames += infer_path(segmenter, folder, f'{out}/images').frames\n"
        "print(json.dumps([frames, time.perf_counter() - start]))\n"
    )
    argv = [str(model), str(folder), str(out), str(threads), TOPIC, *map(str, bags)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True, env=env
    )
    frames, seconds = json.loads(run.stdout.strip().splitlines()[-1])
    return frames, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60, help="frames per bag and images in the folder")
    parser.add_argument("--bags", type=int, default=2)
    parser.add_argument("--size", default="256x512", help="HxW of the model and the frames")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images-per-shard", type=int, default=30)
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    import ray
    from common import cpu_description, report_json

    from runtime.io.fleet import MANIFEST, segment

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        model, bags, folder = _inputs(work, args, size)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_init = time.perf_counter() - t0

        shard_seconds: dict[str, list[float]] = {}

        def fleet(workers: int, out: Path, batch: int, name: str) -> tuple[int, float]:
            start = time.perf_counter()
            frames = segment(
                model,
                [*bags, folder],
                out,
                topics=[TOPIC],
                workers=workers,
                batch=batch,
                images_per_shard=args.images_per_shard,
            ).frames
            # Time inside the actors' run_shard (read, segment, write, index rows), summed over shards.
            shards = json.loads((out / MANIFEST).read_text())["shards"].values()
            shard_seconds.setdefault(name, []).append(round(sum(s["seconds"] for s in shards), 3))
            return frames, time.perf_counter() - start

        modes = {
            "single t1": lambda out: _single(model, bags, folder, out, 1),
            "single t2": lambda out: _single(model, bags, folder, out, 2),
            "ray w1 b1": lambda out: fleet(1, out, 1, "ray w1 b1"),
            f"ray w1 b{args.batch}": lambda out: fleet(1, out, args.batch, f"ray w1 b{args.batch}"),
            f"ray w2 b{args.batch}": lambda out: fleet(2, out, args.batch, f"ray w2 b{args.batch}"),
        }
        times, frames = _rounds(modes, args.rounds, work)
        ray.shutdown()
        total = frames["single t1"]
        median = {name: statistics.median(t) for name, t in times.items()}
        result = {
            "machine": cpu_description(),
            "size": list(size),
            "frames": total,
            "batch": args.batch,
            "ray_init_s": round(ray_init, 2),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "fps_median": {k: round(total / v, 2) for k, v in median.items()},
            "ray_overhead_ms_per_frame": round((median["ray w1 b1"] - median["single t1"]) * 1e3 / total, 2),
            "shard_seconds_sum": shard_seconds,
            "in_actor_overhead_ms_per_frame": round(
                (statistics.median(shard_seconds["ray w1 b1"]) - median["single t1"]) * 1e3 / total, 2
            ),
            "fixed_ray_run_s": round(median["ray w1 b1"] - statistics.median(shard_seconds["ray w1 b1"]), 2),
        }
        report_json(result, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _inputs(work: Path, args: argparse.Namespace, size: tuple[int, ...]) -> tuple[Path, list[Path], Path]:
    """The artifact (``--artifact`` or a fresh export), the bags and the image folder."""
    model = args.artifact or _export(work / "model", size)  # type: ignore[arg-type]
    images = _images(args.frames, size)  # type: ignore[arg-type]
    bags = []
    for b in range(args.bags):
        bags.append(work / f"drive{b}")
        _write_bag(bags[-1], images[b:] + images[:b])
    folder = work / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    return model, bags, folder


def _rounds(
    modes: dict[str, Callable[[Path], tuple[int, float]]], rounds: int, work: Path
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Every mode once per round, interleaved: seconds per run and frames per mode."""
    times: dict[str, list[float]] = {name: [] for name in modes}
    frames: dict[str, int] = {}
    for r in range(rounds):
        for name, run in modes.items():
            out = work / f"out-{r}-{name.replace(' ', '-')}"
            frames[name], seconds = run(out)
            times[name].append(seconds)
            shutil.rmtree(out)
            print(f"round {r} {name}: {frames[name]} frames in {times[name][-1]:.2f} s", flush=True)
    return times, frames


if __name__ == "__main__":
    main()

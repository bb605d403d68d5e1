"""Training step time: one process vs ``torchrun --nproc-per-node 2`` (gloo, CPU), same global batch.

Usage: ``python benchmarks/ddp_step_time.py [--iterations 8] [--batch-size 4] [--crop 128x256]``.
Both runs train the tiny preset on the same small synthetic set, one after the other, each rank
with one thread; the table gives the mean step time over steps 2..N (wall clock between the first and the last
logged step of metrics.jsonl, data loading included) and the last step's own time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(nproc: int, data: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    train = ["-m", "cli", "train", "--preset", "cityscapes-panoptic-tiny", "--data", str(data)]
    train += ["--out", str(out), "--iterations", str(args.iterations), "--batch-size", str(args.batch_size)]
    train += ["--crop", args.crop, "--num-points", str(args.num_points), "--no-eval", "--threads", "1"]
    train += ["--device", "cpu", "--checkpoint-period", "0"]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step_time" in r]
    first, last = steps[0], steps[-1]
    assert last["world_size"] == nproc
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"]), last["step_time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", default="128x256")
    parser.add_argument("--num-points", type=int, default=2048)
    args = parser.parse_args()
    from pem.data.synthetic import SyntheticConfig, make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", SyntheticConfig(train=16, val=2, size=(128, 256), seed=0))
        rows = []
        for nproc in (1, 2):
            rows.append((nproc, *_run(nproc, data, Path(tmp) / f"run{nproc}", args)))
    base = rows[0][1]
    setup = f"global batch {args.batch_size}, crop {args.crop}, {args.num_points} points"
    print(f"{setup}, {args.iterations} steps")
    print("processes  mean step 2..N (s)  last step (s)  speed-up")
    for nproc, mean, last in rows:
        print(f"{nproc:<10} {mean:<19.3f} {last:<14.3f} {base / mean:.2f}x")


if __name__ == "__main__":
    main()
